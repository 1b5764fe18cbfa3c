"""Invariants of jukebox_cli.engine.audio.metrics."""

from __future__ import annotations

import math

import pytest
import torch

from jukebox_cli.engine.audio import metrics as m
from jukebox_cli.engine.errors import ConfigError

SR = 22050
T = 8192


def _tone(batch: int = 2, length: int = T, freq: float = 440.0) -> torch.Tensor:
    """A batch of sine tones of different amplitudes, [B, T]."""
    t = torch.arange(length, dtype=torch.float32) / SR
    amps = torch.linspace(0.3, 0.8, batch).unsqueeze(1)  # (B, 1)
    return amps * torch.sin(2 * math.pi * freq * t)  # (B, T)


def _noise(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- STFT --------------------------------------------------------------------------------------------------


def test_stft_settings_match_the_original() -> None:
    spectral = m.SPECTRAL_STFT
    assert (spectral.n_fft, spectral.hop_length, spectral.win_length) == (2048, 256, 1536)
    assert [(s.n_fft, s.hop_length, s.win_length) for s in m.MULTISPECTRAL_STFTS] == [
        (2048, 240, 1200),
        (1024, 120, 600),
        (512, 50, 240),
    ]
    with pytest.raises(ConfigError):
        m.STFTSetting(512, 128, 1024)


@pytest.mark.parametrize("setting", [m.SPECTRAL_STFT, *m.MULTISPECTRAL_STFTS])
def test_stft_magnitude_matches_torch_stft(setting: m.STFTSetting) -> None:
    x = _noise((2, 5000))
    direct = torch.stft(
        x,
        setting.n_fft,
        hop_length=setting.hop_length,
        win_length=setting.win_length,
        window=torch.hann_window(setting.win_length),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()
    ours = m.stft_magnitude(x, setting)
    assert ours.shape == (2, setting.n_fft // 2 + 1, 5000 // setting.hop_length + 1)
    torch.testing.assert_close(ours, direct, rtol=1e-5, atol=1e-5)


def test_stft_magnitude_averages_channels() -> None:
    x = _noise((2, 2, 4096))
    torch.testing.assert_close(m.stft_magnitude(x), m.stft_magnitude(x.mean(dim=1)))
    torch.testing.assert_close(m.stft_magnitude(x[:, :1]), m.stft_magnitude(x[:, 0]))


def test_spectrogram_cache_returns_the_same_object() -> None:
    a = m.spectrogram_transform(m.SPECTRAL_STFT, "cpu")
    b = m.spectrogram_transform(m.STFTSetting(2048, 256, 1536), torch.device("cpu"))
    assert a is b
    assert m.spectrogram_transform(m.MULTISPECTRAL_STFTS[0]) is not a
    assert m.spectrogram_transform(m.SPECTRAL_STFT, dtype=torch.float64) is not a


def test_stft_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        m.stft_magnitude(torch.zeros(2, 100))  # shorter than the reflect pad
    with pytest.raises(ConfigError):
        m.stft_magnitude(torch.zeros(4096))
    with pytest.raises(ConfigError):
        m.stft_magnitude(torch.zeros(1, 4096, dtype=torch.long))


# ---- spectral convergence ----------------------------------------------------------------------------------


def test_spectral_convergence_zero_for_identical_and_silent_reference() -> None:
    x = _tone()
    sc = m.spectral_convergence(x, x.clone())
    assert sc.shape == (2,)
    assert torch.all(sc == 0)
    silent = torch.zeros(2, T)
    assert torch.all(m.spectral_convergence(silent, _noise((2, T))) == 0)


def test_spectral_convergence_grows_with_noise() -> None:
    x = _tone()
    noise = _noise((2, T))
    scs = [m.spectral_convergence(x, x + level * noise) for level in (0.001, 0.01, 0.1)]
    assert torch.all(scs[0] < scs[1])
    assert torch.all(scs[1] < scs[2])


def test_spectral_convergence_db_is_twenty_log10() -> None:
    x = _tone()
    noise = _noise((2, T))
    # STFT magnitude is not linear in the error, so use errors far below the signal, where it nearly is:
    # scaling the error by 10 scales ||S(x) - S(x_hat)|| by about 10.
    big = m.spectral_convergence_db(x, x + 1e-3 * noise)
    small = m.spectral_convergence_db(x, x + 1e-4 * noise)
    assert big.shape == (2,)
    torch.testing.assert_close(big - small, torch.full((2,), 20.0), atol=1.0, rtol=0)
    sc = m.spectral_convergence(x, x + 1e-3 * noise)
    torch.testing.assert_close(big, 20 * torch.log10(sc))


def test_spectral_convergence_db_is_finite_when_perfect() -> None:
    x = _tone()
    db = m.spectral_convergence_db(x, x)
    assert torch.all(torch.isfinite(db))
    assert torch.all(db == -m.DB_LIMIT)


def test_spectral_convergence_rejects_mismatched_shapes() -> None:
    with pytest.raises(ConfigError):
        m.spectral_convergence(torch.zeros(2, T), torch.zeros(2, T - 1))


# ---- spectral losses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_fn", [m.spectral_loss, m.multispectral_loss])
def test_spectral_losses(loss_fn) -> None:  # noqa: ANN001 - a loss function
    x = _tone()
    y = x + 0.1 * _noise((2, T))
    assert loss_fn(x, x.clone()).item() == 0.0
    loss = loss_fn(x, y)
    assert loss.dim() == 0
    assert loss.item() > 0
    torch.testing.assert_close(loss, loss_fn(y, x))
    torch.testing.assert_close(loss_fn(x, y, bandwidth_spec=4.0), loss / 4.0)
    # [B, 1, T] gives the same as [B, T]
    torch.testing.assert_close(loss_fn(x.unsqueeze(1), y.unsqueeze(1)), loss)
    with pytest.raises(ConfigError):
        loss_fn(x, y, bandwidth_spec=0.0)


def test_spectral_loss_is_mean_of_per_example_norms() -> None:
    x = _tone()
    y = x + 0.1 * _noise((2, T))
    per_example = torch.stack([m.spectral_loss(x[i : i + 1], y[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(m.spectral_loss(x, y), per_example.mean())
    per_setting = torch.stack([m._spectral_distance(x, y, s).mean() for s in m.MULTISPECTRAL_STFTS])
    torch.testing.assert_close(m.multispectral_loss(x, y), per_setting.mean())


def test_spectral_loss_gradient_is_finite_at_zero_error() -> None:
    x = _tone()
    x_hat = x.clone().requires_grad_(True)
    m.multispectral_loss(x, x_hat).backward()
    assert torch.all(torch.isfinite(x_hat.grad))


# ---- sample-wise losses ------------------------------------------------------------------------------------


def test_l1_l2_losses() -> None:
    x = _noise((3, 1000))
    y = _noise((3, 1000), seed=1)
    torch.testing.assert_close(m.l1_loss(x, y), (x - y).abs().mean())
    torch.testing.assert_close(m.l2_loss(x, y), ((x - y) ** 2).mean())
    torch.testing.assert_close(m.l1_loss(x, y, bandwidth_l1=2.0), (x - y).abs().mean() / 2.0)
    torch.testing.assert_close(m.l2_loss(x, y, bandwidth_l2=2.0), ((x - y) ** 2).mean() / 2.0)
    assert m.l2_loss(x, x).item() == 0.0
    with pytest.raises(ConfigError):
        m.l2_loss(x, y, bandwidth_l2=-1.0)


def test_linf_bounds_and_limit() -> None:
    x = _noise((3, 1, 1000))
    y = _noise((3, 1, 1000), seed=1)
    l2 = m.l2_loss(x, y)
    assert m.linf_loss(x, y, k=16) >= l2
    assert m.linf_loss(x, y, k=16) >= m.linf_loss(x, y, k=256)
    # k = T (and any larger k, which is clamped) averages every squared error: exactly L2.
    torch.testing.assert_close(m.linf_loss(x, y, k=1000), l2)
    torch.testing.assert_close(m.linf_loss(x, y, k=10**6), l2)
    # k = 1 is the mean over examples of each example's largest squared error.
    expected = ((x - y) ** 2).flatten(1).max(dim=1).values.mean()
    torch.testing.assert_close(m.linf_loss(x, y, k=1), expected)
    with pytest.raises(ConfigError):
        m.linf_loss(x, y, k=0)


def test_lmix_is_the_weighted_sum() -> None:
    x = _noise((2, 1, 4096))
    y = _noise((2, 1, 4096), seed=1)
    expected = (
        0.5 * m.l1_loss(x, y, bandwidth_l1=0.3)
        + 1.0 * m.l2_loss(x, y, bandwidth_l2=0.2)
        + 0.02 * m.linf_loss(x, y, k=512, bandwidth_l2=0.2)
    )
    got = m.lmix_loss(x, y, l1=0.5, l2=1.0, linf=0.02, k=512, bandwidth_l1=0.3, bandwidth_l2=0.2)
    torch.testing.assert_close(got, expected)
    # the default is the released VQ-VAE's recipe: L2 + 0.02 * Linf (k 2048)
    torch.testing.assert_close(m.lmix_loss(x, y), m.l2_loss(x, y) + 0.02 * m.linf_loss(x, y, k=2048))
    with pytest.raises(ConfigError):
        m.lmix_loss(x, y[..., :-1])


# ---- SNR ---------------------------------------------------------------------------------------------------


def test_snr_of_half_amplitude_is_6_db() -> None:
    x = _tone(batch=3)
    snr = m.snr_db(x, 0.5 * x)
    assert snr.shape == (3,)
    torch.testing.assert_close(snr, torch.full((3,), 20 * math.log10(2)), atol=1e-3, rtol=0)
    torch.testing.assert_close(m.snr_db(x.unsqueeze(1), 0.5 * x.unsqueeze(1)), snr)


def test_snr_is_finite_for_perfect_and_silent() -> None:
    x = _tone()
    assert torch.all(m.snr_db(x, x) == m.DB_LIMIT)
    silent = torch.zeros(2, T)
    assert torch.all(torch.isfinite(m.snr_db(silent, x)))
    assert torch.all(m.snr_db(silent, x) == -m.DB_LIMIT)
    assert torch.all(torch.isfinite(m.snr_db(silent, silent)))


# ---- bottleneck --------------------------------------------------------------------------------------------


def test_commit_loss_gradient_only_through_z() -> None:
    z = _noise((2, 8, 16)).requires_grad_(True)
    z_q = _noise((2, 8, 16), seed=1).requires_grad_(True)
    loss = m.commit_loss(z, z_q)
    torch.testing.assert_close(loss, ((z - z_q) ** 2).mean())
    loss.backward()
    assert z_q.grad is None
    torch.testing.assert_close(z.grad, 2 * (z - z_q).detach() / z.numel())
    with pytest.raises(ConfigError):
        m.commit_loss(z, z_q[..., :-1])


@pytest.mark.parametrize("n", [1, 7, 64])
def test_codebook_stats_uniform(n: int) -> None:
    codes = torch.arange(n).repeat(5).reshape(5, n)  # each of n codes 5 times
    stats = m.codebook_stats(codes, codebook_size=128)
    assert stats.used == n
    assert stats.usage == pytest.approx(n / 128)
    assert stats.entropy_bits == pytest.approx(math.log2(n))
    assert stats.perplexity == pytest.approx(n)


def test_codebook_stats_rejects_bad_codes() -> None:
    with pytest.raises(ConfigError):
        m.codebook_stats(torch.tensor([0, 1, 8]), codebook_size=8)
    with pytest.raises(ConfigError):
        m.codebook_stats(torch.tensor([-1, 1]), codebook_size=8)
    with pytest.raises(ConfigError):
        m.codebook_stats(torch.tensor([0.0, 1.0]), codebook_size=8)
    with pytest.raises(ConfigError):
        m.codebook_stats(torch.zeros(0, dtype=torch.long), codebook_size=8)


def test_codebook_entropy_nats_matches_hand_computation() -> None:
    codes = torch.tensor([[0, 0, 0, 1], [1, 2, 0, 0]])  # counts 5, 2, 1 of 8; code 3 unused
    p = [5 / 8, 2 / 8, 1 / 8, 0.0]
    expected = -sum(pj * math.log(pj + 1e-8) for pj in p)
    got = m.codebook_entropy_nats(codes, codebook_size=4)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the exact entropy in bits is the same quantity up to the 1e-8 and the log base
    assert m.codebook_stats(codes, 4).entropy_bits == pytest.approx(expected / math.log(2), rel=1e-6)


# ---- dataset statistics and priors -------------------------------------------------------------------------


def test_bandwidth() -> None:
    batches = [_noise((2, 4096), seed=s) * 0.5 + 0.1 for s in range(3)]
    bw = m.bandwidth(iter(batches))
    allx = torch.cat(batches).double()
    assert bw["l1"] == pytest.approx(float(allx.abs().mean()), rel=1e-6)
    assert bw["l2"] == pytest.approx(float(allx.var(unbiased=False)), rel=1e-6)
    norms = torch.cat([m._frobenius(m.stft_magnitude(b, m.SPECTRAL_STFT)) for b in batches])
    assert bw["spec"] == pytest.approx(float(norms.mean()), rel=1e-5)
    with pytest.raises(ConfigError):
        m.bandwidth([])


def test_bits_per_token() -> None:
    assert m.bits_per_token(math.log(2)) == pytest.approx(1.0)
    torch.testing.assert_close(m.bits_per_token(torch.tensor([math.log(256)])), torch.tensor([8.0]))
