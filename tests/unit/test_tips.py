"""Plan tips: only settings that make a job faster, and only where they apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from jukebox_cli.engine.sampling import generation
from jukebox_cli.engine.sampling.generation import prepare_generate


@pytest.mark.parametrize(("model", "dtype", "bf16_cpu", "tipped"), [
    ("5b", "auto", True, True),  # width 4800, float32 by default, on a CPU with native bf16
    ("5b", "auto", False, False),  # a CPU without it: bf16 would be emulated, slower
    ("5b", "fp32", True, False),  # the user chose the dtype
    ("demo", "auto", True, False),  # narrow priors are bound by overhead, not by bytes
])  # fmt: skip
def test_bf16_tip(model: str, dtype: str, bf16_cpu: bool, tipped: bool, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(generation, "cpu_computes_bf16", lambda: bf16_cpu)
    job = prepare_generate(model=model, genre="rock", duration=20, dtype=dtype, output=tmp_path / "run",
                           cache_dir=tmp_path / "cache")  # fmt: skip
    tips = job.tips("cpu")
    assert (tips != []) == tipped, tips
    assert all("--dtype bf16" in tip for tip in tips)
