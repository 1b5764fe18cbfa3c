"""Invariants of jukebox_cli.engine.audio.plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from jukebox_cli.engine.audio import plots
from jukebox_cli.engine.errors import ConfigError, OutputExistsError

SR = 22050
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tone(freq: float = 440.0, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _small_figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [0, 1])
    return fig


def test_analysis_hop_is_10_to_20_ms() -> None:
    assert plots.analysis_hop(44100) == 512
    assert plots.analysis_hop(22050) == 256
    for rate in (8000, 16000, 22050, 24000, 44100, 48000):
        assert 0.0085 <= plots.analysis_hop(rate) / rate <= 0.018
    with pytest.raises(ConfigError):
        plots.analysis_hop(0)


def test_feature_shapes() -> None:
    audio = _tone()
    hop = plots.analysis_hop(SR)
    frames = audio.size // hop + 1
    chroma = plots.chromagram(audio, SR)
    assert chroma.shape == (12, frames)
    spec = plots.log_spectrogram(audio, SR)
    assert spec.shape[1] == frames
    assert spec.shape[0] == 4 * hop // 2 + 1
    assert spec.max() == pytest.approx(0.0)
    assert spec.min() >= -plots.TOP_DB - 1e-3


def test_a4_chroma_peaks_at_a() -> None:
    chroma = plots.chromagram(_tone(440.0), SR)
    assert int(np.argmax(chroma.mean(axis=1))) == 9  # C C# D D# E F F# G G# A A# B


def test_log_spectrogram_with_reference_shares_scale() -> None:
    loud = _tone()
    quiet = 0.1 * loud
    spec = plots.log_spectrogram(quiet, SR, reference=loud)
    # 10x quieter is 20 dB below the reference's peak
    assert spec.max() == pytest.approx(-20.0, abs=0.1)
    assert plots.log_spectrogram(quiet, SR).max() == pytest.approx(0.0)


def test_features_reject_bad_audio() -> None:
    with pytest.raises(ConfigError):
        plots.chromagram(np.zeros((2, 1000)), SR)
    with pytest.raises(ConfigError):
        plots.log_spectrogram(np.array([0.0, np.nan]), SR)


def test_plot_analysis_axes() -> None:
    fig = plots.plot_analysis(_tone(), SR, title="a tone")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # chromagram, spectrogram, two colour bars


def test_plot_reconstruction_rows_and_titles(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    original = _tone()
    recons = {level: original * (1 - 0.2 * level) for level in (0, 1, 2)}
    metrics = {2: {"sc_db": -8.13, "snr_db": 3.21}, 0: {"sc_db": -20.0}}
    hops = {0: 8, 1: 32, 2: 128}
    fig = plots.plot_reconstruction(
        original, recons, SR, metrics=metrics, hop_lengths=hops, title="reconstructions"
    )
    assert len(fig.axes) == 2 * 4 + 2  # 4 rows x 2 columns + one colour bar per column
    titles = [ax.get_title(loc="left") for ax in fig.axes[:8:2]]
    assert titles[0] == "input"
    assert titles[1] == "level 2 (hop 128) \u2014 SC -8.1 dB, SNR 3.2 dB"
    assert titles[2] == "level 1 (hop 32)"
    assert titles[3].startswith("level 0 (hop 8)")
    # it renders, and nothing went through pyplot (no GUI, no global figure registry)
    assert plots.save_figure(fig, tmp_path / "recon.png", dpi=40).read_bytes()[:8] == PNG_SIGNATURE
    assert plt.get_fignums() == []
    with pytest.raises(ConfigError):
        plots.plot_reconstruction(original, {0: original}, SR, metrics={1: {"sc_db": 0.0}})


def test_save_figure_png(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "fig.png"
    out = plots.save_figure(_small_figure(), target, dpi=50)
    assert out == target
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in target.parent.iterdir()) == ["fig.png"]  # no temp file left


def test_save_figure_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        plots.save_figure(_small_figure(), target)
    assert target.read_bytes() == b"keep me"
    plots.save_figure(_small_figure(), target, overwrite=True, dpi=50)
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_save_figure_formats_and_errors(tmp_path: Path) -> None:
    assert plots.save_figure(_small_figure(), tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in plots.save_figure(_small_figure(), tmp_path / "f.svg").read_bytes()
    with pytest.raises(ConfigError):
        plots.save_figure(_small_figure(), tmp_path / "f.jpg")


def test_save_figure_removes_temp_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = _small_figure()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("render failed")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.save_figure(fig, tmp_path / "fig.png")
    assert list(tmp_path.iterdir()) == []
