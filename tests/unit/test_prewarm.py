"""Compiling later levels' decode steps in worker processes while the first level samples (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jukebox_cli.engine.progress import StageFinished, StageStarted
from jukebox_cli.engine.sampling import cascade, prewarm
from jukebox_cli.engine.sampling.request import SampleMeta, build_request
from jukebox_cli.engine.weights.loading import tiny_random


class _Recorder:
    def __init__(self) -> None:
        self.started: dict[int, list[int]] = {}

    def start(self, level, config, batches, dtype) -> None:
        self.started[level] = batches


@pytest.mark.parametrize(
    ("decode", "finished", "expected"),
    [("compiled", (), {1: [2], 0: [2]}), ("compiled", (2,), {0: [2]}), ("eager", (), {}), ("auto", (), {})],
)
def test_only_levels_after_the_first_that_will_compile_are_prewarmed(decode, finished, expected) -> None:
    """The first level left has nothing to overlap a compile with; auto compiles only long levels (not these
    tiny ones); a finished level is not sampled at all."""
    bundle = tiny_random()
    request = build_request(bundle, model="tiny-random", samples=[SampleMeta("unknown", "unknown", "")] * 2,
                            duration=1.0)  # fmt: skip
    saved = {level: (None, 0, level in finished) for level in range(3)}
    recorder = _Recorder()
    cascade._start_compiles(recorder, bundle, request, {}, saved, decode, torch.float32)
    assert recorder.started == expected


def test_a_worker_fills_the_compile_cache(tmp_path: Path) -> None:
    """What the level will compile is in Inductor's on-disk cache once the worker is done."""
    config = tiny_random().prior_configs[0]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    spec = prewarm.json.dumps({"config": config.to_dict(), "batches": [1], "dtype": "fp32"})
    done = subprocess.run([sys.executable, "-m", prewarm.__name__, spec], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("compiled in ")
    assert any((tmp_path / "inductor").rglob("*.py")), "the compiled code is cached"


def test_waiting_shows_a_stage_and_a_failed_worker_costs_nothing_more(monkeypatch) -> None:
    events = []
    config = tiny_random().prior_configs[0]
    with prewarm.Prewarm(events.append) as workers:
        workers.start(0, config, [], torch.float32)  # no batch: builds the prior, compiles nothing
        workers.wait(0)
        workers.wait(1)  # a level without a worker does not wait
        monkeypatch.setattr(prewarm.sys, "executable", "/bin/false")
        workers.start(1, config, [1], torch.float32)
        workers.wait(1)
        workers.start(2, config, [1], torch.float32)
    assert [type(e) for e in events] == [StageStarted, StageFinished] * 2
    assert events[0].name == "level 0 compile"
    assert not workers._workers  # closed: the level-2 worker was stopped


def test_the_worker_builds_the_decoder_sample_level_builds() -> None:
    """Same preparation and shapes as sampling; run here without compiling (static mode) to stay quick."""
    for config in tiny_random().prior_configs.values():
        prewarm.compile_step(config, [1, 3], torch.float32, mode="static")
