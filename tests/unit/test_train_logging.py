"""Invariants of jukebox_cli.engine.train.logging and jukebox_cli.engine.train.report."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tensorboard.backend.event_processing import event_accumulator

from jukebox_cli.engine.errors import ConfigError, TrainingError
from jukebox_cli.engine.train import logging as train_logging
from jukebox_cli.engine.train import report
from jukebox_cli.engine.train.logging import (
    Audio,
    Image,
    NullLogger,
    TensorBoardLogger,
    chromagram_image,
    figure_to_image,
    make_logger,
)

SR = 22050
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Values exact in float32, the precision of TensorBoard's scalar events, so they compare with ==.
TRAIN = {
    "loss": [(0, 4.0), (10, 2.0), (20, 1.5)],
    "eval_loss": [(10, 2.5), (20, 1.75)],
    "lr": [(0, 0.0), (10, 0.25), (20, 0.5)],
    "usage": [(0, 2048.0), (10, 1024.0), (20, 512.0)],
}


def _tone(seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * math.pi * 440.0 * t)).astype(np.float32)


def _log(logger: train_logging.Logger, series: dict[str, list[tuple[int, float]]]) -> None:
    """Log each step's values in one call, as the training loop does."""
    for step in sorted({step for points in series.values() for step, _ in points}):
        values = {tag: value for tag, points in series.items() for s, value in points if s == step}
        logger.scalars(step, values)


def _tensorboard_logger(run_dir: Path) -> TensorBoardLogger:
    logger = make_logger("tensorboard", run_dir, config={"lr": 3e-4}, name="test")
    assert isinstance(logger, TensorBoardLogger)
    assert logger.notice is None
    return logger


def _assert_png(path: Path, min_width: int = 400, min_height: int = 200) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width
    assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas
    return pixels


# ---------------------------------------------------------------------------------------------- media


