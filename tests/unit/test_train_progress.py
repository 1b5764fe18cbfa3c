"""The training view: what survives a narrow terminal, what a log file gets, the expected duration."""

from __future__ import annotations

import io
import time

from rich.console import Console

from jukebox_cli.cli._progress import SmoothedRate, TrainProgress
from jukebox_cli.engine.progress import Advanced, StageFinished, StageStarted, TrainMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _console(*, terminal: bool, width: int = 80) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=width, color_system=None), out


def test_a_narrow_terminal_keeps_step_rate_and_eta() -> None:
    console, _ = _console(terminal=True, width=80)
    view = TrainProgress(console=console)
    view(StageStarted("train", 10_000, "step"))
    view(TrainMetrics(5, {"loss": 0.1234, "spectral_convergence": 0.5, "usage": 2048.0, "eval_loss": 0.2}))
    view(Advanced("train", 5))
    time.sleep(0.2)  # rich's own clock measures the rate
    view(Advanced("train", 5))
    rendered = io.StringIO()
    Console(file=rendered, width=80, color_system=None).print(view._progress.get_renderable())
    line = rendered.getvalue().splitlines()[0]
    assert len(line) <= 80
    for field in ("train", "10/10,000 step", "step/s", "eta"):
        assert field in line, line
    assert "━" not in line, "the bar gives its room to the fields at 80 columns"
    assert "-:--:--" not in line, "the ETA is known once two steps are timed"


def test_a_log_file_gets_a_plain_line_and_the_expected_duration() -> None:
    console, out = _console(terminal=False)
    clock = Clock()
    view = TrainProgress(console=console, device="cpu", every=30.0, clock=clock)
    with view:
        view(StageStarted("train", 1000, "step"))
        for step in range(1, 101):
            clock.now += 1.0  # one step per second
            view(TrainMetrics(step, {"loss": 1.0 / step}))
            view(Advanced("train"))
        view(StageFinished("train"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "expected: about 17 min more at 1 steps/s on cpu (996 steps left; --steps to shorten)"
    plain = [line for line in lines if line.startswith("step ")]
    assert len(plain) == 3  # at 30, 60 and 90 s
    assert plain[0] == "step 30/1,000 · loss 0.03333 · 1 steps/s · eta 0:16:10"


def test_a_resumed_run_says_where_it_resumed() -> None:
    for first, expected in ((250, ["resumed from step 250 of 1,000"]), (1, [])):
        console, out = _console(terminal=False)
        view = TrainProgress(console=console, clock=Clock())
        with view:
            view(StageStarted("train", 1000, "step"))
            view(Advanced("train", first))  # a resumed run's first event jumps to its step
            view(StageFinished("train"))
        assert [line for line in out.getvalue().splitlines() if "resumed" in line] == expected


def _paced(rate: SmoothedRate, seconds_per_step: list[float], now: float = 0.0) -> list[float]:
    """Feed one step per entry; the rate after each."""
    seen = []
    for seconds in seconds_per_step:
        now += seconds
        seen.append(rate.update(1, now))
    return seen


def test_the_rate_behind_the_eta_is_smoothed() -> None:
    rate = SmoothedRate(seconds=30.0, steps=20)
    assert rate.update(5, 0.0) is None, "the first call only starts the clock (warm-up is not counted)"
    assert _paced(rate, [1.0] * 40)[-1] == 1.0
    # One slow step (an evaluation taking 10 steps' time) moves the rate a little, not to a tenth.
    after_slow = _paced(rate, [10.0], now=40.0)[0]
    assert 0.7 < after_slow < 1.0
    # A lasting change of pace is followed: at half the pace the rate heads for 0.5 within a few spans.
    halved = _paced(rate, [2.0] * 60, now=50.0)
    assert all(a >= b for a, b in zip(halved, halved[1:], strict=False)) and abs(halved[-1] - 0.5) < 0.05


def test_fast_steps_are_averaged_over_seconds_and_same_tick_steps_still_count() -> None:
    rate = SmoothedRate(seconds=30.0, steps=20)
    rate.update(1, 0.0)
    _paced(rate, [0.01] * 3000)  # 100 steps/s for 30 s
    assert _paced(rate, [1.0], now=30.0)[0] > 90, "one slow step among thousands barely shows"
    before = rate.rate
    assert rate.update(100, 31.0) == before  # the same tick: its steps wait for the next call's time
    assert rate.update(0, 32.0) > before, "100 steps in the next second (not 0) keep the pace up"
