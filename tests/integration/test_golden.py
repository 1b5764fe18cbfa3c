"""Fixed-seed runs give the codes, audio and metrics recorded before the engine was reorganised."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.golden import CASES, GOLDEN, fingerprint, run_case

RECORD = json.loads(GOLDEN.read_text())
SAME_MACHINE = RECORD["fingerprint"] == fingerprint()


def _close(a: float, b: float, rel: float = 1e-3, abs_: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_case(name: str, run_cli, tmp_path: Path) -> None:
    def cli(args: list[str]) -> int:
        result = run_cli(*args)
        assert result.exit_code == 0, result.stderr
        return result.exit_code

    got = run_case(name, tmp_path, cli)
    want = RECORD["cases"][name]
    assert got["codes"] == want["codes"]
    assert sorted(got["audio"]) == sorted(want["audio"])
    for file, expected in want["audio"].items():
        actual = got["audio"][file]
        assert (actual["rate"], actual["shape"]) == (expected["rate"], expected["shape"]), file
        if SAME_MACHINE:
            assert actual["sha256"] == expected["sha256"], file
        else:  # another instruction set may round the last bit of a float differently
            for key in ("rms", "mean_abs", "peak"):
                assert _close(actual[key], expected[key]), (file, key, actual[key], expected[key])
    assert sorted(got["alignments"]) == sorted(want["alignments"])
    for file, expected in want["alignments"].items():
        actual = got["alignments"][file]
        assert actual["rows"] == expected["rows"] and actual["words"] == expected["words"], file
        assert _close(actual["sum"], expected["sum"], rel=1e-4), file
    if want["metrics"] is None:
        assert got["metrics"] is None
    else:
        assert sorted(got["metrics"]) == sorted(want["metrics"])
        for level, expected in want["metrics"].items():
            for key, value in expected.items():
                actual = got["metrics"][level][key]
                if isinstance(value, float) and not SAME_MACHINE:
                    assert _close(actual, value), (level, key)
                else:
                    assert actual == value, (level, key)
