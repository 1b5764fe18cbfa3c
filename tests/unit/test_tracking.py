"""The tracker: progress events in, a snapshot of levels, windows and ETA out (a fake clock drives it)."""

from __future__ import annotations

import pytest

from jukebox_cli.engine.progress import Advanced, LevelDone, StageFinished, StageStarted
from jukebox_cli.engine.tracking import DONE, PENDING, RUNNING, Tracker, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _window(tracker: Tracker, clock: Clock, index: int, tokens: int, seconds: float) -> None:
    """One window of ``tokens`` tokens taking ``seconds``, as ``sampling/level.py`` reports it."""
    tracker(StageStarted(f"window {index} tokens", tokens, "token"))
    clock.now += seconds / 2
    tracker(Advanced(f"window {index} tokens", tokens // 2))
    clock.now += seconds / 2
    tracker(Advanced(f"window {index} tokens", tokens - tokens // 2))
    tracker(StageFinished(f"window {index} tokens"))


def test_levels_windows_and_eta_from_the_pace() -> None:
    clock = Clock()
    tracker = Tracker([2, 1], expected={1: 30.0}, clock=clock)
    first = tracker.snapshot()
    assert [(lv.level, lv.state) for lv in first.levels] == [(2, PENDING), (1, PENDING)]
    assert first.eta is None  # level 2 has no estimate and no pace yet
    tracker(StageStarted("levels", 2, "level"))
    tracker(StageStarted("level 2 windows", 4, "window"))
    _window(tracker, clock, 1, 64, 10.0)
    tracker(Advanced("level 2 windows"))
    top = tracker.snapshot().levels[0]
    assert (top.state, top.windows_done, top.windows_total, top.tokens_done) == (RUNNING, 1, 4, 0)
    assert top.eta == pytest.approx(30.0)  # three windows left at 10 s each
    assert tracker.snapshot().eta == pytest.approx(60.0)  # and level 1's estimate
    tracker(StageStarted("window 2 tokens", 64, "token"))
    clock.now += 5.0
    tracker(Advanced("window 2 tokens", 32))
    top = tracker.snapshot().levels[0]
    assert top.tokens_done == 32 and top.eta == pytest.approx(25.0)  # half a window counts half
    assert "level 2: window 2/4, 50% of its tokens" in tracker.snapshot().describe()
    tracker(LevelDone(2))
    assert tracker.snapshot().levels[0].state == DONE and tracker.snapshot().eta == pytest.approx(30.0)


def test_a_resumed_level_counts_its_earlier_windows_but_times_only_its_own() -> None:
    clock = Clock()
    tracker = Tracker([0], clock=clock)
    tracker(StageStarted("level 0 windows", 2, "window"))  # 2 windows left of 5: it resumes at window 4
    clock.now += 50.0  # loading the prior: not part of the pace
    _window(tracker, clock, 4, 32, 8.0)
    tracker(Advanced("level 0 windows"))
    level = tracker.snapshot().levels[0]
    assert (level.windows_done, level.windows_total) == (4, 5)
    assert level.eta == pytest.approx(8.0)  # one window left at the pace of this session's first


def test_other_stages_show_as_activity() -> None:
    tracker = Tracker([2])
    tracker(StageStarted("lyric alignment", 3, "window"))
    assert tracker.snapshot().activity == "lyric alignment"
    tracker(StageFinished("lyric alignment"))
    assert tracker.snapshot().activity == ""


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (4.2, 600, 9000)] == ["4 s", "10 min", "2.5 h"]
