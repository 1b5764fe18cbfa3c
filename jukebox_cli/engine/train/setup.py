"""From command-line choices to a training task: which model to start from, and the data cut to fit it.

``vqvae_task`` and ``prior_task`` are what ``jukebox train vqvae|prior|upsampler`` call; they are plain
functions so a Python user can do the same without the CLI.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jukebox_cli.engine.errors import ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models import lora as lora_
from jukebox_cli.engine.models.builders import build_vqvae
from jukebox_cli.engine.models.lora import LoRAConfig
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.train.data import AudioCorpus
from jukebox_cli.engine.train.prior import PRIOR_PRESETS, PriorTask, new_prior, with_labels
from jukebox_cli.engine.train.vqvae import VQVAETask
from jukebox_cli.engine.weights.loading import load_bundle, load_vqvae

VQVAE_TRAIN_PRESETS = ("tiny", "small", "jukebox")
# Chunk length for VQ-VAE training (the released recipe used 262,144 samples at 44.1 kHz for the small one).
VQVAE_CHUNK_TOP_CODES = 64


def vqvae_task(
    data: str | Path,
    *,
    preset: str = "small",
    source: str | None = None,
    batch_size: int = 4,
    seed: int = 0,
    metadata: str | Path | None = None,
    held_out: float = 0.1,
    cache_dir: str | Path | None = None,
    chunk_seconds: float | None = None,
    revival_threshold: float | None = None,
    min_level_db: float | None = None,
    trim_edges_db: float | None = None,
    progress: ProgressCallback = noop,
) -> VQVAETask:
    """A VQ-VAE to train on the audio under ``data``: a fresh ``preset`` or the weights of ``source``.

    ``revival_threshold`` replaces the model's dead-code threshold (see ``train.vqvae.codebook_notes``).
    ``min_level_db`` redraws quieter training chunks and ``trim_edges_db`` leaves out songs' soft intros and
    fade-outs (``AudioCorpus.scan``); None keeps them all.

    Raises:
        ConfigError: unknown preset; CheckpointError: ``source`` cannot be loaded; TrainingError: no usable audio.
    """
    if source is not None:
        model = load_vqvae(source, cache_dir=cache_dir, download=True, progress=progress).model
    else:
        if preset not in VQVAE_TRAIN_PRESETS:
            raise ConfigError(f"Unknown VQ-VAE preset {preset!r}; choose {', '.join(VQVAE_TRAIN_PRESETS)}.")
        # Its codebooks are marked uninitialised: the first batch seeds them from data.
        model = build_vqvae(preset, "cpu", seed)
    if revival_threshold is not None:
        model.set_revival_threshold(revival_threshold)
    top = model.hop_lengths[-1]
    length = VQVAE_CHUNK_TOP_CODES * top
    if chunk_seconds is not None:  # whole top-level codes, at least one
        length = max(top, round(chunk_seconds * model.sample_rate / top) * top)
    corpus = AudioCorpus.scan(data, sample_rate=model.sample_rate, sample_length=length, metadata=metadata,
                              cache_dir=cache_dir, held_out=held_out, min_level_db=min_level_db,
                              trim_edges_db=trim_edges_db, progress=progress)  # fmt: skip
    return VQVAETask(model.train(), corpus, batch_size, seed=seed, source=source)


def prior_task(
    data: str | Path,
    *,
    vqvae: str,
    level: int,
    preset: str = "small",
    source: str | None = None,
    batch_size: int = 4,
    seed: int = 0,
    metadata: str | Path | None = None,
    held_out: float = 0.1,
    cache_dir: str | Path | None = None,
    min_level_db: float | None = None,
    trim_edges_db: float | None = None,
    label_dropout: float = 0.0,
    artist_dropout: float | None = None,
    lora: LoRAConfig | None = None,
    base_dtype: torch.dtype | None = None,
    progress: ProgressCallback = noop,
) -> PriorTask:
    """A prior for ``level`` of the VQ-VAE ``vqvae``: a fresh ``preset`` or the level's prior from ``source``.

    ``source`` is anything ``--model`` accepts (a released model name, a model folder or run folder, a hub
    repository); its prior at ``level`` is fine-tuned, with label tables extended by the corpus' new names.
    ``min_level_db`` redraws quieter training chunks and ``trim_edges_db`` leaves out songs' soft intros and
    fade-outs (``AudioCorpus.scan``). ``label_dropout`` is the share of training chunks labelled with the
    ``unknown`` artist and genre, ``artist_dropout`` (default: the same) the share with the ``unknown`` artist
    (see ``PriorTask``).

    ``lora`` fine-tunes low-rank adapters on the frozen prior of ``source`` instead of every weight. The label
    tables are then the base's as they are (the corpus' new names train as the unknown artist or genre): rows
    added for them would stay random, and a base loaded for sampling would lack them. ``base_dtype`` stores
    the frozen projections in that dtype (bfloat16 halves a large base's memory on a GPU); the adapters and
    every other weight stay float32.

    Raises:
        ConfigError, CheckpointError, IncompatibleCheckpoint (the prior does not fit the VQ-VAE), TrainingError.
    """

    codec = load_vqvae(vqvae, cache_dir=cache_dir, download=True, progress=progress).model.eval()
    if not 0 <= level < codec.levels:
        raise ConfigError(f"The VQ-VAE has levels 0..{codec.levels - 1}; got --level {level}.")
    prior = None
    if lora is not None and source is None:
        raise ConfigError("LoRA adapts an existing prior: pass --from (the base model) with --lora-rank.")
    if source is not None:
        bundle = load_bundle(source, cache_dir=cache_dir, download=True, progress=progress)
        if level not in bundle.prior_configs:
            raise IncompatibleCheckpoint(f"{source} has no level-{level} prior.")
        prior = bundle.load_prior(level)
        c = prior.config
        if c.hop_length != codec.hop_lengths[level] or c.codebook_size != codec.config.codebook_size:
            raise IncompatibleCheckpoint(
                f"The level-{level} prior of {source} (hop {c.hop_length}, {c.codebook_size} codes) does not fit "
                f"the VQ-VAE {vqvae} (hop {codec.hop_lengths[level]}, {codec.config.codebook_size} codes)."
            )
        prior = prior.float()  # released 5B priors keep half Conv1D weights; training keeps a float32 master
    elif preset not in PRIOR_PRESETS:
        raise ConfigError(f"Unknown prior preset {preset!r}; choose {', '.join(PRIOR_PRESETS)} (or --from).")
    window = (prior.config.n_ctx if prior else PRIOR_PRESETS[preset]["n_ctx"]) * codec.hop_lengths[level]
    # Checked before the corpus is scanned, which can take minutes on a new corpus.
    dropout = PriorTask.check_dropout(label_dropout, artist_dropout)
    corpus = AudioCorpus.scan(data, sample_rate=codec.sample_rate, sample_length=window, metadata=metadata,
                              cache_dir=cache_dir, held_out=held_out, min_level_db=min_level_db,
                              trim_edges_db=trim_edges_db, progress=progress)  # fmt: skip
    base_fingerprint = None
    if lora is not None:
        base_fingerprint = lora_.fingerprint(prior)
        lora_.attach(prior, lora, seed=seed)
        if base_dtype is not None:
            for layer in prior.modules():
                if isinstance(layer, lora_.LoRAConv1D):
                    layer.base.to(base_dtype)
    elif prior is not None:
        prior = with_labels(prior, corpus)
    else:
        prior = new_prior(preset, codec, level, corpus, seed)
    return PriorTask(prior.train(), codec, corpus, batch_size, seed=seed, source=source, label_dropout=dropout[0],
                     artist_dropout=dropout[1], lora=lora, base_fingerprint=base_fingerprint)  # fmt: skip


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
