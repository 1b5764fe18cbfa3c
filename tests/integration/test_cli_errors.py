"""Every failure prints one red line (and at most a hint) with the exit code the README documents."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = ("--model", "tiny-random", "--duration", "2", "--levels", "2", "-q", "--device", "cpu")


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("generate", *TINY, "--duration", "-1"), "--duration must be at least 0; got -1"),
        (("generate", *TINY, "--duration", "nan"), "--duration must be a finite number; got nan"),
        (("generate", *TINY, "--top-p", "2"), "--top-p must be between 0 and 1; got 2"),
        (("generate", *TINY, "--samples", "0"), "'--samples' / '-n'"),
        (("generate", *TINY, "--chunk-size", "0"), "'--chunk-size'"),
        (("generate", *TINY, "--top-k", "-3"), "'--top-k'"),
        (("generate", *TINY, "--temperature", "nan"), "--temperature must be finite numbers"),
        (("generate", *TINY, "--no-such-option"), "No such option: --no-such-option"),
        (("continue", "x.wav", "--duration", "nan"), "--duration must be a finite number"),
        (("reconstruct", "x.wav", "--format", "mp3"), "'mp3' is not one of 'wav', 'flac'"),
        (("reconstruct", "x.wav", "--bit-depth", "8"), "'8' is not one of '16', '24', 'float'"),
        (("reconstruct",), "Missing argument"),
    ],
)
def test_bad_option_values_are_one_line(run_cli, tmp_path: Path, args, fragment: str) -> None:
    result = run_cli(*args, "-o", tmp_path / "out") if args != ("reconstruct",) else run_cli(*args)
    lines = _error_lines(result.stderr)
    assert result.exit_code == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_and_after_the_command(run_cli, tmp_path: Path, where: str) -> None:
    args = ["generate", *TINY, "--genre", "polka", "-o", tmp_path / "run"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(Exception, match="polka"):  # --debug lets the error through, traceback and all
        run_cli(*args)
