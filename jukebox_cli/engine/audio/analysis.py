"""Descriptive statistics of a piece of audio (used by ``analyze`` and to judge generated music)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

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


def summarize(audio: np.ndarray, sample_rate: int) -> AudioSummary:
    """Summary measures of mono float audio [T].

    Spectral flatness separates noise (near 1) from pitched sound; chroma entropy separates a clear
    harmonic centre (low) from an even spread over all 12 pitch classes (high), as white noise has.
    """
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    # librosa warns (on stderr) for audio shorter than a frame or without pitch; the measures still hold.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flatness = librosa.feature.spectral_flatness(y=audio, n_fft=2048, hop_length=512)
        chroma = librosa.feature.chroma_stft(y=audio, sr=sample_rate, n_fft=2048, hop_length=512)
    profile = chroma.mean(axis=1)
    # A whole-excerpt profile can be even for music that moves through keys; per frame, music still has
    # a few strong pitch classes while noise spreads evenly over all twelve.
    frame_entropy = float(_entropy_bits(chroma, axis=0).mean()) if chroma.size else 0.0
    return AudioSummary(
        duration=audio.shape[0] / sample_rate,
        sample_rate=sample_rate,
        peak_dbfs=_dbfs(float(np.abs(audio).max(initial=0.0))),
        rms_dbfs=_dbfs(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))) if audio.size else -200.0,
        spectral_flatness=float(flatness.mean()),
        chroma_entropy_bits=float(_entropy_bits(profile)),
        frame_chroma_entropy_bits=frame_entropy,
        dominant_pitch_class=PITCH_CLASSES[int(np.argmax(profile))],
    )
