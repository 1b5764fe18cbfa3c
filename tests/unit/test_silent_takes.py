"""The run summary warns about takes whose top level collapsed to near silence or to one repeated code."""

from __future__ import annotations

from pathlib import Path

import torch

from jukebox_cli.engine.sampling.cascade import silent_takes, write_level_audio
from jukebox_cli.engine.sampling.generation import prepare_generate
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.weights.loading import tiny_random


def test_a_stuck_take_is_named_and_a_varied_one_is_not(tmp_path: Path) -> None:
    bundle = tiny_random()
    run, _ = Run.create_or_resume(tmp_path / "run", {"model": "tiny-random"})
    top = bundle.top_level
    varied = torch.randint(
        0, bundle.prior_configs[top].codebook_size, (1, 200), generator=torch.Generator().manual_seed(0)
    )
    stuck = torch.full((1, 200), 7)
    write_level_audio(run, bundle, top, torch.cat([varied, stuck]))
    (line,) = silent_takes(run)
    assert line.startswith("take 1: its top level is near silent or stuck") and "code 7 makes up 100%" in line
    assert "try another --seed" in line
    write_level_audio(run, bundle, top - 1, torch.cat([varied, stuck]).repeat_interleave(4, dim=1))
    assert len(silent_takes(run)) == 1, "only the top level is judged"


def test_the_result_carries_the_warnings(tmp_path: Path) -> None:
    job = prepare_generate(
        "tiny-random", genre="rock", duration=1, samples=2, levels=[2], output=tmp_path / "r"
    )
    result = job.run(device="cpu", compile="off")
    checks = Run.open(tmp_path / "r").state["top_level_checks"]
    assert len(checks) == 2 and all(
        {"median_level_db", "dominant_share", "collapsed"} <= set(c) for c in checks
    )
    assert result.warnings == silent_takes(Run.open(tmp_path / "r"))
    assert result.to_dict()["warnings"] == result.warnings


def test_a_take_chosen_from_another_run_is_named_by_both_numbers(tmp_path: Path) -> None:
    """upsample --takes 0,2 makes take 2 the new run's take 1: the warning names both, and since the top level
    was not sampled there, it suggests another take, not another seed."""
    bundle = tiny_random()
    stuck = torch.full((2, 200), 7)
    for name, prompt, advice in (
        ("up", {"run": "runs/takes", "samples": [0, 2]}, "choose another take of runs/takes to upsample"),
        ("cont", {"run": "runs/takes", "seconds": 1.0, "takes": [0, 2]}, "try another --seed"),
    ):
        run, _ = Run.create_or_resume(tmp_path / name, {"model": "tiny-random", "prompt": prompt})
        write_level_audio(run, bundle, bundle.top_level, stuck)
        first, second = silent_takes(run)
        assert first.startswith("take 0: ") and first.endswith(advice)
        assert second.startswith("take 1 (take 2 of runs/takes): ") and second.endswith(advice)
