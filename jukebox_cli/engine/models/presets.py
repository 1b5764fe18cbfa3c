"""Named model presets: complete configs, overridable with ``dataclasses.replace``.

``jukebox`` is the released VQ-VAE; ``tiny`` keeps every structural feature (3 levels, the same
hops, per-level multipliers, reversed decoder dilations) at a width that runs in milliseconds, for tests.
"""

from __future__ import annotations

import difflib

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.prior import ConditionerConfig, LyricEncoderConfig, PriorConfig
from jukebox_cli.engine.models.vqvae import VQVAEConfig

VQVAE_PRESETS: dict[str, VQVAEConfig] = {
    "jukebox": VQVAEConfig(),
    "tiny": VQVAEConfig(
        sample_rate=22050,
        emb_width=16,
        codebook_size=64,
        width=8,
        depth=2,
        linf_k=256,
    ),
    # Trainable on a CPU in hours: the released hops at 22.05 kHz, narrower, with 512 codes per level.
    "small": VQVAEConfig(
        sample_rate=22050,
        emb_width=32,
        codebook_size=512,
        width=32,
        depth=3,
        linf_k=1024,
    ),
}

# Presets whose architecture is the released one: random weights would be meaningless, so using them needs
# the released checkpoint (value: what to pass instead).
NEEDS_WEIGHTS: dict[str, str] = {
    "jukebox": "the released VQ-VAE checkpoint (5b/vqvae.pth.tar from OpenAI's Jukebox release)",
}


def vqvae_config(name: str) -> VQVAEConfig:
    """The config of VQ-VAE preset ``name``.

    Raises:
        ConfigError: unknown name (the message suggests close ones).
    """
    try:
        return VQVAE_PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, VQVAE_PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown VQ-VAE preset {name!r}; known presets: {', '.join(VQVAE_PRESETS)}.{hint}"
        ) from None


# -- priors --------------------------------------------------------------------------------------------------


def _released_priors() -> dict:
    upsampler = dict(
        n_ctx=8192, width=1920, depth=72, heads=1, attn_order=2, blocks=128, init_scale=0.4, label_set="v2",
        n_genres=120, n_artists=4111, max_genres=5, t_bins=128,
    )  # fmt: skip
    top = dict(level=2, hop_length=128, min_duration=None, max_duration=600.0)
    return {
        "upsampler_level_0": PriorConfig(level=0, hop_length=8, conditioner=ConditionerConfig(), **upsampler),
        "upsampler_level_1": PriorConfig(
            level=1, hop_length=32, conditioner=ConditionerConfig(res_scale=True), **upsampler
        ),
        "1b_lyrics": PriorConfig(
            **{**top, "min_duration": 17.84},
            n_ctx=6144,
            width=2048,
            depth=72,
            heads=2,
            attn_order=12,
            blocks=64,
            init_scale=0.2,
            label_set="v3",
            n_genres=604,
            n_artists=7898,
            max_genres=1,
            t_bins=64,
            n_tokens=384,
            n_vocab=79,
            single_enc_dec=True,
            prime_loss_fraction=0.4,
            alignment_layer=63,
            alignment_head=0,
        ),  # fmt: skip
        "5b": PriorConfig(
            **{**top, "min_duration": 60.0},
            n_ctx=8192,
            width=4800,
            depth=72,
            heads=8,
            attn_order=2,
            blocks=128,
            init_scale=0.1,
            merged_decoder=True,
            fp16_params=True,
        ),  # fmt: skip
        "5b_lyrics": PriorConfig(
            **{**top, "min_duration": 23.8},
            n_ctx=8192,
            width=4800,
            depth=79,
            heads=8,
            attn_order=10,
            blocks=128,
            init_scale=0.1,
            merged_decoder=True,
            fp16_params=True,
            n_tokens=512,
            n_vocab=80,
            lyric_encoder=LyricEncoderConfig(),
            prime_loss_fraction=0.4,
            alignment_layer=68,
            alignment_head=2,
        ),  # fmt: skip
    }


def _tiny_priors() -> dict:
    """Tiny priors with every attention layout of the released ones, for the tiny VQ-VAE (22.05 kHz)."""
    labels = dict(label_set="tiny", n_genres=6, n_artists=8, t_bins=16, sample_rate=22050)
    small = dict(width=32, heads=2, init_scale=1.0, codebook_size=64, **labels)
    cond = dict(width=16, depth=2, dilation_cycle=8)
    upsampler = dict(n_ctx=256, depth=3, attn_order=2, blocks=8, max_genres=1, **small)
    top = dict(level=2, hop_length=128, n_ctx=128, blocks=8, min_duration=1.0, max_duration=600.0, **small)
    return {
        "tiny_upsampler_level_0": PriorConfig(
            level=0, hop_length=8, conditioner=ConditionerConfig(**cond), **upsampler
        ),  # fmt: skip
        "tiny_upsampler_level_1": PriorConfig(
            level=1, hop_length=32, conditioner=ConditionerConfig(res_scale=True, **cond), **upsampler
        ),
        # 1b layout: row/column/previous plus prime (7) and dense (0) layers over lyrics + music.
        "tiny_1b_lyrics": PriorConfig(
            **{**top, "n_ctx": 120, "blocks": 8},
            depth=6,
            attn_order=12,
            attn_pattern=(1, 2, 3, 7, 7, 0),
            max_genres=1,
            n_tokens=8,
            n_vocab=79,
            single_enc_dec=True,
            prime_loss_fraction=0.4,
            alignment_layer=3,
            alignment_head=0,
        ),  # fmt: skip
        "tiny_5b": PriorConfig(**top, depth=3, attn_order=2, max_genres=1, merged_decoder=True),
        # 5b_lyrics layout: row/column/previous plus cross attention to a separate lyric encoder.
        "tiny_5b_lyrics": PriorConfig(
            **top,
            depth=4,
            attn_order=10,
            attn_pattern=(1, 2, 3, 6),
            max_genres=1,
            merged_decoder=True,
            n_tokens=16,
            n_vocab=80,
            prime_loss_fraction=0.4,
            alignment_layer=3,
            alignment_head=0,
            lyric_encoder=LyricEncoderConfig(width=16, depth=3, heads=2, blocks=4, init_scale=0.7),
        ),  # fmt: skip
    }


_PRIOR_PRESETS: dict | None = None


def prior_presets() -> dict:
    """All prior presets by name (built on first use)."""
    global _PRIOR_PRESETS
    if _PRIOR_PRESETS is None:
        _PRIOR_PRESETS = {**_released_priors(), **_tiny_priors()}
    return _PRIOR_PRESETS


def prior_config(name: str):
    """The config of prior preset ``name``.

    Raises:
        ConfigError: unknown name (the message suggests close ones).
    """
    presets = prior_presets()
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown prior preset {name!r}; known presets: {', '.join(presets)}.{hint}")
    return presets[name]