def test_audio_and_image_validate_their_shapes() -> None:
    assert Audio(torch.zeros(1, 100), SR).numpy().shape == (100,)
    with pytest.raises(ConfigError, match="mono"):
        Audio(np.zeros((2, 100), dtype=np.float32), SR)
    with pytest.raises(ConfigError, match="mono"):
        Audio(np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(ConfigError, match="sample_rate"):
        Audio(np.zeros(10, dtype=np.float32), 0)
    with pytest.raises(ConfigError, match="uint8"):
        Image(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ConfigError, match="uint8"):
        Image(np.zeros((4, 4), dtype=np.uint8))


def test_audio_clips_and_silences_bad_samples() -> None:
    samples = torch.tensor([0.5, 2.0, -3.0, float("nan"), float("inf")], dtype=torch.bfloat16)
    assert Audio(samples, SR).numpy().tolist() == [0.5, 1.0, -1.0, 0.0, 1.0]


def test_figure_to_image_renders_rgb() -> None:
    fig = Figure(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([0, 1], [0, 1])
    image = figure_to_image(fig)
    assert image.array.shape == (50, 100, 3)
    assert image.array.dtype == np.uint8
    assert image.array.std() > 0


def test_chromagram_image() -> None:
    image = chromagram_image(torch.from_numpy(_tone()), SR, title="A4")
    height, width, channels = image.array.shape
    assert channels == 3 and width >= 400 and height >= 150
    with pytest.raises(ConfigError):
        chromagram_image(np.zeros((2, 100), dtype=np.float32), SR)


# ------------------------------------------------------------------------------------------ tensorboard


def test_tensorboard_logger_round_trip(tmp_path: Path) -> None:
    logger = _tensorboard_logger(tmp_path)
    _log(logger, TRAIN)
    logger.scalars(20, {})  # nothing to log is fine
    logger.media(
        20,
        {
            "sample/audio": Audio(torch.from_numpy(_tone()), SR),
            "sample/chroma": chromagram_image(_tone(), SR),
        },
    )
    logger.close()
    logger.close()  # idempotent

    assert report.read_scalars(tmp_path) == dict(sorted(TRAIN.items()))
    (event_file,) = (tmp_path / "logs").glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(event_file))
    accumulator.Reload()
    assert accumulator.Tags()["audio"] == ["sample/audio"]
    assert accumulator.Tags()["images"] == ["sample/chroma"]
    (clip,) = accumulator.Audio("sample/audio")
    assert (clip.step, clip.sample_rate, clip.length_frames) == (20, SR, len(_tone()))
    (picture,) = accumulator.Images("sample/chroma")
    assert picture.step == 20 and picture.width >= 400


def test_tensorboard_logger_takes_tensors_and_rejects_non_numbers(tmp_path: Path) -> None:
    logger = _tensorboard_logger(tmp_path)
    logger.scalars(1, {"loss": torch.tensor(0.5), "grad_norm": np.float32(2.0), "steps_per_second": 3})
    with pytest.raises(ConfigError, match="'loss'"):
        logger.scalars(2, {"loss": torch.ones(3)})
    with pytest.raises(ConfigError, match="'clip'"):
        logger.media(2, {"clip": _tone()})
    logger.close()
    with pytest.raises(TrainingError, match="closed"):
        logger.scalars(3, {"loss": 1.0})
    assert report.read_scalars(tmp_path) == {
        "grad_norm": [(1, 2.0)],
        "loss": [(1, 0.5)],
        "steps_per_second": [(1, 3.0)],
    }


def test_resumed_run_merges_event_files(tmp_path: Path) -> None:
    first = _tensorboard_logger(tmp_path)
    # Steps 0..30; the checkpoint the run resumes from is at step 20, so 20 and 30 are redone.
    _log(first, {"loss": [(0, 4.0), (10, 3.0), (20, 2.0), (30, 1.0)], "eval_loss": [(10, 3.5)]})
    first.close()
    second = _tensorboard_logger(tmp_path)
    _log(second, {"loss": [(20, 2.5), (25, 2.25)], "eval_loss": [(25, 2.75)]})
    second.close()

    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*"))) == 2
    scalars = report.read_scalars(tmp_path)
    # Step 20 from the later file; the interrupted run's step 30 is dropped: the resumed run redid it.
    assert scalars["loss"] == [(0, 4.0), (10, 3.0), (20, 2.5), (25, 2.25)]
    assert scalars["eval_loss"] == [(10, 3.5), (25, 2.75)]


def test_nan_is_logged(tmp_path: Path) -> None:
    logger = _tensorboard_logger(tmp_path)
    logger.scalars(0, {"loss": float("nan")})
    logger.scalars(1, {"loss": 1.0})
    logger.close()
    (nan_point, one) = report.read_scalars(tmp_path)["loss"]
    assert nan_point[0] == 0 and math.isnan(nan_point[1])
    assert one == (1, 1.0)


# ------------------------------------------------------------------------------------------------ report


def test_plot_report_draws_a_panel_per_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = _tensorboard_logger(tmp_path)
    steps = range(0, 300, 2)  # enough points for the smoothed curve
    _log(
        logger,
        {
            **TRAIN,
            "recons_loss": [(step, 1.0 / (step + 1)) for step in steps],
            "recons_loss_l1": [(step, 2.0 / (step + 1)) for step in steps],
            "eval_recons_loss_l1": [(100, 0.05), (200, 0.02)],
            "commit_loss": [(step, 0.0) for step in steps],  # a zero: linear axis
            "my_metric": [(5, 1.0)],
        },
    )
    logger.close()
    drawn: dict[str, list[str]] = {}
    draw_panel = report._draw_panel

    def spy(ax, family, series):  # records what each panel holds
        drawn[family] = [item.tag for item in series]
        draw_panel(ax, family, series)

    monkeypatch.setattr(report, "_draw_panel", spy)
    path = report.plot_report(tmp_path)

    assert path == tmp_path / "report.png"
    _assert_png(path, min_width=1000, min_height=600)
    assert list(drawn) == ["loss", "recons_loss", "commit_loss", "usage", "lr", "my_metric"]
    assert drawn["loss"] == ["loss", "eval_loss"]
    assert drawn["recons_loss"] == ["recons_loss", "recons_loss_l1", "eval_recons_loss_l1"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file

    other = report.plot_report(tmp_path, tmp_path / "out" / "curves.png")
    assert other == tmp_path / "out" / "curves.png"
    _assert_png(other)


def test_plot_report_log_scale_only_for_positive_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = _tensorboard_logger(tmp_path)
    _log(
        logger,
        {"loss": [(0, 2.0), (1, 1.0)], "commit_loss": [(0, 0.0), (1, 1.0)], "lr": [(0, 1.0), (1, 2.0)]},
    )
    logger.close()
    scales: dict[str, str] = {}
    draw_panel = report._draw_panel

    def spy(ax, family, series):
        draw_panel(ax, family, series)
        scales[family] = ax.get_yscale()

    monkeypatch.setattr(report, "_draw_panel", spy)
    report.plot_report(tmp_path)
    assert scales == {"loss": "log", "commit_loss": "linear", "lr": "linear"}


def test_plot_report_caps_the_panels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logger = _tensorboard_logger(tmp_path)
    logger.scalars(1, {f"metric_{index:02d}": float(index) for index in range(20)})
    logger.close()
    families: list[str] = []
    draw_panel = report._draw_panel
    monkeypatch.setattr(
        report,
        "_draw_panel",
        lambda ax, family, series: (families.append(family), draw_panel(ax, family, series)),
    )
    _assert_png(report.plot_report(tmp_path))
    assert families == [f"metric_{index:02d}" for index in range(report.MAX_PANELS)]


def test_plot_report_without_logs(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"No training logs under .* --logger none"):
        report.plot_report(tmp_path)
    (tmp_path / "logs").mkdir()
    with pytest.raises(TrainingError, match="No training logs"):
        report.read_scalars(tmp_path)
    with pytest.raises(ConfigError, match="not a folder"):
        report.plot_report(tmp_path / "missing")
    with pytest.raises(ConfigError, match="report.jpg"):
        report.plot_report(tmp_path, tmp_path / "report.jpg")
    assert not (tmp_path / "report.png").exists()


# ------------------------------------------------------------------------------------------ make_logger


def test_none_logger_is_a_no_op(tmp_path: Path) -> None:
    logger = make_logger("none", tmp_path, config={}, name="run")
    assert isinstance(logger, NullLogger)
    assert logger.notice is None
    logger.scalars(0, {"loss": 1.0})
    logger.media(0, {"clip": Audio(_tone(), SR)})
    logger.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_only_rank_zero_logs(tmp_path: Path, kind: str) -> None:
    logger = make_logger(kind, tmp_path, config={}, name="run", rank=1)
    assert isinstance(logger, NullLogger)
    logger.scalars(0, {"loss": 1.0})
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_unknown_logger_kind(tmp_path: Path) -> None:
    for rank in (0, 1):  # a typo fails on every rank alike
        with pytest.raises(ConfigError, match="'mlflow'.*tensorboard, wandb, none"):
            make_logger("mlflow", tmp_path, config={}, name="run", rank=rank)


def test_wandb_missing_gives_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ConfigError) as caught:
        make_logger("wandb", tmp_path, config={}, name="run")
    assert (
        str(caught.value)
        == "--logger wandb needs the wandb package: pip install 'jukebox-cli[wandb]' (from a clone: pip install '.[wandb]')."
    )


def _no_wandb_credentials(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))


