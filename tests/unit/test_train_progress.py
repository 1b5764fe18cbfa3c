"""The training view: what survives a narrow terminal, what a log file gets, the expected duration."""

from __future__ import annotations

import io
import time

from rich.console import Console

from jukebox_cli.cli._progress import TrainProgress
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
