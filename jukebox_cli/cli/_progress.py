"""Renders the engine's progress events with rich (on stderr, so --json output stays clean)."""

from __future__ import annotations

import math
import time
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
from rich.table import Column
from rich.text import Text

from jukebox_cli.engine.progress import (
    Advanced,
    Event,
    LevelDone,
    StageFinished,
    StageStarted,
    TrainMetrics,
)
from jukebox_cli.engine.tracking import format_seconds


class RateColumn(ProgressColumn):
    """Units per second of a stage (tokens/s while sampling, windows/s, MB/s while downloading)."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.finished_speed or task.speed
        if speed is None:
            return Text("", style="progress.data.speed")
        if task.fields.get("unit") == "B":
            return Text(f"{filesize.decimal(int(speed))}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {task.fields.get('unit', 'it')}/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at the stage's rate: the ``rate`` field where the view keeps a smoothed one, else rich's."""

    def render(self, task: Task) -> Text:
        speed = task.fields.get("rate") or task.speed
        if task.total is None or not speed:
            return Text("-:--:--", style="progress.remaining")
        return Text(_clock(max(task.total - task.completed, 0) / speed), style="progress.remaining")


class SmoothedRate:
    """Steps per second, smoothed, for an ETA that does not jump with each step's time.

    Steps and seconds are summed with exponential forgetting, and the rate is their ratio, so a slow step (an
    evaluation, a checkpoint) weighs by the time it took. The sums forget over ``seconds`` or ``steps``,
    whichever spans longer: steady whether a step takes milliseconds or minutes, yet following a lasting change
    of pace (another job on the cores) within a few of those spans.
    """

    def __init__(self, *, seconds: float = 30.0, steps: float = 20.0) -> None:
        self._seconds, self._steps = seconds, steps
        self._done = self._took = 0.0
        self._last: float | None = None
        self._pending = 0

    def update(self, n: int, now: float) -> float | None:
        """Count ``n`` steps finished at ``now`` (seconds); the rate so far (None before two calls)."""
        if self._last is None:  # the clock starts here: what came before (warm-up) is not counted
            self._last = now
            return None
        self._pending += n
        elapsed = now - self._last
        if elapsed <= 0:  # within the clock's resolution: counted with the next call's time
            return self.rate
        keep = math.exp(-min(elapsed / self._seconds, self._pending / self._steps))
        self._done = self._done * keep + self._pending
        self._took = self._took * keep + elapsed
        self._last, self._pending = now, 0
        return self.rate

    @property
    def rate(self) -> float | None:
        return self._done / self._took if self._took > 0 else None


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
        # Off a terminal rich draws no transient bars, yet its stop prints an empty line (before an error, the
        # plan, ...): the display is not started there at all.
        if self._progress.console.is_interactive:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress.console.is_interactive:
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


# What the live training view shows after step, rate and ETA, in this order, when present (label, metric).
_TRAIN_STATUS = (
    ("loss", "loss"), ("sc", "spectral_convergence"), ("usage", "usage"), ("bpd", "bpd"),
    ("eval loss", "eval_loss"), ("eval sc", "eval_spectral_convergence"), ("eval bpd", "eval_bpd"),
    ("skipped", "skipped_steps"),
)  # fmt: skip
# Below this width the bar and the elapsed time give their room to the fields a user reads.
WIDE = 140
# Steps measured (after the first, which pays for warm-up) and seconds before the duration is extrapolated.
MEASURE_STEPS, MEASURE_SECONDS = 3, 3.0


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _FittingProgress(Progress):
    """A Progress that drops its decorations (bar, elapsed time) on a narrow terminal."""

    def make_tasks_table(self, tasks):
        live = getattr(self, "live", None)  # rich renders once while it builds the Live
        if live is None or live.console.width >= WIDE:
            return super().make_tasks_table(tasks)
        columns = self.columns
        self.columns = tuple(c for c in columns if not isinstance(c, BarColumn | TimeElapsedColumn))
        try:
            return super().make_tasks_table(tasks)
        finally:
            self.columns = columns


