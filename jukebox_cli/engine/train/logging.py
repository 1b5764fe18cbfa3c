"""Experiment loggers: TensorBoard, Weights & Biases, or none, behind one small protocol.

The training loop calls ``scalars(step, {...})`` and ``media(step, {...})`` without knowing which backend is
behind them. Tags are kept as given ("loss", "eval_loss", "recons_loss_l1", ...): TensorBoard groups by a
"/" if a tag has one, and `report.py` pairs ``eval_<metric>`` with ``<metric>``, so no prefixes are added here.

Only rank 0 logs (`make_logger` hands every other rank a `NullLogger`). Heavy imports (torch's TensorBoard
writer, wandb, matplotlib) happen inside functions: the CLI imports this module at start-up.
"""

from __future__ import annotations

import math
import netrc
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import numpy as np

from jukebox_cli.engine.audio.plots import analysis_hop, chromagram
from jukebox_cli.engine.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

# TensorBoard event files live in this sub-folder of a run folder; `report.py` reads them from there.
LOGS_DIRNAME = "logs"
LOGGER_KINDS = ("tensorboard", "wandb", "none")
WANDB_PROJECT = "jukebox-cli"
_WANDB_INSTALL_HINT = "--logger wandb needs the wandb package: pip install 'jukebox-cli[wandb]' (from a clone: pip install '.[wandb]')."
_WANDB_DEFAULT_HOST = "api.wandb.ai"


# --------------------------------------------------------------------------------------------------- media


def _to_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, np.ndarray):
        return array
    # Anything else is a torch tensor (possibly on the GPU, possibly bfloat16, which numpy lacks).
    return array.detach().float().cpu().numpy()


@dataclass(frozen=True)
class Audio:
    """A mono clip to log.

    Attributes:
        samples: ``[T]`` float samples in [-1, 1] (``[1, T]`` and ``[1, 1, T]`` are accepted too); louder
            samples are clipped and NaN/inf become silence when written.
        sample_rate: Sample rate in Hz.
    """

    samples: torch.Tensor | np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        shape = tuple(self.samples.shape)
        # Only the shape is checked here: looking at the values would sync the GPU on every log call.
        if not shape or math.prod(shape) != max(shape) or max(shape) == 0:
            raise ConfigError(f"Audio to log must be non-empty mono [T], got shape {list(shape)}.")
        if not self.sample_rate > 0:
            raise ConfigError(f"Audio sample_rate must be positive, got {self.sample_rate}.")

    def numpy(self) -> np.ndarray:
        """The samples as a float32 ``[T]`` array, clipped to [-1, 1], non-finite samples set to 0.

        Returns:
            A new array (the logged clip).
        """
        samples = _to_numpy(self.samples).astype(np.float32).reshape(-1)
        # A diverging model can decode NaN; log silence rather than fail the training step that logs it.
        return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


@dataclass(frozen=True)
class Image:
    """An RGB picture to log (see `figure_to_image` for matplotlib figures).

    Attributes:
        array: ``[H, W, 3]`` uint8 RGB.
    """

    array: np.ndarray

    def __post_init__(self) -> None:
        array = self.array
        if (
            not isinstance(array, np.ndarray)
            or array.ndim != 3
            or array.shape[2] != 3
            or array.dtype != np.uint8
        ):
            desc = (
                f"{array.dtype} {list(array.shape)}"
                if isinstance(array, np.ndarray)
                else type(array).__name__
            )
            raise ConfigError(f"Image to log must be a uint8 [H, W, 3] RGB array, got {desc}.")


