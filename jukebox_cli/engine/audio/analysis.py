"""Descriptive statistics of a piece of audio (used by ``analyze`` and to judge generated music).

Everything is accumulated frame by frame (`SummaryStream`), so a file of hours is summarised in the memory
of one block; ``summarize`` is the same code with the whole signal as one block.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass

import librosa
import numpy as np

from jukebox_cli.engine.audio.features import FeatureStream, SpectralFeatures
from jukebox_cli.engine.audio.frames import FrameStream
from jukebox_cli.engine.audio.io import audio_info, stream_audio
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class AudioSummary:
    """Loudness and timbre/harmony measures of mono audio."""

    duration: float  # seconds
    sample_rate: int
    peak_dbfs: float
    rms_dbfs: float
    spectral_flatness: float  # mean over frames, 0 (tonal) .. 1 (white noise)
    chroma_entropy_bits: float  # entropy of the mean pitch-class profile, 0 .. log2(12) = 3.58
    frame_chroma_entropy_bits: float  # mean entropy of each frame's pitch-class profile, same range
    dominant_pitch_class: str

    def to_dict(self) -> dict:
        return asdict(self)


def _dbfs(value: float) -> float:
    return float(20 * np.log10(max(value, 1e-10)))


def _entropy_bits(profile: np.ndarray, axis: int = 0) -> np.ndarray:
    """Entropy in bits of non-negative weights normalised along ``axis`` (one value per other index)."""
    probs = profile / np.maximum(profile.sum(axis=axis, keepdims=True), 1e-12)
    return -(probs * np.log2(probs + 1e-12)).sum(axis=axis)


# The summary's STFT (librosa's chroma_stft and spectral_flatness defaults).
_N_FFT, _HOP = 2048, 512
# Chroma needs the tuning of the whole signal before its first frame. A stream estimates it on its first
# TUNING_SECONDS (the whole clip when shorter, so short clips keep their whole-file numbers).
TUNING_SECONDS = 30.0


class SummaryStream:
    """Accumulates an `AudioSummary` of mono audio pushed block by block, in memory of one block.

    Level, flatness and chroma are sums over frames of the same centred STFT ``summarize`` computes, so the
    result equals the whole-signal one except for chroma on signals longer than ``TUNING_SECONDS``, whose
    tuning is estimated on that first part only.
    """

    def __init__(self, sample_rate: int, *, tuning_seconds: float = TUNING_SECONDS) -> None:
        self.sample_rate = sample_rate
        self._frames = FrameStream(_N_FFT, _HOP)
        self._tuning_frames = max(1, round(tuning_seconds * sample_rate / _HOP))
        self._pending: list[np.ndarray] = []  # power frames waiting for the tuning estimate
        self._n_pending = 0
        self._tuning: float | None = None
        self._n_samples = 0
        self._peak = 0.0
        self._sum_squares = 0.0
        self._flatness_sum = 0.0
        self._profile_sum = np.zeros(12)
        self._entropy_sum = 0.0
        self._n_frames = 0

    def push(self, audio: np.ndarray) -> None:
        """Adds mono samples ``[T]``."""
        audio = np.asarray(audio, dtype=np.float32)
        self._n_samples += audio.size
        if audio.size:
            self._peak = max(self._peak, float(np.abs(audio).max()))
            self._sum_squares += float(np.square(audio, dtype=np.float64).sum())
        self._take(self._frames.push(audio), final=False)

    def finish(self) -> AudioSummary:
        """The summary of everything pushed."""
        self._take(self._frames.finish(), final=True)
        n = max(self._n_frames, 1)
        profile = self._profile_sum / n
        n_samples = self._n_samples
        return AudioSummary(
            duration=n_samples / self.sample_rate,
            sample_rate=self.sample_rate,
            peak_dbfs=_dbfs(self._peak),
            rms_dbfs=_dbfs(float(np.sqrt(self._sum_squares / n_samples))) if n_samples else -200.0,
            spectral_flatness=float(self._flatness_sum / n),
            chroma_entropy_bits=float(_entropy_bits(profile)),
            frame_chroma_entropy_bits=float(self._entropy_sum / n) if self._n_frames else 0.0,
            dominant_pitch_class=PITCH_CLASSES[int(np.argmax(profile))],
        )

    def _take(self, segment: np.ndarray | None, *, final: bool) -> None:
        if segment is not None:
            with warnings.catch_warnings():  # see `summarize`
                warnings.simplefilter("ignore", UserWarning)
                power = np.abs(librosa.stft(segment, n_fft=_N_FFT, hop_length=_HOP, center=False)) ** 2
            self._flatness_sum += float(librosa.feature.spectral_flatness(S=power, power=1.0).sum())
            self._pending.append(power)
            self._n_pending += power.shape[1]
        if self._tuning is None and (final or self._n_pending >= self._tuning_frames):
            self._estimate_tuning()
        if self._tuning is not None:
            for power in self._pending:
                self._add_chroma(power)
            self._pending, self._n_pending = [], 0

    def _estimate_tuning(self) -> None:
        power = np.concatenate(self._pending, axis=1) if self._pending else np.zeros((_N_FFT // 2 + 1, 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._tuning = float(librosa.estimate_tuning(S=power, sr=self.sample_rate, bins_per_octave=12))

    def _add_chroma(self, power: np.ndarray) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            chroma = librosa.feature.chroma_stft(S=power, sr=self.sample_rate, tuning=self._tuning)
        self._profile_sum += chroma.sum(axis=1)
        self._entropy_sum += float(_entropy_bits(chroma, axis=0).sum())
        self._n_frames += chroma.shape[1]


def summarize(audio: np.ndarray, sample_rate: int) -> AudioSummary:
    """Summary measures of mono float audio [T].

    Spectral flatness separates noise (near 1) from pitched sound; chroma entropy separates a clear
    harmonic centre (low) from an even spread over all 12 pitch classes (high), as white noise has.
    A whole-excerpt profile can be even for music that moves through keys; per frame, music still has
    a few strong pitch classes while noise spreads evenly over all twelve. Tuning is estimated on the first
    ``TUNING_SECONDS`` (see `SummaryStream`, which this is with the whole signal as one block).
    """
    stream = SummaryStream(sample_rate)
    stream.push(audio)
    return stream.finish()


@dataclass(frozen=True)
class FileAnalysis:
    """What ``analyze`` reports of one file: its summary and the features its figure draws."""

    summary: AudioSummary
    features: SpectralFeatures


def analyze_file(
    path: str | os.PathLike[str],
    sample_rate: int,
    *,
    block_seconds: float = 30.0,
    progress: ProgressCallback = noop,
) -> FileAnalysis:
    """Summary and figure features of an audio file, streamed: memory does not grow with its length.

    ``progress`` receives an ``"analyze"`` stage counted in whole seconds of audio (the first block is slow
    the first time: librosa's kernels compile).

    Raises:
        The errors of `io.stream_audio`.
    """
    progress(StageStarted("analyze", math.ceil(audio_info(path).duration), "s"))
    summary = SummaryStream(sample_rate)
    features = FeatureStream(sample_rate)
    samples = seconds = 0
    for block in stream_audio(path, sample_rate, block_seconds=block_seconds):
        summary.push(block)
        features.push(block)
        samples += block.size
        done = math.ceil(samples / sample_rate)
        progress(Advanced("analyze", done - seconds))
        seconds = done
    result = FileAnalysis(summary=summary.finish(), features=features.finish())
    progress(StageFinished("analyze"))
    return result
