"""Progress events folded into a snapshot that a page can poll: which level, which window, how long to go.

The CLI renders events as they come (``cli/_progress.py``); a web page cannot: its browser asks now and then,
from another thread, what the run looks like. :class:`Tracker` is a progress callback that keeps that answer
up to date, and :meth:`Tracker.snapshot` returns it as plain, frozen values.

It reads the stage names the sampler emits (``sampling/level.py``, ``sampling/cascade.py``): ``"level L
windows"`` (the windows still to run at level L), ``"window K tokens"`` (K counted from 1 over the whole level,
so a resumed run's first window says where it started) and ``LevelDone(L)``. Like ``progress.py``, this module
must not import torch.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from jukebox_cli.engine.progress import Advanced, Event, LevelDone, StageFinished, StageStarted

PENDING, RUNNING, DONE = "pending", "running", "done"

_LEVEL_WINDOWS = re.compile(r"level (\d+) windows")
_WINDOW_TOKENS = re.compile(r"window (\d+) tokens")


@dataclass(frozen=True)
class LevelProgress:
    """One level of a job as last seen.

    ``windows_total`` counts the whole level (a resumed level included its finished windows); None until the
    level starts. ``tokens_done``/``tokens_total`` are those of the window being sampled.
    """

    level: int
    state: str = PENDING
    windows_done: int = 0
    windows_total: int | None = None
    tokens_done: int = 0
    tokens_total: int = 0
    eta: float | None = None  # seconds left in this level, once a first window has shown the pace

    def describe(self) -> str:
        """One line: ``level 1: window 3/8, 40% of its tokens, about 2 min left``."""
        if self.state == DONE:
            return f"level {self.level}: done"
        if self.state == PENDING or self.windows_total is None:
            return f"level {self.level}: waiting"
        line = f"level {self.level}: window {min(self.windows_done + 1, self.windows_total)}/{self.windows_total}"
        if self.tokens_total:
            line += f", {100 * self.tokens_done // self.tokens_total}% of its tokens"
        return line + (f", about {format_seconds(self.eta)} left" if self.eta is not None else "")


@dataclass(frozen=True)
class Snapshot:
    """A job's progress at one moment: its levels, top first, what it does besides sampling, and the ETA."""

    levels: tuple[LevelProgress, ...]
    activity: str  # the innermost stage that is neither a level nor a window ("lyric alignment", a download)
    elapsed: float
    eta: (
        float | None
    )  # seconds left in the whole job, when the pace (and the later levels' estimates) is known

    def describe(self) -> str:
        """Several lines: one per level, then what else runs, then the ETA."""
        lines = [level.describe() for level in self.levels]
        if self.activity:
            lines.append(self.activity)
        if self.eta is not None:
            lines.append(f"about {format_seconds(self.eta)} left in all")
        return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    """``12 s``, ``4 min``, ``1.5 h``: an ETA is a rough figure, shown as one."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class _Level:
    progress: LevelProgress
    started: float | None = None  # when this session's first window began (a resume's pace is its own)
    first_done: int = 0  # windows finished before this session started the level
    remaining: int | None = None  # windows the stage announced


class Tracker:
    """A progress callback that keeps a :class:`Snapshot` of a sampling job; safe to read from another thread.

    Args:
        levels: the levels the job samples, top first (known before it starts, so they show as waiting).
        expected: seconds each level is expected to take (``GenerationJob.estimate``); levels not yet started
            add theirs to the job's ETA. Without it the ETA covers the current level only.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        levels: Sequence[int] = (),
        *,
        expected: Mapping[int, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._start = clock()
        self._expected = dict(expected or {})
        self._levels: dict[int, _Level] = {lv: _Level(LevelProgress(lv)) for lv in levels}
        self._current: int | None = None
        self._other: list[str] = []  # open stages that are not levels or windows, innermost last
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, StageStarted):
                self._started(event)
            elif isinstance(event, Advanced):
                self._advanced(event)
            elif isinstance(event, StageFinished):
                self._finished(event)
            elif isinstance(event, LevelDone):
                level = self._level(event.level)
                level.progress = replace(level.progress, state=DONE, eta=0.0, tokens_done=0, tokens_total=0)
                self._current = None

    def _level(self, number: int) -> _Level:
        return self._levels.setdefault(number, _Level(LevelProgress(number)))

    def _started(self, event: StageStarted) -> None:
        if match := _LEVEL_WINDOWS.fullmatch(event.name):
            self._current = int(match[1])
            level = self._level(self._current)
            level.remaining = event.total
            level.progress = replace(level.progress, state=RUNNING)
        elif (match := _WINDOW_TOKENS.fullmatch(event.name)) and self._current is not None:
            level = self._level(self._current)
            if level.started is None:  # the first window of this session says how many came before
                level.started = self._clock()
                level.first_done = int(match[1]) - 1
                total = None if level.remaining is None else level.first_done + level.remaining
                level.progress = replace(level.progress, windows_done=level.first_done, windows_total=total)
            level.progress = replace(level.progress, tokens_done=0, tokens_total=event.total or 0)
        elif event.name != "levels":
            self._other.append(event.name)

    def _advanced(self, event: Advanced) -> None:
        if self._current is None:
            return
        level = self._level(self._current)
        if _LEVEL_WINDOWS.fullmatch(event.name):  # a finished window's tokens now count as the window
            done = level.progress.windows_done + event.n
            level.progress = replace(level.progress, windows_done=done, tokens_done=0, tokens_total=0)
        elif _WINDOW_TOKENS.fullmatch(event.name):
            level.progress = replace(level.progress, tokens_done=level.progress.tokens_done + event.n)

    def _finished(self, event: StageFinished) -> None:
        if event.name in self._other:
            self._other.remove(event.name)

    def _level_eta(self, level: _Level) -> float | None:
        """Seconds left in the level at the pace of the windows this session ran (tokens count pro rata)."""
        p = level.progress
        if level.started is None or not level.remaining:
            return None
        window_part = p.tokens_done / p.tokens_total if p.tokens_total else 0.0
        done = (p.windows_done - level.first_done + window_part) / level.remaining
        if done <= 0:
            return None
        elapsed = self._clock() - level.started
        return elapsed * (1 - done) / done

    def snapshot(self) -> Snapshot:
        """The job as it stands: levels top first, other activity, elapsed seconds and the ETA."""
        with self._lock:
            levels = tuple(
                replace(self._levels[lv].progress, eta=self._level_eta(self._levels[lv]))
                if self._levels[lv].progress.state == RUNNING
                else self._levels[lv].progress
                for lv in sorted(self._levels, reverse=True)
            )
            eta: float | None = 0.0
            for level in levels:
                if level.state == DONE:
                    continue
                if level.state == RUNNING:
                    eta = None if level.eta is None or eta is None else eta + level.eta
                elif level.level in self._expected and eta is not None:
                    eta += self._expected[level.level]
                else:
                    eta = None
            return Snapshot(levels, self._other[-1] if self._other else "", self._clock() - self._start, eta)