def figure_to_image(figure: Figure, *, dpi: float | None = None) -> Image:
    """Render a matplotlib figure to RGB pixels and close it.

    Works on plain `Figure` objects (no pyplot) and on pyplot figures, which are also removed from pyplot's
    registry so a training run that logs a figure every eval does not accumulate them.

    Args:
        figure: The figure; it must not be used afterwards.
        dpi: Resolution; the figure's own dpi when omitted.

    Returns:
        The rendered `Image`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if dpi is not None:
        figure.set_dpi(dpi)
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3); drop alpha
    pyplot = sys.modules.get("matplotlib.pyplot")  # only close through pyplot if someone already imported it
    if pyplot is not None:
        pyplot.close(figure)
    figure.clear()
    return Image(rgb)


_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def chromagram_image(audio: torch.Tensor | np.ndarray, sample_rate: int, *, title: str = "") -> Image:
    """A small chromagram picture of a mono clip (features from `jukebox_cli.engine.audio.plots.chromagram`).

    Args:
        audio: Mono audio ``[T]`` (or ``[1, T]``).
        sample_rate: Its sample rate in Hz.
        title: Optional title above the panel.

    Returns:
        An `Image` of about 640 x 240 pixels.

    Raises:
        ConfigError: On non-mono, empty or non-finite audio, or a bad sample rate.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chroma = chromagram(_to_numpy(audio), sample_rate)  # (12, frames), each frame max-normalised
    seconds = chroma.shape[1] * analysis_hop(sample_rate) / sample_rate
    fig = Figure(figsize=(6.4, 2.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # imshow rather than librosa.display.specshow: specshow imports pyplot, which we keep out of training.
    ax.imshow(
        chroma,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=0.0,
        vmax=1.0,
        extent=(0.0, seconds, -0.5, 11.5),
    )
    ax.set_yticks(range(12), _PITCH_CLASSES, fontsize="x-small")
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize="medium")
    return figure_to_image(fig)


# -------------------------------------------------------------------------------------------------- loggers


class Logger(Protocol):
    """Where training metrics and media go.

    Attributes:
        notice: A one-time message for the user (e.g. "W&B is logging offline"), or None.
    """

    notice: str | None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Log numbers (floats, ints, 0-d tensors) under their tags at ``step``."""
        ...

    def media(self, step: int, items: Mapping[str, Any]) -> None:
        """Log `Audio` and `Image` values under their tags at ``step``."""
        ...

    def close(self) -> None:
        """Flush and release the backend; further calls are not allowed (a second close is a no-op)."""
        ...


def _scalar(tag: str, value: Any) -> float:
    try:
        return float(value)  # also a 0-d tensor or numpy scalar; NaN and inf are logged as they are
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"Scalar {tag!r} must be a number, got {type(value).__name__}.") from error


def _check_media(tag: str, item: Any) -> Audio | Image:
    if not isinstance(item, Audio | Image):
        raise ConfigError(f"Media {tag!r} must be an Audio or an Image, got {type(item).__name__}.")
    return item


class NullLogger:
    """Logs nothing: ``--logger none`` and every rank but 0."""

    notice: str | None = None

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Ignore the values."""

    def media(self, step: int, items: Mapping[str, Any]) -> None:
        """Ignore the items."""

    def close(self) -> None:
        """Nothing to release."""


class TensorBoardLogger:
    """Event files under ``<run_dir>/logs``; a resumed run adds a new event file beside the old ones."""

    notice: str | None = None

    def __init__(self, log_dir: str | Path) -> None:
        """A logger whose writer opens with the first event: a run refused before its first step leaves no file.

        Args:
            log_dir: The folder for the event files (created with the first event).
        """
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._closed = False

    def _open_writer(self) -> Any:
        if self._closed:
            raise TrainingError(f"The TensorBoard logger for {self.log_dir} is closed.")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # lazy: opening it writes the event file

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Write one scalar event per tag.

        Args:
            step: The training step.
            values: Tag -> number.

        Raises:
            ConfigError: On a value that is not a number.
            TrainingError: If the logger was closed.
        """
        writer = self._open_writer()
        for tag, value in values.items():
            writer.add_scalar(tag, _scalar(tag, value), global_step=step)

    def media(self, step: int, items: Mapping[str, Any]) -> None:
        """Write audio clips and images.

        Args:
            step: The training step.
            items: Tag -> `Audio` or `Image`.

        Raises:
            ConfigError: On an item of another type.
            TrainingError: If the logger was closed.
        """
        writer = self._open_writer()
        for tag, item in items.items():
            item = _check_media(tag, item)
            if isinstance(item, Audio):
                writer.add_audio(
                    tag, item.numpy()[None], global_step=step, sample_rate=item.sample_rate
                )  # [1, T]
            else:
                writer.add_image(tag, item.array, global_step=step, dataformats="HWC")

    def close(self) -> None:
        """Flush the event file and close it."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        self._closed = True


class WandbLogger:
    """A Weights & Biases run (online, or offline for a later ``wandb sync``)."""

    def __init__(self, run: Any, wandb_module: Any, *, notice: str | None = None) -> None:
        """Wrap a started run; `make_logger` is the usual way to get one.

        Args:
            run: The object `wandb.init` returned.
            wandb_module: The imported ``wandb`` package (for its media types).
            notice: The one-time message for the user, if any.
        """
        self.run = run
        self.notice = notice
        self._wandb = wandb_module
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise TrainingError("The W&B logger is closed.")

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Log the values as one W&B history row at ``step``.

        Args:
            step: The training step (W&B drops rows whose step is below one already logged).
            values: Tag -> number.

        Raises:
            ConfigError: On a value that is not a number.
            TrainingError: If the logger was closed.
        """
        self._check_open()
        self.run.log({tag: _scalar(tag, value) for tag, value in values.items()}, step=step)

    def media(self, step: int, items: Mapping[str, Any]) -> None:
        """Log audio clips and images as one W&B history row at ``step``.

        Args:
            step: The training step.
            items: Tag -> `Audio` or `Image`.

        Raises:
            ConfigError: On an item of another type.
            TrainingError: If the logger was closed.
        """
        self._check_open()
        row = {}
        for tag, item in items.items():
            item = _check_media(tag, item)
            if isinstance(item, Audio):
                row[tag] = self._wandb.Audio(item.numpy(), sample_rate=item.sample_rate)
            else:
                row[tag] = self._wandb.Image(item.array)
        self.run.log(row, step=step)

    def close(self) -> None:
        """Finish the run (uploads what is left when online)."""
        if not self._closed:
            self._closed = True
            self.run.finish()


# -------------------------------------------------------------------------------------------------- factory


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as error:
        raise ConfigError(_WANDB_INSTALL_HINT) from error
    return wandb


def _wandb_netloc() -> str:
    base_url = os.environ.get("WANDB_BASE_URL")
    # netloc (host[:port]) because that is the "machine" `wandb login` writes to the netrc file.
    return (urlparse(base_url).netloc if base_url else None) or _WANDB_DEFAULT_HOST


def _netrc_path() -> Path:
    # The same search as wandb's own: $NETRC, else ~/.netrc, else ~/_netrc (Windows' name).
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    return unix if unix.exists() else Path("~/_netrc").expanduser()


def _netrc_has_key(machine: str) -> bool:
    path = _netrc_path()
    if not path.is_file():
        return False
    try:
        entry = netrc.netrc(str(path)).authenticators(machine)
    except (OSError, netrc.NetrcParseError):
        return False  # unreadable or malformed: wandb cannot use it either, so offline is the safe choice
    return bool(entry and entry[2])


def wandb_auto_offline() -> bool:
    """Whether `make_logger` will run W&B offline on its own.

    True when the user chose no mode (``WANDB_MODE`` unset) and no credentials are configured: no
    ``WANDB_API_KEY`` (or ``WANDB_IDENTITY_TOKEN_FILE``) and no netrc entry (``$NETRC`` or ``~/.netrc``, written
    by ``wandb login``) for the W&B host (``WANDB_BASE_URL`` or api.wandb.ai). Offline rather than wandb's
    interactive login prompt, which would stall a training job that has no terminal.

    Returns:
        True to pass ``mode="offline"``.
    """
    if any(os.environ.get(var) for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")):
        return False
    return not _netrc_has_key(_wandb_netloc())


def _make_wandb_logger(run_dir: Path, config: Mapping[str, Any], name: str) -> WandbLogger:
    wandb = _import_wandb()
    offline = wandb_auto_offline()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=WANDB_PROJECT,
            name=name,
            dir=str(run_dir),
            config=dict(config),
            mode="offline" if offline else None,  # None: wandb follows WANDB_MODE / its settings
        )
    except wandb.errors.Error as error:
        raise TrainingError(
            f"Could not start the W&B run: {error} (set WANDB_MODE=offline to log locally and sync later)."
        ) from error
    notice = None
    if offline:
        # run.dir is <run_dir>/wandb/offline-run-.../files; `wandb sync` takes the folder above it.
        sync_dir = Path(run.dir).parent
        notice = (
            "W&B: no API key found (WANDB_API_KEY or `wandb login`), so the run is logged offline to "
            f"{sync_dir}; upload it later with `wandb sync {sync_dir}`."
        )
    return WandbLogger(run, wandb, notice=notice)


def make_logger(
    kind: str, run_dir: str | Path, *, config: Mapping[str, Any], name: str, rank: int = 0
) -> Logger:
    """The logger a training run writes its metrics to.

    Args:
        kind: ``"tensorboard"`` (event files under ``run_dir / "logs"``), ``"wandb"`` (project
            "jukebox-cli", files under ``run_dir / "wandb"``; offline when no API key is configured, see
            `wandb_auto_offline`, with the returned logger's ``notice`` saying so) or ``"none"``.
        run_dir: The run folder.
        config: The run's configuration, recorded by W&B (TensorBoard ignores it).
        name: The run's display name in W&B.
        rank: The process rank; only rank 0 logs, every other rank gets a `NullLogger`.

    Returns:
        The logger; close it when training ends.

    Raises:
        ConfigError: On an unknown kind, or ``"wandb"`` without the wandb package installed.
        TrainingError: If W&B cannot start the run (e.g. online mode with no network).
    """
    # Validate before the rank check so a typo fails on every rank alike, not only on rank 0.
    if kind not in LOGGER_KINDS:
        raise ConfigError(f"Unknown logger {kind!r}: use one of {', '.join(LOGGER_KINDS)}.")
    if kind == "none" or rank != 0:
        return NullLogger()
    run_dir = Path(run_dir)
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir / LOGS_DIRNAME)
    return _make_wandb_logger(run_dir, config, name)
