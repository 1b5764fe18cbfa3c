"""Renders the engine's progress events with rich (on stderr, so --json output stays clean)."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich import filesize
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from jukebox_cli.engine.progress import (
    Advanced,
    Event,
    LevelDone,
    StageFinished,
    StageStarted,
    TrainMetrics,
)


class RateColumn(ProgressColumn):
    """Units per second of a stage (tokens/s while sampling, windows/s, MB/s while downloading)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("", style="progress.data.speed")
        if task.fields.get("unit") == "B":
            return Text(f"{filesize.decimal(int(speed))}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {task.fields.get('unit', 'it')}/s", style="progress.data.speed")


class CountColumn(ProgressColumn):
    """Done/total in the stage's unit (sizes like 1.2/11.6 GB for byte stages)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "it")
        if unit == "B":
            total = filesize.decimal(int(task.total)) if task.total is not None else "?"
            return Text(f"{filesize.decimal(int(task.completed))}/{total}", style="progress.download")
        total = f"{int(task.total):,}" if task.total is not None else "?"
        return Text(f"{int(task.completed):,}/{total} {unit}", style="progress.download")


class RichProgress:
    """A progress callback: one row per running stage; finished stages disappear.

    Use as a context manager around the engine call; with ``enabled=False`` every event is ignored.
    ``on_level`` turns a ``LevelDone`` into a line printed at once above the bars: a level's audio is
    written minutes before the run ends, and the user may want to listen to it meanwhile.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        console: Console | None = None,
        on_level: Callable[[LevelDone], str] | None = None,
    ) -> None:
        self.enabled = enabled
        self._on_level = on_level
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            CountColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
            disable=not enabled,
            refresh_per_second=8,  # throttled: the engine may emit thousands of events per second
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, StageStarted):
            self._tasks[event.name] = self._progress.add_task(event.name, total=event.total, unit=event.unit)
        elif isinstance(event, Advanced) and event.name in self._tasks:
            self._progress.advance(self._tasks[event.name], event.n)
        elif isinstance(event, StageFinished) and event.name in self._tasks:
            self._progress.remove_task(self._tasks.pop(event.name))
        elif isinstance(event, LevelDone) and self._on_level is not None:
            self._progress.console.print(self._on_level(event), highlight=False)


# What the live training view shows, in this order, when present (label, metric).
_TRAIN_STATUS = (
    ("loss", "loss"), ("sc", "spectral_convergence"), ("usage", "usage"), ("bpd", "bpd"),
    ("eval loss", "eval_loss"), ("eval sc", "eval_spectral_convergence"), ("eval bpd", "eval_bpd"),
    ("steps/s", "steps_per_second"), ("skipped", "skipped_steps"),
)  # fmt: skip


class TrainProgress(RichProgress):
    """RichProgress plus the latest training metrics beside the ``train`` bar (step, loss, throughput, ETA)."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        super().__init__(enabled=enabled, console=console)
        self._progress.columns = (*self._progress.columns, TextColumn("{task.fields[status]}"))
        self._latest: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, StageStarted):
            self._tasks[event.name] = self._progress.add_task(event.name, total=event.total, unit=event.unit,
                                                              status="")  # fmt: skip
        elif isinstance(event, TrainMetrics):
            self._latest.update(event.values)
            shown = [
                f"{label} {self._latest[key]:.4g}" if key != "usage" else f"{label} {self._latest[key]:.0f}"
                for label, key in _TRAIN_STATUS
                if key in self._latest
            ]
            if "train" in self._tasks:
                self._progress.update(self._tasks["train"], status=" · ".join(shown))
        else:
            super().__call__(event)
