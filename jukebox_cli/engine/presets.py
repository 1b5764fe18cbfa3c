"""Named model presets: complete configs, overridable with ``dataclasses.replace``.

``jukebox`` is the released VQ-VAE (spec 3.1); ``tiny`` keeps every structural feature (3 levels, the same
hops, per-level multipliers, reversed decoder dilations) at a width that runs in milliseconds, for tests.
"""

from __future__ import annotations

import difflib

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.vqvae import VQVAEConfig

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