class TrainProgress(RichProgress):
    """The training view: step, rate and ETA first, then the latest metrics; a bar only where it fits.

    Where stderr is not a terminal (a log file, a batch job) rich draws nothing, so a plain line with the
    same fields is printed every ``every`` seconds instead. Once the first steps are timed, one line says
    how long the whole run will take, since a default run on a CPU takes hours.
    """

    def __init__(self, *, enabled: bool = True, console: Console | None = None, device: str = "",
                 every: float = 30.0, clock=time.monotonic) -> None:  # fmt: skip
        super().__init__(enabled=enabled, console=console)
        essential = Column(no_wrap=True)
        self._progress = _FittingProgress(
            TextColumn("[bold]{task.description}", table_column=essential),
            CountColumn(table_column=essential),
            RateColumn(table_column=essential),
            TextColumn("eta", table_column=essential),
            EtaColumn(table_column=essential),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            # The one column that may wrap: at a small width the metrics take a second line, not the ETA's room.
            TextColumn("{task.fields[status]}", table_column=Column(no_wrap=False)),
            console=self._progress.console,
            transient=True,
            disable=not enabled,
            refresh_per_second=8,
        )
        self._latest: dict[str, float] = {}
        self._device, self._every, self._clock = device, every, clock
        self._total: int | None = None
        self._step = 0
        self._first: tuple[float, int] | None = None  # (time, step) after the first step of this process
        self._smoothed = SmoothedRate()
        self._estimated = False
        self._last_line = 0.0

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, StageStarted):
            self._tasks[event.name] = self._progress.add_task(event.name, total=event.total, unit=event.unit,
                                                              status="")  # fmt: skip
            if event.name == "train":
                self._total = event.total
                self._last_line = self._clock()
        elif isinstance(event, TrainMetrics):
            self._latest.update(event.values)
            if "train" in self._tasks:
                self._progress.update(self._tasks["train"], status=" · ".join(self._metrics()))
        elif isinstance(event, Advanced) and event.name == "train":
            super().__call__(event)
            self._advanced(event.n)
        else:
            super().__call__(event)

    def _metrics(self) -> list[str]:
        return [
            f"{label} {self._latest[key]:.4g}" if key != "usage" else f"{label} {self._latest[key]:.0f}"
            for label, key in _TRAIN_STATUS
            if key in self._latest
        ]

    def _rate(self) -> float | None:
        if self._first is None or self._step <= self._first[1]:
            return None
        elapsed = self._clock() - self._first[0]
        return (self._step - self._first[1]) / elapsed if elapsed > 0 else None

    def _advanced(self, n: int) -> None:
        self._step += n
        now = self._clock()
        smoothed = self._smoothed.update(n, now)
        if smoothed and "train" in self._tasks:
            self._progress.update(self._tasks["train"], rate=smoothed)
        if self._first is None:  # a resumed run's first event jumps to its step; a new run's is step 1
            self._first = (now, self._step)
            if self._step > 1:
                total = f" of {self._total:,}" if self._total else ""
                self._progress.console.print(f"resumed from step {self._step:,}{total}", highlight=False)
            return
        rate = self._rate()
        if (
            not self._estimated
            and rate
            and self._total
            and (self._step - self._first[1] >= MEASURE_STEPS and now - self._first[0] >= MEASURE_SECONDS)
        ):
            self._estimated = True
            left = (self._total - self._step) / rate
            on = f" on {self._device}" if self._device else ""
            self._progress.console.print(
                f"expected: about {format_seconds(left)} more at {rate:.2g} steps/s{on} "
                f"({self._total - self._step:,} steps left; --steps to shorten)",
                highlight=False,
                soft_wrap=True,
            )
        if not self._progress.console.is_terminal and now - self._last_line >= self._every:
            self._last_line = now
            self._progress.console.print(self._line(smoothed), highlight=False, soft_wrap=True)

    def _line(self, rate: float | None) -> str:
        """The plain progress line: step/total, metrics, rate, ETA."""
        total = f"{self._total:,}" if self._total else "?"
        fields = [f"step {self._step:,}/{total}", *self._metrics()]
        if rate:
            fields.append(f"{rate:.3g} steps/s")
            if self._total:
                fields.append(f"eta {_clock((self._total - self._step) / rate)}")
        return " · ".join(fields)
