"""Reconstruction losses and metrics of the VQ-VAE, codebook statistics, and bits per token.

Everything here follows the original's definitions of the bottleneck metrics and VQ-VAE losses. Functions take
float tensors and return tensors (except the small summaries `CodebookStats` and `bandwidth`), so training can
back-propagate through the losses and the CLI can log the metrics.

Audio is ``[B, T]`` or ``[B, C, T]``. The spectral functions mix channels to mono first, as the original does
(its S(.) is the STFT of the channel average); the sample-wise losses compare ``x`` and ``x_hat`` element by
element and so need equal shapes.

Naming follows the original's metrics: ``x`` is the target, ``x_hat`` the reconstruction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torchaudio

from jukebox_cli.engine.errors import ConfigError

# The original's spectral convergence treats references with ||S(x)||_F <= 2e-3 as silent.
SC_EPS = 2e-3
# Floors/ceilings for the dB metrics, so a perfect or silent case logs a finite number, not +-inf.
DB_LIMIT = 200.0
# The original adds 1e-8 inside the log of its `entropy` metric.
ENTROPY_EPS = 1e-8

_Number = TypeVar("_Number", float, torch.Tensor)


# ---- STFT --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class STFTSetting:
    """One STFT resolution, as the original's spectral losses define them.

    Attributes:
        n_fft: FFT size; gives ``n_fft // 2 + 1`` frequency bins.
        hop_length: Samples between frames.
        win_length: Length of the Hann window, centred inside the ``n_fft`` frame.
    """

    n_fft: int
    hop_length: int
    win_length: int

    def __post_init__(self) -> None:
        if min(self.n_fft, self.hop_length, self.win_length) < 1:
            raise ConfigError(f"STFT sizes must be positive, got {self}.")
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft}).")


# Spectral loss, spectral convergence and bandwidth use n_fft 2048, hop 256, window 1536 (6 * 256).
SPECTRAL_STFT = STFTSetting(2048, 256, 1536)
# The three resolutions of the original's multispectral loss.
MULTISPECTRAL_STFTS = (
    STFTSetting(2048, 240, 1200),
    STFTSetting(1024, 120, 600),
    STFTSetting(512, 50, 240),
)


@functools.lru_cache(maxsize=32)
def _cached_spectrogram(
    setting: STFTSetting, device: torch.device, dtype: torch.dtype
) -> torchaudio.transforms.Spectrogram:
    # The original's S(.) is |torch.stft| with a periodic Hann window of win_length, centre padding in torch's
    # default reflect mode and no normalisation. These are torchaudio's defaults, spelled out here.
    transform = torchaudio.transforms.Spectrogram(
        n_fft=setting.n_fft,
        win_length=setting.win_length,
        hop_length=setting.hop_length,
        window_fn=torch.hann_window,
        power=1.0,
        normalized=False,
        center=True,
        pad_mode="reflect",
        onesided=True,
    )
    return transform.to(device=device, dtype=dtype)


def spectrogram_transform(
    setting: STFTSetting, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torchaudio.transforms.Spectrogram:
    """The magnitude-STFT transform for one setting, built once per (setting, device, dtype).

    Caching keeps repeated loss calls (three resolutions per level per step) from rebuilding Hann windows.

    Args:
        setting: The STFT resolution.
        device: Device the window lives on.
        dtype: Floating dtype of the window (must match the signal's).

    Returns:
        A shared `torchaudio.transforms.Spectrogram` with ``power=1.0``; do not modify it.
    """
    return _cached_spectrogram(setting, torch.device(device), dtype)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    # torch.stft has no half-precision CPU kernel and fp16 spectra overflow easily; compute in float32 then.
    if not torch.is_floating_point(x):
        raise ConfigError(f"Expected a floating-point tensor, got dtype {x.dtype}.")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _mono(x: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` or ``[B, C, T]`` -> ``[B, T]`` (channel mean, as the original's S(.))."""
    if x.dim() == 2:
        return x
    if x.dim() == 3:
        return x.mean(dim=1)  # (B, T)
    raise ConfigError(f"Expected audio of shape [B, T] or [B, C, T], got {list(x.shape)}.")


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    if x.shape != x_hat.shape:
        raise ConfigError(f"Target and reconstruction shapes differ: {list(x.shape)} vs {list(x_hat.shape)}.")
    if x.dim() not in (2, 3):
        raise ConfigError(f"Expected audio of shape [B, T] or [B, C, T], got {list(x.shape)}.")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {value}.")


def stft_magnitude(x: torch.Tensor, setting: STFTSetting = SPECTRAL_STFT) -> torch.Tensor:
    """STFT magnitude S(x) of the channel-averaged signal.

    Args:
        x: Audio ``[B, T]`` or ``[B, C, T]``; channels are averaged first.
        setting: STFT resolution (default: the spectral-loss setting).

    Returns:
        ``[B, n_fft // 2 + 1, frames]`` with ``frames = T // hop_length + 1`` (centre padding).

    Raises:
        ConfigError: On a non-float tensor, a bad shape, or a signal too short for reflect padding.
    """
    x = _mono(_as_float(x))  # (B, T)
    # Reflect padding by n_fft // 2 needs more samples than the pad on each side.
    if x.shape[-1] <= setting.n_fft // 2:
        raise ConfigError(
            f"Audio of {x.shape[-1]} samples is too short for an STFT with n_fft {setting.n_fft}; "
            f"need more than {setting.n_fft // 2}."
        )
    return spectrogram_transform(setting, x.device, x.dtype)(x)  # (B, F, frames)


def _frobenius(s: torch.Tensor) -> torch.Tensor:
    """Per-example Frobenius norm of ``[B, ...]`` -> ``[B]``.

    `vector_norm`'s backward is 0 at a zero norm, so identical inputs give zero, not NaN, gradients.
    """
    return torch.linalg.vector_norm(s.flatten(1), ord=2, dim=1)  # (B,)


def _spectral_distance(x: torch.Tensor, x_hat: torch.Tensor, setting: STFTSetting) -> torch.Tensor:
    """||S(x) - S(x_hat)||_F per example, ``[B]``."""
    return _frobenius(stft_magnitude(x, setting) - stft_magnitude(x_hat, setting))


# ---- Spectral metrics and losses ---------------------------------------------------------------------------


def spectral_convergence(x: torch.Tensor, x_hat: torch.Tensor, eps: float = SC_EPS) -> torch.Tensor:
    """Linear spectral convergence per example.

    sc = ||S(x) - S(x_hat)||_F / max(||S(x)||_F, eps), set to 0 where ||S(x)||_F <= eps (a silent reference).

    Args:
        x: Reference audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        eps: Norm below which the reference counts as silent.

    Returns:
        ``[B]``, 0 for a perfect reconstruction; about 1 for an unrelated signal of similar level.

    Raises:
        ConfigError: On mismatched shapes or a non-positive ``eps``.
    """
    _check_pair(x, x_hat)
    _check_positive("eps", eps)
    spec = stft_magnitude(x, SPECTRAL_STFT)
    ref_norm = _frobenius(spec)  # (B,)
    residual_norm = _frobenius(spec - stft_magnitude(x_hat, SPECTRAL_STFT))  # (B,)
    sc = residual_norm / ref_norm.clamp_min(eps)
    return torch.where(ref_norm > eps, sc, torch.zeros_like(sc))


def spectral_convergence_db(x: torch.Tensor, x_hat: torch.Tensor, eps: float = SC_EPS) -> torch.Tensor:
    """Spectral convergence in dB, ``20 * log10(sc)``, floored at -200 dB (perfect or silent cases).

    Args:
        x: Reference audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        eps: As in `spectral_convergence`.

    Returns:
        ``[B]``; lower is better, a 10x smaller spectral error is 20 dB lower.

    Raises:
        ConfigError: As `spectral_convergence`.
    """
    sc = spectral_convergence(x, x_hat, eps)
    floor = 10.0 ** (-DB_LIMIT / 20.0)
    return 20.0 * torch.log10(sc.clamp_min(floor))


def spectral_loss(x: torch.Tensor, x_hat: torch.Tensor, *, bandwidth_spec: float = 1.0) -> torch.Tensor:
    """Non-relative spectral loss: the batch mean of ||S(x) - S(x_hat)||_F / bandwidth_spec.

    This is the original's default (``use_nonrelative_specloss=True``) with the 2048/256/1536 STFT.

    Args:
        x: Target audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        bandwidth_spec: The dataset's ``bandwidth()["spec"]``; 1.0 leaves the loss unscaled.

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes or a non-positive bandwidth.
    """
    _check_pair(x, x_hat)
    _check_positive("bandwidth_spec", bandwidth_spec)
    return _spectral_distance(x, x_hat, SPECTRAL_STFT).mean() / bandwidth_spec


def multispectral_loss(x: torch.Tensor, x_hat: torch.Tensor, *, bandwidth_spec: float = 1.0) -> torch.Tensor:
    """Mean over the three `MULTISPECTRAL_STFTS` of the spectral loss.

    Args:
        x: Target audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        bandwidth_spec: The dataset's ``bandwidth()["spec"]``.

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes or a non-positive bandwidth.
    """
    _check_pair(x, x_hat)
    _check_positive("bandwidth_spec", bandwidth_spec)
    per_setting = [_spectral_distance(x, x_hat, s).mean() for s in MULTISPECTRAL_STFTS]
    return torch.stack(per_setting).mean() / bandwidth_spec


# ---- Sample-wise losses (lmix) -----------------------------------------------------------------------------


def l1_loss(x: torch.Tensor, x_hat: torch.Tensor, *, bandwidth_l1: float = 1.0) -> torch.Tensor:
    """Mean absolute error / bandwidth_l1.

    Args:
        x: Target audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        bandwidth_l1: The dataset's ``bandwidth()["l1"]``.

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes or a non-positive bandwidth.
    """
    _check_pair(x, x_hat)
    _check_positive("bandwidth_l1", bandwidth_l1)
    return (x_hat - x).abs().mean() / bandwidth_l1


def l2_loss(x: torch.Tensor, x_hat: torch.Tensor, *, bandwidth_l2: float = 1.0) -> torch.Tensor:
    """Mean squared error / bandwidth_l2.

    Args:
        x: Target audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        bandwidth_l2: The dataset's ``bandwidth()["l2"]`` (sample variance).

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes or a non-positive bandwidth.
    """
    _check_pair(x, x_hat)
    _check_positive("bandwidth_l2", bandwidth_l2)
    return (x_hat - x).pow(2).mean() / bandwidth_l2


def linf_loss(
    x: torch.Tensor, x_hat: torch.Tensor, *, k: int = 2048, bandwidth_l2: float = 1.0
) -> torch.Tensor:
    """Soft L-infinity: mean over examples of the mean of each example's top-k squared errors.

    It penalises the worst samples (clicks) that a plain L2 averages away. ``k`` is clamped to the number of
    samples per example, so with ``k >= T`` it equals `l2_loss`.

    Args:
        x: Target audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        k: Number of largest squared errors per example (``linf_k``, 2048 in the original).
        bandwidth_l2: The dataset's ``bandwidth()["l2"]`` (the original divides by l2's bandwidth here too).

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes, ``k < 1`` or a non-positive bandwidth.
    """
    _check_pair(x, x_hat)
    _check_positive("bandwidth_l2", bandwidth_l2)
    if k < 1:
        raise ConfigError(f"linf k must be at least 1, got {k}.")
    sq_err = (x_hat - x).pow(2).flatten(1)  # (B, C*T)
    top = torch.topk(sq_err, min(k, sq_err.shape[1]), dim=1, largest=True, sorted=False).values  # (B, k)
    return top.mean(dim=1).mean() / bandwidth_l2


def lmix_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    *,
    l1: float = 0.0,
    l2: float = 1.0,
    linf: float = 0.02,
    k: int = 2048,
    bandwidth_l1: float = 1.0,
    bandwidth_l2: float = 1.0,
) -> torch.Tensor:
    """Weighted mix ``l1 * L1 + l2 * L2 + linf * Linf`` (the original's ``loss_fn='lmix'``).

    The defaults are the released VQ-VAE's recipe (L2 + 0.02 * Linf). Terms with weight 0 are not computed.

    Args:
        x: Target audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.
        l1: Weight of `l1_loss` (``lmix_l1``).
        l2: Weight of `l2_loss` (``lmix_l2``).
        linf: Weight of `linf_loss` (``lmix_linf``).
        k: ``linf_k`` of `linf_loss`.
        bandwidth_l1: The dataset's ``bandwidth()["l1"]``.
        bandwidth_l2: The dataset's ``bandwidth()["l2"]``.

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes, bad ``k`` or non-positive bandwidths.
    """
    _check_pair(x, x_hat)
    total = x.new_zeros(())
    if l1:
        total = total + l1 * l1_loss(x, x_hat, bandwidth_l1=bandwidth_l1)
    if l2:
        total = total + l2 * l2_loss(x, x_hat, bandwidth_l2=bandwidth_l2)
    if linf:
        total = total + linf * linf_loss(x, x_hat, k=k, bandwidth_l2=bandwidth_l2)
    return total


