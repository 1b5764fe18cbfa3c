"""Reconstruction metrics of a pair of signals that arrive block by block (``reconstruct`` of long audio).

Spectral convergence and SNR are ratios of sums over samples or STFT frames, so they accumulate exactly:
the frames are cut by `frames.FrameStream` with the reflect padding of `metrics.stft_magnitude`, and the
result equals `metrics.spectral_convergence` and `metrics.snr_db` of the whole pair up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from jukebox_cli.engine.audio import metrics
from jukebox_cli.engine.audio.frames import FrameStream
from jukebox_cli.engine.errors import ConfigError


class PairMetrics:
    """Spectral convergence (linear, dB) and SNR of a reconstruction against its reference."""

    def __init__(self) -> None:
        setting = metrics.SPECTRAL_STFT
        self._setting = setting
        self._frames = FrameStream(setting.n_fft, setting.hop_length, "reflect")
        self._window = torch.hann_window(setting.win_length)
        self._ref_sq = self._residual_sq = 0.0  # squared Frobenius norms of S(x) and S(x) - S(x_hat)
        self._signal = self._noise = 0.0  # sums of x^2 and (x - x_hat)^2

    def push(self, reference: np.ndarray, reconstruction: np.ndarray) -> None:
        """Adds aligned blocks of the same length ``[n]``."""
        if reference.shape != reconstruction.shape:
            raise ConfigError(f"Blocks differ in shape: {reference.shape} vs {reconstruction.shape}.")
        x = reference.astype(np.float64)
        self._signal += float(np.square(x).sum())
        self._noise += float(np.square(x - reconstruction).sum())
        self._take(self._frames.push(np.stack([reference, reconstruction])))

    def finish(self) -> tuple[float, float, float]:
        """(spectral convergence, spectral convergence in dB, SNR in dB), clamped as in `metrics`."""
        self._take(self._frames.finish())
        ref_norm = math.sqrt(self._ref_sq)
        sc = (
            math.sqrt(self._residual_sq) / max(ref_norm, metrics.SC_EPS) if ref_norm > metrics.SC_EPS else 0.0
        )
        sc_db = 20.0 * math.log10(max(sc, 10.0 ** (-metrics.DB_LIMIT / 20.0)))
        if self._noise == 0:
            snr = metrics.DB_LIMIT
        else:
            tiny = float(np.finfo(np.float32).tiny)
            snr = 10.0 * (math.log10(max(self._signal, tiny)) - math.log10(max(self._noise, tiny)))
        return sc, sc_db, min(max(snr, -metrics.DB_LIMIT), metrics.DB_LIMIT)

    def _take(self, segment: np.ndarray | None) -> None:
        if segment is None:
            return
        s = self._setting
        spec = torch.stft(
            torch.from_numpy(np.ascontiguousarray(segment)),
            s.n_fft,
            s.hop_length,
            s.win_length,
            self._window,
            center=False,
            return_complex=True,
        ).abs()  # (2, F, frames): reference, reconstruction
        self._ref_sq += float(spec[0].double().pow(2).sum())
        self._residual_sq += float((spec[0] - spec[1]).double().pow(2).sum())
