"""Training a prior (top level or upsampler) on the codes of a frozen VQ-VAE.

Each batch is audio chunks of one prior window; the frozen VQ-VAE encodes them to this level's codes (and, for
an upsampler, the level above's), the labeller turns the corpus metadata into label vectors, and the loss is
the prior's teacher-forced cross-entropy in bits per token.

The label tables travel with the weights (``PriorConfig.labels``): a prior trained from scratch gets the
corpus' artists and genres; a prior fine-tuned from a released one keeps every learnt row and gains rows for
the corpus' new names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE, prior_file
from jukebox_cli.engine.checkpoints.native import save_native
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.labels import Labeller, LabelSet, load_label_set, new_label_set
from jukebox_cli.engine.models.lora import LoRAConfig
from jukebox_cli.engine.models.prior import ConditionerConfig, Prior, PriorConfig
from jukebox_cli.engine.models.vqvae import VQVAE, VQVAEConfig
from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window
from jukebox_cli.engine.sampling.noise import RaceNoise
from jukebox_cli.engine.train.data import AudioCorpus, Chunk
from jukebox_cli.engine.train.logging import Audio, chromagram_image
from jukebox_cli.engine.weights.adapters import ADAPTER_FILE, save_adapter

# Sizes of priors trained from scratch (the released ones are far larger: width 1920-4800, 72 or 79 layers).
PRIOR_PRESETS = {
    "tiny": {"width": 32, "depth": 3, "heads": 2, "n_ctx": 128, "blocks": 8, "cond_width": 16, "cond_depth": 2},
    "small": {"width": 256, "depth": 8, "heads": 4, "n_ctx": 512, "blocks": 32, "cond_width": 128, "cond_depth": 4},
    # The bundled demo model (scripts/train_demo.sh): sized to train on 2 CPU cores in about two hours and to
    # sample 10 s through all three levels in under a minute there. The top prior was under-fitted at 6
    # layers; 8 cost 5 % more per training step (encoding the batch with the VQ-VAE is half of a step) and
    # about 1 s more CPU for 10 s of samples, where the upsamplers take most of the time.
    "demo-top": {"width": 256, "depth": 8, "heads": 4, "n_ctx": 512, "blocks": 32, "cond_width": 64, "cond_depth": 2},
    "demo-up": {"width": 128, "depth": 4, "heads": 2, "n_ctx": 256, "blocks": 16, "cond_width": 64, "cond_depth": 2},
}  # fmt: skip


# Entropy word of the label-dropout stream, apart from the corpus' chunk draws (any constant would do).
_DROPOUT_STREAM = 0x1ABE1


def training_prior_config(
    preset: str, vqvae: VQVAEConfig, level: int, labels: LabelSet, *, max_duration: float = 600.0
) -> PriorConfig:
    """A prior for ``level`` of ``vqvae``: the top level (labels and timing) or an upsampler (conditioner).

    Raises:
        ConfigError: unknown preset or level.
    """
    if preset not in PRIOR_PRESETS:
        raise ConfigError(f"Unknown prior preset {preset!r}; choose {', '.join(PRIOR_PRESETS)} (or --from).")
    if not 0 <= level < vqvae.levels:
        raise ConfigError(f"The VQ-VAE has levels 0..{vqvae.levels - 1}; got --level {level}.")
    p = PRIOR_PRESETS[preset]
    hop = vqvae.hop_lengths[level]
    common = dict(
        level=level, hop_length=hop, sample_rate=vqvae.sample_rate, codebook_size=vqvae.codebook_size,
        n_ctx=p["n_ctx"], width=p["width"], depth=p["depth"], heads=p["heads"], blocks=p["blocks"],
        attn_order=2, init_scale=0.7, label_set="custom", labels=labels.to_dict(), n_genres=labels.n_genres,
        n_artists=labels.n_artists, max_genres=1, t_bins=64,
    )  # fmt: skip
    if level == vqvae.levels - 1:
        window = p["n_ctx"] * hop / vqvae.sample_rate
        return PriorConfig(**common, min_duration=round(window, 3), max_duration=max_duration)
    upper = vqvae.hop_lengths[level + 1] // hop
    down_t, stride = vqvae.downs_t[level + 1], vqvae.strides_t[level + 1]
    if stride**down_t != upper:
        raise ConfigError("This VQ-VAE's levels are not related by a whole upsampling factor.")
    conditioner = ConditionerConfig(width=p["cond_width"], depth=p["cond_depth"], down_t=down_t, stride=stride,
                                    res_scale=level > 0)  # fmt: skip
    return PriorConfig(**common, conditioner=conditioner)


def with_labels(prior: Prior, corpus: AudioCorpus) -> Prior:
    """``prior`` with label tables covering every artist and genre of ``corpus``.

    Learnt rows are kept; new names get new rows initialised like the original's (normal, 0.01 * init_scale).
    A prior whose tables already cover the corpus is returned as it is.
    """
    c = prior.config
    base = LabelSet.from_dict(c.labels) if c.labels else load_label_set(c.label_set)
    songs = [corpus.songs[i] for i in range(len(corpus.songs))]
    extended = base.extended([s.artist for s in songs], [s.genre for s in songs])
    if extended.n_artists == c.n_artists and extended.n_genres == c.n_genres and c.labels:
        return prior
    config = dataclasses.replace(c, label_set="custom", labels=extended.to_dict(), n_artists=extended.n_artists,
                                 n_genres=extended.n_genres)  # fmt: skip
    grown = Prior(config)
    state = prior.state_dict()
    for key in ("y_emb.artist_emb.emb.weight", "y_emb.bow_genre_emb.emb.weight"):
        old, new = state[key], grown.state_dict()[key]
        state[key] = torch.cat([old, new[old.shape[0] :].to(old)], dim=0)
    grown.load_state_dict(state)
    return grown


@dataclass
class PriorTask:
    """What ``train`` needs to train a prior (see ``loop.Task``).

    The corpus must be cut into chunks of the prior's window (``config.window_samples``).

    Label dropout: a share ``label_dropout`` of the training chunks is labelled with the ``unknown`` artist
    and genre (id 0), and a share ``artist_dropout`` (at least as large; None: the same) with the ``unknown``
    artist, so that the ``unknown`` rows are trained at all and mean "any artist" and "any genre", the way
    Jukebox treats a missing label. One draw per chunk decides both, so every chunk without its genre also
    lacks its artist: the model learns p(x), p(x | genre), which ``jukebox generate`` asks for by default,
    and p(x | artist, genre). Lyrics and timing are never dropped; held-out chunks keep their labels.

    With ``lora`` the model carries adapters (``models.lora.attach``) on a frozen base whose fingerprint is
    ``base_fingerprint``; the export is then the adapter file alone (``adapter.safetensors``).
    """

    model: Prior
    vqvae: VQVAE
    corpus: AudioCorpus
    batch_size: int
    seed: int = 0
    eval_size: int = 8
    source: str | None = None
    label_dropout: float = 0.0
    artist_dropout: float | None = None
    lora: LoRAConfig | None = None
    base_fingerprint: str | None = None

    @staticmethod
    def check_dropout(label_dropout: float, artist_dropout: float | None) -> tuple[float, float]:
        """(label, artist) dropout with the artist's default filled in.

        Raises:
            ConfigError: a share outside [0, 1), or an artist share below the label share.
        """
        artist = label_dropout if artist_dropout is None else artist_dropout
        for name, value in (("label_dropout", label_dropout), ("artist_dropout", artist)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be a share in [0, 1), got {value!r}.")
        if artist < label_dropout:
            raise ConfigError(
                f"artist_dropout ({artist}) must be at least label_dropout ({label_dropout}): a chunk "
                "without its genre also goes without its artist."
            )
        return float(label_dropout), float(artist)

    def notes(self, world: int = 1) -> list[str]:
        """Advice about these settings, shown before training starts (none for priors yet)."""
        return []

    def __post_init__(self) -> None:
        self.label_dropout, self.artist_dropout = self.check_dropout(self.label_dropout, self.artist_dropout)
        c = self.model.config
        if self.corpus.sample_length != c.window_samples:
            raise ConfigError(
                f"The corpus is cut into {self.corpus.sample_length} samples; this prior's window is "
                f"{c.window_samples}."
            )
        tables = LabelSet.from_dict(c.labels) if c.labels else None
        self.labeller = Labeller(c.label_set, c.max_genres, c.n_tokens, tables)
        self.vqvae.eval().requires_grad_(False)

    def config(self) -> dict:
        config = {"kind": "prior", "level": self.model.config.level, "model": self.model.config.to_dict(),
                  "vqvae": self.vqvae.config.to_dict(), "data": self.corpus.fingerprint(), "from": self.source}  # fmt: skip
        # Only when set, so that runs from before these options still resume; a resume must repeat them.
        if self.corpus.min_level_db is not None:
            config["min_level_db"] = self.corpus.min_level_db
        if self.corpus.trim_edges_db is not None:
            config["trim_edges_db"] = self.corpus.trim_edges_db
        if self.artist_dropout:
            config["label_dropout"] = self.label_dropout
            config["artist_dropout"] = self.artist_dropout
        if self.lora is not None:
            config["lora"] = {**self.lora.to_dict(), "base_fingerprint": self.base_fingerprint}
        return config

    def dropped(self, n: int, step: int, micro: int, rank: int) -> tuple[list[bool], list[bool]]:
        """Which of the ``n`` chunks of a training batch lose their (artist, genre): a pure function of the
        arguments, on its own random stream, so that resumed runs drop the same labels and the chunks drawn
        are those of a run without dropout."""
        if not self.artist_dropout:
            return [False] * n, [False] * n
        draws = np.random.default_rng([self.seed % 2**64, step, micro, rank, _DROPOUT_STREAM]).random(n)
        return [bool(u < self.artist_dropout) for u in draws], [bool(u < self.label_dropout) for u in draws]

    def _labels(self, chunks: list[Chunk], drop: tuple[list[bool], list[bool]] | None = None) -> torch.Tensor:
        c, labeller = self.model.config, self.labeller
        no_artist, no_genre = drop or ([False] * len(chunks), [False] * len(chunks))
        rows = []
        for chunk, artist_gone, genre_gone in zip(chunks, no_artist, no_genre, strict=True):
            total = chunk.total_length
            if c.include_timing:  # songs outside the timing range are clamped into it, not dropped
                total = int(
                    min(max(total, c.min_duration * c.sample_rate), c.max_duration * c.sample_rate - 1)
                )
            tokens = list(labeller.tokenize(chunk.lyrics).ids) if c.n_tokens else []
            artist = 0 if artist_gone else labeller.artist_id(chunk.artist, allow_unknown=True)  # 0: unknown
            genres = (
                [0] if genre_gone else labeller.genre_ids(chunk.genre, allow_unknown=True)[: c.max_genres]
            )
            rows.append(labeller.label_vector(
                artist, genres, tokens,
                total_length=total, offset=min(chunk.offset, total - 1), length=c.window_samples,
            ))  # fmt: skip
        return torch.tensor(rows, dtype=torch.long)

    def train_batch(self, step: int, micro: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = self.corpus.sample_batch(
            "train", self.batch_size, seed=self.seed * 1000 + micro, step=step, rank=rank
        )
        drop = self.dropped(len(chunks), step, micro, rank)
        return torch.stack([ch.audio for ch in chunks]), self._labels(chunks, drop)

    @torch.no_grad()
    def _codes(self, audio: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.vqvae.to(device)
        level = self.model.config.level
        x = audio.to(device)
        codes = self.vqvae.encode_level(x, level)
        upper = self.vqvae.encode_level(x, level + 1) if self.model.config.is_upsampler else None
        return codes, upper

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        audio, labels = batch
        device = next(model.parameters()).device
        codes, upper = self._codes(audio, device)
        out = model(codes, labels.to(device), upper)
        gen, prime = float(out.gen_loss.detach()), float(out.prime_loss.detach())
        return out.loss, {"bpd": gen, "gen_loss": gen, "prime_loss": prime}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        chunks = self.corpus.eval_chunks(self.eval_size)
        totals: dict[str, float] = {}
        for start in range(0, len(chunks), self.batch_size):
            part = chunks[start : start + self.batch_size]
            loss, values = self.loss(model, (torch.stack([ch.audio for ch in part]), self._labels(part)))
            for key, value in {"loss": float(loss), **values}.items():
                totals[key] = totals.get(key, 0.0) + value * len(part)
        return {k: v / len(chunks) for k, v in totals.items()} if chunks else {}

    @torch.no_grad()
    def media(self, model: nn.Module, step: int) -> dict:
        """One window sampled at temperature 1 (conditioned like the first held-out chunk), as audio and a
        chromagram, beside that chunk decoded from its true codes (cf. the original's ``sample_x_T1``)."""

        chunks = self.corpus.eval_chunks(1)
        if not chunks:
            return {}
        device = next(model.parameters()).device
        codes, upper = self._codes(chunks[0].audio[None], device)
        labels = self._labels(chunks).to(device)
        noise = RaceNoise([self.seed + step], device)  # one row, its own stream: the same sample on a rerun
        sampled = sample_window(
            model,
            codes[:, :0],
            codes.shape[1],
            labels,
            upper_codes=upper,
            settings=SamplingSettings(temperature=1.0, decode="eager"),  # one window now and then:
            noise=noise,
        )  # compiling or capturing it would cost more than it saves
        level, rate = model.config.level, self.vqvae.sample_rate
        items = {}
        for name, tokens in (("sample_T1", sampled), ("truth", codes)):
            audio = self.vqvae.decode(tokens, level)[0].clamp(-1, 1).cpu()
            items[name] = Audio(audio, rate)
            items[f"{name}_chroma"] = chromagram_image(audio, rate, title=f"{name}, step {step}")
        return items

    def export(self, model: nn.Module, folder: Path) -> None:

        folder = Path(folder)
        if self.lora is not None:
            save_adapter(model, folder / ADAPTER_FILE, lora=self.lora, base=self.source or "",
                         base_fingerprint=self.base_fingerprint or "")  # fmt: skip
            return
        save_native(model, folder / prior_file(model.config.level))
        if not (folder / VQVAE_FILE).exists():
            save_native(self.vqvae, folder / VQVAE_FILE)


def new_prior(preset: str, vqvae: VQVAE, level: int, corpus: AudioCorpus, seed: int = 0) -> Prior:
    """A freshly initialised prior for ``level`` with the corpus' own label tables."""
    labels = new_label_set([s.artist for s in corpus.songs], [s.genre for s in corpus.songs])
    return build_prior(training_prior_config(preset, vqvae.config, level, labels), "cpu", seed).train()