def snr_db(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio per example, ``10 * log10(sum x^2 / sum (x - x_hat)^2)``, in dB.

    Clamped to [-200, 200] dB: a perfect reconstruction (including of silence) is +200 dB, a silent reference
    with a non-zero reconstruction -200 dB, so the result is always finite.

    Args:
        x: Reference audio ``[B, T]`` or ``[B, C, T]``.
        x_hat: Reconstruction, same shape.

    Returns:
        ``[B]``; higher is better (``x_hat = 0.5 * x`` gives about 6.02 dB).

    Raises:
        ConfigError: On mismatched shapes.
    """
    _check_pair(x, x_hat)
    x, x_hat = _as_float(x), _as_float(x_hat)
    signal = x.pow(2).flatten(1).sum(dim=1)  # (B,)
    noise = (x - x_hat).pow(2).flatten(1).sum(dim=1)  # (B,)
    tiny = torch.finfo(signal.dtype).tiny
    # A difference of logs rather than log of a ratio: the ratio could overflow before the clamp.
    db = 10.0 * (torch.log10(signal.clamp_min(tiny)) - torch.log10(noise.clamp_min(tiny)))
    db = torch.where(noise > 0, db, torch.full_like(db, DB_LIMIT))
    return db.clamp(-DB_LIMIT, DB_LIMIT)


# ---- Bottleneck --------------------------------------------------------------------------------------------


def commit_loss(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Commitment loss ``||z_q.detach() - z||^2 / numel(z)``, a mean squared error as in the original.

    Only the encoder output ``z`` receives a gradient: the codebook is learnt by EMA, not by this loss.

    Args:
        z: Encoder output (any shape, e.g. ``[B, emb_dim, T]``).
        z_q: Its quantised version, same shape.

    Returns:
        A scalar tensor.

    Raises:
        ConfigError: On mismatched shapes or an empty tensor.
    """
    if z.shape != z_q.shape:
        raise ConfigError(f"Latent and quantised shapes differ: {list(z.shape)} vs {list(z_q.shape)}.")
    if z.numel() == 0:
        raise ConfigError("Cannot compute a commit loss of an empty latent.")
    return (z_q.detach() - z).pow(2).sum() / z.numel()


@dataclass(frozen=True)
class CodebookStats:
    """How a batch of codes uses a codebook.

    Attributes:
        used: Number of distinct codes that occur (the original's ``used_curr`` with threshold 1).
        usage: ``used / codebook_size``, the fraction of the codebook in use.
        entropy_bits: Entropy of the empirical code distribution, in bits (at most ``log2(codebook_size)``).
        perplexity: ``2 ** entropy_bits``, the effective number of equally likely codes.
    """

    used: int
    usage: float
    entropy_bits: float
    perplexity: float


def _code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts per code ``[codebook_size]`` of all entries of ``codes``, after validating them."""
    if codebook_size < 1:
        raise ConfigError(f"codebook_size must be at least 1, got {codebook_size}.")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ConfigError(f"Codes must be an integer tensor, got dtype {codes.dtype}.")
    if codes.numel() == 0:
        raise ConfigError("Cannot compute statistics of an empty code tensor.")
    flat = codes.reshape(-1).long()  # (N,)
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high >= codebook_size:
        raise ConfigError(f"Codes must lie in [0, {codebook_size}), found values in [{low}, {high}].")
    return torch.bincount(flat, minlength=codebook_size)  # (codebook_size,)


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> CodebookStats:
    """Usage, entropy and perplexity of the histogram of ``codes``, for reporting.

    Unlike `codebook_entropy_nats`, the entropy here is exact (no 1e-8 inside the log) and in bits.

    Args:
        codes: Integer codes of any shape, e.g. ``[B, T_level]``.
        codebook_size: Number of codes in the codebook (2048 for the released models).

    Returns:
        A `CodebookStats`.

    Raises:
        ConfigError: On non-integer, empty or out-of-range codes, or ``codebook_size < 1``.
    """
    return codebook_stats_from_counts(_code_histogram(codes, codebook_size), codebook_size)


def codebook_stats_from_counts(counts: torch.Tensor, codebook_size: int) -> CodebookStats:
    """`codebook_stats` of a histogram ``[codebook_size]``, e.g. summed over the chunks of a long input."""
    counts = counts.double()
    p = counts / counts.sum().clamp_min(1)
    nz = p[p > 0]
    entropy_bits = float(-(nz * torch.log2(nz)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0
    used = int((counts > 0).sum())
    return CodebookStats(
        used=used,
        usage=used / codebook_size,
        entropy_bits=entropy_bits,
        perplexity=2.0**entropy_bits,
    )


def codebook_entropy_nats(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """The original's ``entropy`` metric, ``-sum_j p_j ln(p_j + 1e-8)`` of the code histogram.

    Computed in float32, like the original, so logged values are comparable with its training curves.

    Args:
        codes: Integer codes of any shape.
        codebook_size: Number of codes in the codebook.

    Returns:
        A scalar float32 tensor, in nats.

    Raises:
        ConfigError: As `codebook_stats`.
    """
    counts = _code_histogram(codes, codebook_size).float()
    p = counts / counts.sum()
    return -(p * torch.log(p + ENTROPY_EPS)).sum()


# ---- Dataset statistics and priors -------------------------------------------------------------------------


@torch.no_grad()
def bandwidth(x_batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """Scale statistics of a dataset, used to normalise the VQ-VAE losses; computed once before training.

    ``l2`` is the sample variance ``E[x^2] - E[x]^2``, ``l1`` is ``E[|x|]`` (both over every sample), and
    ``spec`` is the mean over examples of ``||S(x)||_F`` with the `SPECTRAL_STFT` setting. The original used
    librosa's STFT for ``spec``; with the same periodic Hann window and reflect centre padding it equals the
    torch STFT used here.
    Sums are accumulated in float64 so 600 s of audio does not lose precision.

    Args:
        x_batches: Iterable of audio batches ``[B, T]`` (or ``[B, C, T]``; the spectrum uses their mean).

    Returns:
        ``{"l1": float, "l2": float, "spec": float}``.

    Raises:
        ConfigError: If the iterable yields no samples, or on a bad batch shape.
    """
    n_samples = 0
    n_items = 0
    total = total_sq = total_abs = spec_total = 0.0
    for batch in x_batches:
        if batch.dim() not in (2, 3):
            raise ConfigError(
                f"Expected audio batches of shape [B, T] or [B, C, T], got {list(batch.shape)}."
            )
        if batch.numel() == 0:
            continue
        samples = _as_float(batch).double()
        n_samples += samples.numel()
        total += float(samples.sum())
        total_sq += float(samples.pow(2).sum())
        total_abs += float(samples.abs().sum())
        spec_total += float(_frobenius(stft_magnitude(samples, SPECTRAL_STFT)).sum())
        n_items += samples.shape[0]
    if n_samples == 0:
        raise ConfigError("Cannot compute bandwidth: no audio was given.")
    mean = total / n_samples
    return {
        "l1": total_abs / n_samples,
        "l2": total_sq / n_samples - mean**2,
        "spec": spec_total / n_items,
    }


def bits_per_token(loss_nats: _Number) -> _Number:
    """Convert a cross-entropy in nats per token to bits per token (the priors' ``bpd``).

    Args:
        loss_nats: Mean negative log-likelihood per token, in nats (a float or a tensor).

    Returns:
        ``loss_nats / ln 2``, of the same type.
    """
    return loss_nats / math.log(2.0)
