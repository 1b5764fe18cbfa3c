"""The features the figures draw (chromagram, magnitude spectrogram), computed block by block.

A figure is at most a few thousand pixels wide, so the frames are pooled (`frames.FramePool`) to at most
``2 * MAX_COLUMNS`` columns: up to ``2 * MAX_COLUMNS`` frames (about 47 s at the analysis hop) they are the
whole-signal features exactly; beyond, each column is the mean of consecutive frames.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import librosa
import numpy as np

from jukebox_cli.engine.audio.frames import FramePool, FrameStream
from jukebox_cli.engine.errors import ConfigError

# Target analysis hop in seconds; rounded to a power of two in samples (see `analysis_hop`).
_TARGET_HOP_S = 0.0125
MAX_COLUMNS = 2048


@contextlib.contextmanager
def quiet_librosa() -> Iterator[None]:
    """Silences librosa's UserWarnings (a frame longer than a very short input): the result still holds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def check_rate(sample_rate: int) -> None:
    if not sample_rate > 0:
        raise ConfigError(f"sample_rate must be positive, got {sample_rate}.")


def analysis_hop(sample_rate: int) -> int:
    """STFT hop used by the figures: the power of two nearest to 12.5 ms.

    That is 512 samples at 44.1 kHz and 256 at 22.05 kHz (11.6 ms); any rate lands between about 9 and 18 ms.
    """
    check_rate(sample_rate)
    return 2 ** max(0, round(math.log2(sample_rate * _TARGET_HOP_S)))


def stft_sizes(sample_rate: int) -> tuple[int, int, int]:
    """(hop, chroma n_fft, spectrogram n_fft).

    Chroma gets a long window (8 hops, ~93 ms, librosa's default at 22.05 kHz) to resolve semitones in the
    bass; the spectrogram a shorter one (4 hops) so transients stay sharp.
    """
    hop = analysis_hop(sample_rate)
    return hop, 8 * hop, 4 * hop


def short_n_fft(n_fft: int, n_samples: int) -> int:
    """Shrinks the window for inputs shorter than it, rather than zero-pad a window past the signal."""
    return min(n_fft, max(2 ** int(math.log2(n_samples)), 16))


def chroma_frames(audio: np.ndarray, sample_rate: int, n_fft: int, hop: int, *, center: bool) -> np.ndarray:
    """librosa's ``chroma_stft`` (tuning 0, frames normalised to a maximum of 1), ``[12, frames]``."""
    with quiet_librosa():
        return librosa.feature.chroma_stft(
            y=audio, sr=sample_rate, n_fft=n_fft, hop_length=hop, tuning=0.0, center=center
        )


def magnitude_frames(audio: np.ndarray, n_fft: int, hop: int, *, center: bool) -> np.ndarray:
    """``|librosa.stft|``, ``[1 + n_fft // 2, frames]``."""
    with quiet_librosa():
        return np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop, center=center))


@dataclass(frozen=True)
class SpectralFeatures:
    """What a figure draws of one signal.

    ``chroma`` is ``[12, C]`` (rows C .. B), ``magnitude`` ``[F, C]`` (linear), each column the mean of
    ``pool`` consecutive analysis frames; ``peak_magnitude`` is the largest magnitude of any single frame,
    the 0 dB of the spectrograms.
    """

    sample_rate: int
    hop: int  # samples between analysis frames
    pool: int  # frames per column
    chroma: np.ndarray
    magnitude: np.ndarray
    peak_magnitude: float

    @property
    def column_hop(self) -> int:
        """Samples between columns."""
        return self.hop * self.pool


class FeatureStream:
    """Accumulates `SpectralFeatures` of mono audio pushed block by block."""

    def __init__(self, sample_rate: int, *, max_columns: int = MAX_COLUMNS) -> None:
        check_rate(sample_rate)
        self.sample_rate = sample_rate
        self.hop, self._chroma_fft, self._spec_fft = stft_sizes(sample_rate)
        # Hold back a whole chroma window: a shorter signal is analysed with a shorter one (`short_n_fft`).
        self._chroma_frames = FrameStream(self._chroma_fft, self.hop, hold=self._chroma_fft)
        self._spec_frames = FrameStream(self._spec_fft, self.hop, hold=self._chroma_fft)
        self._chroma = FramePool(max_columns)
        self._magnitude = FramePool(max_columns)
        self._peak = 0.0

    def push(self, audio: np.ndarray) -> None:
        """Adds mono samples ``[T]``."""
        self._take(self._chroma_frames.push(audio), self._spec_frames.push(audio))

    def finish(self) -> SpectralFeatures:
        """The features of everything pushed.

        Raises:
            ConfigError: if nothing was pushed.
        """
        if self._chroma_frames.n_samples == 0:
            raise ConfigError("Cannot analyse empty audio.")
        if not self._chroma_frames.started:  # shorter than a chroma window: one pass, shorter windows
            audio = self._chroma_frames.head()
            n_chroma, n_spec = (short_n_fft(n, audio.size) for n in (self._chroma_fft, self._spec_fft))
            self._add(
                chroma_frames(audio, self.sample_rate, n_chroma, self.hop, center=True),
                magnitude_frames(audio, n_spec, self.hop, center=True),
            )
        else:
            self._take(self._chroma_frames.finish(), self._spec_frames.finish())
        return SpectralFeatures(
            sample_rate=self.sample_rate,
            hop=self.hop,
            pool=self._chroma.pool,
            chroma=self._chroma.result().astype(np.float32),
            magnitude=self._magnitude.result().astype(np.float32),
            peak_magnitude=self._peak,
        )

    def _take(self, chroma_segment: np.ndarray | None, spec_segment: np.ndarray | None) -> None:
        chroma = magnitude = None
        if chroma_segment is not None:
            chroma = chroma_frames(chroma_segment, self.sample_rate, self._chroma_fft, self.hop, center=False)
        if spec_segment is not None:
            magnitude = magnitude_frames(spec_segment, self._spec_fft, self.hop, center=False)
        self._add(chroma, magnitude)

    def _add(self, chroma: np.ndarray | None, magnitude: np.ndarray | None) -> None:
        if chroma is not None:
            self._chroma.push(chroma)
        if magnitude is not None:
            self._magnitude.push(magnitude)
            self._peak = max(self._peak, float(magnitude.max(initial=0.0)))


def spectral_features(
    audio: np.ndarray, sample_rate: int, *, max_columns: int = MAX_COLUMNS
) -> SpectralFeatures:
    """`SpectralFeatures` of a whole mono signal ``[T]``."""
    stream = FeatureStream(sample_rate, max_columns=max_columns)
    stream.push(audio)
    return stream.finish()
