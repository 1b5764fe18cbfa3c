"""Encode audio through each VQ-VAE level and decode it back, with quality metrics per level.

This is the report's analysis: the top level keeps the essentials (harmony, rhythm), the bottom level
the detail. The input streams through every level at once (`reconstruct_stream`), so hours of audio cost
the memory of a minute; the CLI's ``reconstruct`` feeds it `io.stream_audio` and writes with `io.AudioWriter`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from jukebox_cli.engine.audio import metrics
from jukebox_cli.engine.audio.features import FeatureStream, SpectralFeatures
from jukebox_cli.engine.audio.io import check_finite
from jukebox_cli.engine.audio.stream_metrics import PairMetrics
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
    """One level's round trip: its metrics, and its codes and audio when they were kept in memory."""

    level: int
    hop_length: int
    n_codes: int
    spectral_convergence: float
    spectral_convergence_db: float
    snr_db: float
    codebook: metrics.CodebookStats
    codes: np.ndarray | None = None  # [T // hop] int64; None when streamed
    audio: np.ndarray | None = None  # [T // hop * hop] float32, not clipped; None when streamed
    features: SpectralFeatures | None = None  # what the figure draws, when asked for

    def summary(self) -> dict[str, float | int]:
        """JSON-friendly numbers (no arrays)."""
        return {
            "level": self.level,
            "hop_length": self.hop_length,
            "n_codes": self.n_codes,
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
    input: np.ndarray | None  # None when streamed
    levels: dict[int, LevelReconstruction] = field(default_factory=dict)
    n_input_samples: int = 0
    input_features: SpectralFeatures | None = None


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

    The array form of `reconstruct_stream`: the result keeps the input, and each level's codes and audio.

    Args:
        vqvae: the model (in eval mode).
        audio: mono float audio [T] at ``vqvae.sample_rate``.
        levels: which levels to use, in the order to process them.
        chunk_samples: chunk size for bounded-memory encoding and decoding.
        progress: as `reconstruct_stream`.

    Raises:
        InvalidAudio: NaN/inf samples, or audio shorter than one code of the coarsest requested level.
        ConfigError: a level that does not exist.
    """
    x = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32)
    if x.ndim != 1:
        raise ConfigError(f"reconstruct() takes mono audio [T]; got shape {tuple(x.shape)}.")
    check_finite(x, "input audio", sample_rate=vqvae.sample_rate)
    return reconstruct_stream(
        vqvae, [x], levels, chunk_samples=chunk_samples, keep_arrays=True, progress=progress
    )


class _Fifo:
    """The input samples a level has not yet paired with its reconstruction (its decoding lags behind)."""

    def __init__(self) -> None:
        self._pieces: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        self._pieces.append(block)

    def take(self, n: int) -> np.ndarray:
        joined = np.concatenate(self._pieces) if self._pieces else np.zeros(0, dtype=np.float32)
        self._pieces = [joined[n:]]
        return joined[:n]


class _LevelRun:
    """One level's encoder, decoder, metrics and outputs while the input streams through."""

    def __init__(self, vqvae: VQVAE, level: int, chunk_samples: int | None, sink, keep: bool, figure: bool):
        self.level, self.hop = level, vqvae.hop_lengths[level]
        self.codebook_size = vqvae.config.codebook_size
        self.encoder = vqvae.level_encoder(level, chunk_samples=chunk_samples)
        self.decoder = vqvae.level_decoder(level, chunk_samples=chunk_samples)
        self.reference = _Fifo()
        self.pair = PairMetrics()
        self.counts = torch.zeros(self.codebook_size, dtype=torch.long)
        self.n_codes = 0
        self.sink, self.keep = sink, keep
        self.codes: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.features = FeatureStream(vqvae.sample_rate) if figure else None

    def push(self, block: np.ndarray) -> None:
        self.reference.push(block)
        self._codes(self.encoder.push(torch.from_numpy(block).unsqueeze(0)))

    def finish(self) -> LevelReconstruction:
        self._codes(self.encoder.finish(), last=True)
        sc, sc_db, snr = self.pair.finish()
        return LevelReconstruction(
            level=self.level,
            hop_length=self.hop,
            n_codes=self.n_codes,
            spectral_convergence=sc,
            spectral_convergence_db=sc_db,
            snr_db=snr,
            codebook=metrics.codebook_stats_from_counts(self.counts, self.codebook_size),
            codes=np.concatenate(self.codes) if self.keep else None,
            audio=np.concatenate(self.audio) if self.keep else None,
            features=None if self.features is None else self.features.finish(),
        )

    def _codes(self, codes: torch.Tensor, *, last: bool = False) -> None:
        codes = codes.cpu()
        self.n_codes += codes.shape[1]
        if codes.numel():
            self.counts += torch.bincount(codes.reshape(-1), minlength=self.codebook_size)
        if self.keep:
            self.codes.append(codes[0].numpy())
        audio = self.decoder.push(codes)
        if last:
            audio = torch.cat([audio, self.decoder.finish()], dim=1)
        self._audio(audio[0].cpu().float().numpy())

    def _audio(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        self.pair.push(self.reference.take(audio.size), audio)
        if self.sink is not None:
            self.sink(audio)
        if self.keep:
            self.audio.append(audio)
        if self.features is not None:
            self.features.push(audio)


def reconstruct_stream(
    vqvae: VQVAE,
    blocks: Iterable[np.ndarray],
    levels: Sequence[int] | None = None,
    *,
    chunk_samples: int | None = 2**19,
    sinks: Mapping[int | str, Callable[[np.ndarray], None]] | None = None,
    keep_arrays: bool = False,
    figure_features: bool = False,
    expected_samples: int | None = None,
    progress: ProgressCallback = noop,
) -> Reconstruction:
    """Round-trips mono audio arriving in blocks through the requested levels, in bounded memory.

    Every level encodes and decodes each block as soon as the chunk it completes has its context
    (`VQVAE.level_encoder`, `level_decoder`), so what is held is a chunk or two per level whatever the
    input's length; the metrics accumulate (`stream_metrics`, code histograms) and equal those of the whole
    signal up to float rounding.

    Args:
        vqvae: the model (in eval mode).
        blocks: mono float32 blocks at ``vqvae.sample_rate``, e.g. from `io.stream_audio`.
        levels: which levels, in the order to report them (default: top first).
        chunk_samples: the model's encode/decode chunk.
        sinks: receives the audio as it is made: key ``"input"`` the input blocks, key ``level`` that
            level's reconstruction (e.g. `io.AudioWriter.write`).
        keep_arrays: keep the input and each level's codes and audio in the result (memory grows).
        figure_features: accumulate each signal's `SpectralFeatures` for `plots.plot_reconstruction_features`.
        expected_samples: the input's length if known, for the progress total.
        progress: receives a ``"reconstruct"`` stage counted in input blocks, then ``LevelDone`` per level
            with its `LevelReconstruction`.

    Raises:
        InvalidAudio: audio shorter than one code of the coarsest requested level.
        ConfigError: a level that does not exist, or an input too short for the metrics' STFT.
    """
    levels = list(range(vqvae.levels - 1, -1, -1)) if levels is None else list(levels)
    if not levels or any(not 0 <= lv < vqvae.levels for lv in levels):
        raise ConfigError(f"Levels {levels} are not all in 0..{vqvae.levels - 1}.")
    sinks = sinks or {}
    runs = [_LevelRun(vqvae, lv, chunk_samples, sinks.get(lv), keep_arrays, figure_features) for lv in levels]
    input_features = FeatureStream(vqvae.sample_rate) if figure_features else None
    kept: list[np.ndarray] = []
    total = None
    if expected_samples is not None and chunk_samples:
        total = max(1, math.ceil(expected_samples / chunk_samples))
    progress(StageStarted("reconstruct", total, "block"))
    n_samples = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        n_samples += block.size
        if "input" in sinks:
            sinks["input"](block)
        if keep_arrays:
            kept.append(block)
        if input_features is not None:
            input_features.push(block)
        for run in runs:
            run.push(block)
        progress(Advanced("reconstruct"))
    coarsest = max(vqvae.hop_lengths[lv] for lv in levels)
    if n_samples < coarsest:
        raise InvalidAudio(
            f"The audio is {n_samples} samples long, shorter than one code of the coarsest requested level "
            f"({coarsest} samples = {1000 * coarsest / vqvae.sample_rate:.1f} ms)."
        )
    result = Reconstruction(
        sample_rate=vqvae.sample_rate,
        input=np.concatenate(kept) if keep_arrays else None,
        n_input_samples=n_samples,
        input_features=None if input_features is None else input_features.finish(),
    )
    for run in runs:
        item = run.finish()
        result.levels[run.level] = item
        progress(LevelDone(run.level, item))
    progress(StageFinished("reconstruct"))
    return result
