"""Encode audio through each VQ-VAE level and decode it back, with quality metrics per level.

This is the report's analysis: the top level keeps the essentials (harmony, rhythm), the bottom level
the detail. The CLI's ``reconstruct`` command is a thin wrapper over :func:`reconstruct`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from jukebox_cli.engine.audio import metrics
from jukebox_cli.engine.audio.io import check_finite
from jukebox_cli.engine.errors import ConfigError, InvalidAudio
from jukebox_cli.engine.models.vqvae import VQVAE
from jukebox_cli.engine.progress import (
    Advanced,
    LevelDone,
    ProgressCallback,
    StageFinished,
    StageStarted,
    noop,
)


@dataclass
class LevelReconstruction:
    """One level's round trip."""

    level: int
    hop_length: int
    codes: np.ndarray  # [T // hop] int64
    audio: np.ndarray  # [T // hop * hop] float32, not clipped
    spectral_convergence: float
    spectral_convergence_db: float
    snr_db: float
    codebook: metrics.CodebookStats

    def summary(self) -> dict[str, float | int]:
        """JSON-friendly numbers (no arrays)."""
        return {
            "level": self.level,
            "hop_length": self.hop_length,
            "n_codes": int(self.codes.shape[0]),
            "spectral_convergence": self.spectral_convergence,
            "spectral_convergence_db": self.spectral_convergence_db,
            "snr_db": self.snr_db,
            "codes_used": self.codebook.used,
            "codebook_usage": self.codebook.usage,
            "code_entropy_bits": self.codebook.entropy_bits,
        }


@dataclass
class Reconstruction:
    """Input audio and its reconstruction at each requested level (keys: level numbers)."""

    sample_rate: int
    input: np.ndarray
    levels: dict[int, LevelReconstruction] = field(default_factory=dict)


def parse_levels(text: str, n_levels: int) -> list[int]:
    """``"2,1,0"`` -> [2, 1, 0], validated against the model's levels (order kept, duplicates dropped).

    Raises:
        ConfigError: not a comma-separated list of existing levels.
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--levels must be comma-separated level numbers like 2,1,0; got {text!r}."
        ) from None
    bad = [v for v in values if not 0 <= v < n_levels]
    if not values or bad:
        raise ConfigError(f"--levels {text!r}: this model has levels 0..{n_levels - 1}.")
    return list(dict.fromkeys(values))


def reconstruct(
    vqvae: VQVAE,
    audio: np.ndarray | torch.Tensor,
    levels: Sequence[int] | None = None,
    *,
    chunk_samples: int | None = 2**19,
    progress: ProgressCallback = noop,
) -> Reconstruction:
    """Round-trip mono audio through the requested levels (default: top level first, down to 0).

    Args:
        vqvae: the model (in eval mode).
        audio: mono float audio [T] at ``vqvae.sample_rate``.
        levels: which levels to use, in the order to process them.
        chunk_samples: chunk size for bounded-memory encoding and decoding.
        progress: receives a ``"levels"`` stage plus the model's encode/decode stages, and ``LevelDone``
            with the :class:`LevelReconstruction` as payload.

    Raises:
        InvalidAudio: NaN/inf samples, or audio shorter than one code of the coarsest requested level.
        ConfigError: a level that does not exist.
    """
    levels = list(range(vqvae.levels - 1, -1, -1)) if levels is None else list(levels)
    if not levels or any(not 0 <= lv < vqvae.levels for lv in levels):
        raise ConfigError(f"Levels {levels} are not all in 0..{vqvae.levels - 1}.")
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if x.dim() != 1:
        raise ConfigError(f"reconstruct() takes mono audio [T]; got shape {tuple(x.shape)}.")
    check_finite(x.numpy(), "input audio", sample_rate=vqvae.sample_rate)
    coarsest = max(vqvae.hop_lengths[lv] for lv in levels)
    if x.shape[0] < coarsest:
        raise InvalidAudio(
            f"The audio is {x.shape[0]} samples long, shorter than one code of the coarsest requested level "
            f"({coarsest} samples = {1000 * coarsest / vqvae.sample_rate:.1f} ms)."
        )
    result = Reconstruction(sample_rate=vqvae.sample_rate, input=x.numpy())
    batch = x.unsqueeze(0)  # (1, T)
    progress(StageStarted("levels", len(levels), "level"))
    for level in levels:
        hop = vqvae.hop_lengths[level]
        codes = vqvae.encode_level(batch, level, chunk_samples=chunk_samples, progress=progress)
        decoded = vqvae.decode(codes, level, chunk_samples=chunk_samples, progress=progress).cpu()
        reference = batch[:, : decoded.shape[1]]
        item = LevelReconstruction(
            level=level,
            hop_length=hop,
            codes=codes[0].cpu().numpy(),
            audio=decoded[0].numpy(),
            spectral_convergence=float(metrics.spectral_convergence(reference, decoded)[0]),
            spectral_convergence_db=float(metrics.spectral_convergence_db(reference, decoded)[0]),
            snr_db=float(metrics.snr_db(reference, decoded)[0]),
            codebook=metrics.codebook_stats(codes.cpu(), vqvae.config.codebook_size),
        )
        result.levels[level] = item
        progress(LevelDone(level, item))
        progress(Advanced("levels"))
    progress(StageFinished("levels"))
    return result
