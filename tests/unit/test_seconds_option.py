"""Lengths of time as a user writes them on the command line."""

from __future__ import annotations

import math

import pytest
import typer

from jukebox_cli.cli._options import parse_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("10.5", 10.5), ("10s", 10.0), ("2m", 120.0), ("1m30s", 90.0),
     ("1:30", 90.0), ("1:02:03", 3723.0), ("0:07.5", 7.5), ("1h", 3600.0), (" 20S ", 20.0), ("-1", -1.0)],
)  # fmt: skip
def test_lengths_users_write(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


def test_nan_passes_for_the_engine_to_name() -> None:
    assert math.isnan(parse_seconds("nan"))


@pytest.mark.parametrize("text", ["", "s", "10x", "1:30x", "ten", "1::2", "m"])
def test_anything_else_is_a_usage_error(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not a length of time"):
        parse_seconds(text)