def test_wandb_auto_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_wandb_credentials(monkeypatch, tmp_path)
    assert train_logging.wandb_auto_offline()
    (tmp_path / ".netrc").write_text("machine example.com login user password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert train_logging.wandb_auto_offline()  # a key for another host does not count
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password KEY\n")
    assert not train_logging.wandb_auto_offline()
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert train_logging.wandb_auto_offline()
    monkeypatch.setenv("WANDB_API_KEY", "KEY")
    assert not train_logging.wandb_auto_offline()
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user chose a mode: wandb follows it
    assert not train_logging.wandb_auto_offline()


def test_wandb_offline_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    # No mode and no key: make_logger picks offline by itself and says so.
    _no_wandb_credentials(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"

    logger = make_logger("wandb", run_dir, config={"preset": "tiny", "lr": 3e-4}, name="tiny-vqvae")
    assert isinstance(logger, train_logging.WandbLogger)
    try:
        assert logger.notice is not None and "offline" in logger.notice and "wandb sync" in logger.notice
        assert logger.run.name == "tiny-vqvae"
        assert logger.run.config["preset"] == "tiny"
        _log(logger, TRAIN)
        logger.media(20, {"sample/audio": Audio(_tone(), SR), "sample/chroma": chromagram_image(_tone(), SR)})
    finally:
        logger.close()
    logger.close()

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))  # the history to `wandb sync`
    media = [path.name for path in (offline / "files" / "media").rglob("*") if path.is_file()]
    assert any(name.endswith(".wav") for name in media) and any(name.endswith(".png") for name in media)
