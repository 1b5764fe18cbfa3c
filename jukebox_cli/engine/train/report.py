"""Training curves from a run's TensorBoard event files, drawn into one PNG.

`read_scalars` merges the event files of a run (one per start when a run was resumed); `plot_report` draws
one panel per metric family with the training curve and its ``eval_`` counterpart on the same axes, so the
report of a run on a remote machine can be read without a TensorBoard server.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jukebox_cli.engine.errors import ConfigError, TrainingError
from jukebox_cli.engine.files import atomic_write
from jukebox_cli.engine.train.logging import LOGS_DIRNAME

if TYPE_CHECKING:
    from matplotlib.axes import Axes

REPORT_NAME = "report.png"
EVAL_PREFIX = "eval_"
MAX_PANELS = 12
N_COLUMNS = 3
# Panels in this order when present (VQ-VAE losses, codebook health, prior losses, optimisation); any other
# metric gets a panel after these, alphabetically, while there is room.
FAMILY_ORDER = (
    "loss",
    "recons_loss",
    "spectral_convergence",
    "multispectral_loss",
    "commit_loss",
    "entropy",
    "usage",
    "used_curr",
    "bpd",
    "gen_loss",
    "prime_loss",
    "lr",
    "grad_norm",
    "loss_scale",
    "steps_per_second",
)
# Not named "*loss*" but losses all the same: a log axis shows their late, slow decrease.
_LOSS_LIKE = frozenset({"spectral_convergence", "bpd"})
_LEVEL_SUFFIX = re.compile(r"(?P<family>.+)_l(?P<level>\d+)")
_EVENT_GLOB = "events.out.tfevents.*"
_SAVE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
# Curves with more points than this are drawn faint, under a moving average (see `_smooth`).
_SMOOTH_ABOVE = 100
# Schedules, not measurements: nothing to smooth, and their exact values matter.
_NOT_SMOOTHED = frozenset({"lr", "loss_scale"})


# ---------------------------------------------------------------------------------------------- reading


def _event_files(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder (expected a training run folder).")
    logs = run_dir / LOGS_DIRNAME
    files = sorted(path for path in logs.rglob(_EVENT_GLOB) if path.is_file()) if logs.is_dir() else []
    if not files:
        raise TrainingError(f"No training logs under {run_dir} (was it trained with --logger none?).")
    return files


def _load(path: Path) -> tuple[float, dict[str, list[tuple[int, float]]]]:
    """(first event's wall time, tag -> [(step, value)]) of one event file."""
    from tensorboard.backend.event_processing import event_accumulator

    # 0 = keep every scalar (the default keeps a 10,000-point reservoir sample); skip the heavy media.
    guidance = {
        event_accumulator.SCALARS: 0,
        event_accumulator.IMAGES: 1,
        event_accumulator.AUDIO: 1,
        event_accumulator.HISTOGRAMS: 1,
        event_accumulator.TENSORS: 1,
    }
    accumulator = event_accumulator.EventAccumulator(str(path), size_guidance=guidance)
    accumulator.Reload()
    try:
        started = accumulator.FirstEventTimestamp()
    except ValueError:  # an empty file (a writer killed before its first flush)
        started = path.stat().st_mtime
    scalars = {
        tag: [(event.step, float(event.value)) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()[event_accumulator.SCALARS]
    }
    return started, scalars


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a TensorBoard-logged run wrote, merged over its event files.

    A resumed run writes a new event file beside the old ones, and restarts from its last checkpoint, so it
    repeats the steps the interrupted run logged after that checkpoint. Files are merged in the order they
    were started; for each tag, a later file's first step discards the earlier points at or after it, so a
    repeated step takes the later value and the interrupted run's orphaned tail does not linger.

    Args:
        run_dir: The run folder (event files under ``run_dir / "logs"``).

    Returns:
        Tag -> ``[(step, value), ...]`` sorted by step; tags sorted by name. NaN and inf are kept.

    Raises:
        ConfigError: If ``run_dir`` is not a folder.
        TrainingError: If it holds no event files.
    """
    files = _event_files(Path(run_dir))
    loaded = []
    for path in files:
        started, scalars = _load(path)
        loaded.append((started, str(path), scalars))
    loaded.sort(key=lambda item: item[:2])  # start order; the name breaks ties
    merged: dict[str, dict[int, float]] = {}
    for _, _, scalars in loaded:
        for tag, points in scalars.items():
            if not points:
                continue
            kept = merged.setdefault(tag, {})
            first = min(step for step, _ in points)
            for step in [step for step in kept if step >= first]:
                del kept[step]
            kept.update(points)
    return {tag: sorted(points.items()) for tag, points in sorted(merged.items())}


# ---------------------------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class _Series:
    tag: str
    level: int | None  # None: the total, not a per-level metric
    is_eval: bool
    steps: np.ndarray  # [N] int
    values: np.ndarray  # [N] float


def _parse_tag(tag: str) -> tuple[str, int | None, bool]:
    """(family, level or None, is eval) of a tag: "eval_recons_loss_l2" -> ("recons_loss", 2, True)."""
    is_eval = tag.startswith(EVAL_PREFIX) and len(tag) > len(EVAL_PREFIX)
    metric = tag[len(EVAL_PREFIX) :] if is_eval else tag
    match = _LEVEL_SUFFIX.fullmatch(metric)
    if match:
        return match["family"], int(match["level"]), is_eval
    return metric, None, is_eval


def _group(scalars: dict[str, list[tuple[int, float]]]) -> dict[str, list[_Series]]:
    """Family -> its series (total before levels, train before eval), families in panel order."""
    families: dict[str, list[_Series]] = {}
    for tag, points in scalars.items():
        family, level, is_eval = _parse_tag(tag)
        steps = np.array([step for step, _ in points], dtype=np.int64)
        values = np.array([value for _, value in points], dtype=np.float64)
        families.setdefault(family, []).append(_Series(tag, level, is_eval, steps, values))
    rank = {name: index for index, name in enumerate(FAMILY_ORDER)}
    order = sorted(families, key=lambda name: (rank.get(name, len(rank)), name))
    return {
        name: sorted(families[name], key=lambda s: (s.level is not None, s.level or 0, s.is_eval))
        for name in order
    }


# ---------------------------------------------------------------------------------------------- drawing


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average; NaN/inf points are skipped."""
    out = np.empty_like(values)
    average, weight_sum = 0.0, 0.0
    for index, value in enumerate(values):
        if math.isfinite(value):
            average = weight * average + (1 - weight) * value
            weight_sum = weight * weight_sum + (1 - weight)
        out[index] = average / weight_sum if weight_sum else np.nan
    return out


def _smooth(values: np.ndarray) -> np.ndarray:
    """A moving average over about 1/150 of the curve, run forwards then backwards.

    One pass, as TensorBoard draws it, lags: a learning-rate warmup would look late. The backward pass cancels
    that lag, so a smooth curve stays where it is and only the noise goes.
    """
    weight = 1.0 - 1.0 / max(5.0, len(values) / 150)
    return _ema(_ema(values, weight)[::-1], weight)[::-1]


def _is_loss(family: str) -> bool:
    return "loss" in family or family in _LOSS_LIKE


def _draw_panel(ax: Axes, family: str, series: list[_Series]) -> None:
    colours = {}  # level -> colour, so a metric and its eval_ curve share one
    for item in series:
        colour = colours.setdefault(item.level, f"C{len(colours) % 10}")
        finite = np.isfinite(item.values)
        steps, values = item.steps[finite], item.values[finite]
        style = {"color": colour, "linestyle": "--" if item.is_eval else "-", "linewidth": 1.2}
        if len(values) <= 30:
            style |= {"marker": "o", "markersize": 3}  # sparse curves (eval) and single points stay visible
        if not item.is_eval and family not in _NOT_SMOOTHED and len(values) > _SMOOTH_ABOVE:
            ax.plot(steps, values, color=colour, linewidth=0.6, alpha=0.25)
            ax.plot(steps, _smooth(values), label=item.tag, **style)
        else:
            ax.plot(steps, values, label=item.tag, **style)
    finite_values = np.concatenate([item.values[np.isfinite(item.values)] for item in series])
    if _is_loss(family) and finite_values.size and bool(np.all(finite_values > 0)):
        ax.set_yscale("log")
    ax.set_title(family, loc="left", fontsize="medium")
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")


def plot_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw a run's training curves into one image.

    One panel per metric family, in `FAMILY_ORDER` (then any other metric, alphabetically; at most
    `MAX_PANELS` panels, 3 columns): the training curve, its ``eval_`` curve dashed in the same colour, and
    per-level variants (``recons_loss_l1``, ...) in further colours. Loss panels use a log y axis when every
    value is positive. Long training curves are drawn faint under a moving average.

    Args:
        run_dir: The run folder (TensorBoard event files under ``run_dir / "logs"``).
        output: The image path (``.png``, ``.pdf`` or ``.svg``); ``run_dir / "report.png"`` when omitted.
            An existing file is replaced.

    Returns:
        The path written.

    Raises:
        ConfigError: If ``run_dir`` is not a folder, or ``output`` has another extension or is a folder.
        TrainingError: If the run has no event files (e.g. it was trained with ``--logger none``) or they
            hold no scalars.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    path = Path(output) if output is not None else run_dir / REPORT_NAME
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"Cannot save a report as {path.name!r}: use one of {', '.join(_SAVE_FORMATS)}.")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a file path.")
    scalars = read_scalars(run_dir)
    if not scalars:
        raise TrainingError(f"The training logs under {run_dir} hold no scalar metrics.")
    families = _group(scalars)
    shown = list(families)[:MAX_PANELS]
    hidden = list(families)[MAX_PANELS:]
    last_step = max((points[-1][0] for points in scalars.values() if points), default=0)

    n_cols = min(N_COLUMNS, max(len(shown), 1))
    n_rows = max(1, math.ceil(len(shown) / n_cols))
    fig = Figure(figsize=(5.0 * n_cols, 3.2 * n_rows + 0.7), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: headless and thread-safe
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False)).reshape(-1)
    for ax, family in zip(axes, shown, strict=False):
        _draw_panel(ax, family, families[family])
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    run_name = run_dir.resolve().name
    fig.suptitle(f"{run_name} \u2014 step {last_step:,}")
    if hidden:
        fig.text(0.01, 0.002, "not shown: " + ", ".join(hidden), fontsize="x-small", alpha=0.7)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=100), overwrite=True)
    return path
