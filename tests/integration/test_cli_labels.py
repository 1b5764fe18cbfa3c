"""``jukebox labels`` as a user runs it: tables, JSON, exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jukebox_cli.cli import labels as labels_cli
from jukebox_cli.engine.models.labels import Labeller, load_label_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(run_cli, monkeypatch):
    """``run_cli`` with ``labels`` registered on the real app (as app.py does), restored afterwards."""
    from jukebox_cli.cli.app import app

    if not any(command.name == "labels" for command in app.registered_commands):
        monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))
        app.command("labels")(labels_cli.labels)
    return run_cli


def _assert_clean_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error:") and fragment in first, result.stderr
    assert "Traceback" not in result.stderr


def test_search_artists_table(cli) -> None:
    result = cli("labels", "-m", "1b_lyrics", "--artists", "--search", "jackson")
    assert result.exit_code == 0, result.stderr
    assert "alan jackson" in result.stdout and "6785" in result.stdout
    assert "artists of 1b_lyrics (v3 ids)" in result.stdout
    assert "upsamplers use the v2 ids" in result.stdout


def test_search_is_accent_insensitive(cli) -> None:
    result = cli("labels", "-m", "1b_lyrics", "--artists", "-s", "celine dion")
    assert result.exit_code == 0, result.stderr
    assert "céline dion" in result.stdout and "5220" in result.stdout


def test_genres_json_parses(cli) -> None:
    result = cli("labels", "--genres", "--model", "5b", "--search", "rock", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["model"], data["label_set"], data["kind"], data["search"]) == ("5b", "v2", "genres", "rock")
    assert {"name": "rock", "id": 8} in data["items"]
    assert data["total"] == len(data["items"])


def test_json_limit_and_total(cli) -> None:
    result = cli("labels", "-m", "1b_lyrics", "--artists", "--json", "--limit", "3")
    data = json.loads(result.stdout)
    assert len(data["items"]) == 3
    assert data["total"] == len(load_label_set("v3").artists)
    everything = json.loads(cli("labels", "-m", "1b_lyrics", "--genres", "--json", "--limit", "0").stdout)
    assert len(everything["items"]) == everything["total"] == len(load_label_set("v3").genres)


def test_table_limit_caption(cli) -> None:
    result = cli("labels", "-m", "1b_lyrics", "--genres", "--limit", "5")
    assert result.exit_code == 0, result.stderr
    assert "showing 5 of 604" in result.stdout


def test_marked_genre_names_are_visible(cli) -> None:
    """The two "psychedelic rock" entries (one with a hidden U+200E) read the same, and a note tells them apart:
    which mark the second holds, which id the name typed as it looks gets, and how to type the other."""
    result = cli("labels", "-m", "1b_lyrics", "--genres", "-s", "psychedelic rock")
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "psychedelic rock" in line]
    assert [row.split("│")[1].strip() for row in rows[:2]] == ["psychedelic rock", "psychedelic rock"]
    note = " ".join(result.stdout.split())
    assert "U+200E LEFT-TO-RIGHT MARK" in note and "gives id 185" in note and "for id 7 type" in note
    assert "psychedelic rock\\u200e │" not in result.stdout  # no escape where the name is shown
    data = json.loads(cli("labels", "-m", "1b_lyrics", "--genres", "-s", "psychedelic rock", "--json").stdout)
    marked = {
        "name": "psychedelic rock\u200e",
        "id": 7,
        "hidden_marks": ["U+200E LEFT-TO-RIGHT MARK"],
        "typed_id": 185,
    }
    assert marked in data["items"] and {"name": "psychedelic rock", "id": 185} in data["items"]
    # What the note promises: the plain spelling gets the plain id, the marked one its own.
    labeller = Labeller("v3", max_genres=1, n_tokens=0)
    assert labeller.genre_ids("Psychedelic Rock") == [185] and labeller.genre_ids(
        "psychedelic rock\u200e"
    ) == [7]


def test_the_default_model_is_generate_s(cli) -> None:
    """One default model for every command: demo, whose genres are few, listed whole."""
    data = json.loads(cli("labels", "--genres", "--json").stdout)
    assert (data["model"], data["label_set"]) == ("demo", "custom")
    assert {item["name"] for item in data["items"]} == {
        "chiptune",
        "electronic",
        "orchestral",
        "rock",
        "unknown",
    }


def test_tiny_model(cli) -> None:
    data = json.loads(cli("labels", "--genres", "-m", "tiny-random", "--json").stdout)
    assert data["label_set"] == "tiny"
    assert {"name": "country", "id": load_label_set("tiny").genres["country"]} in data["items"]


def test_no_match(cli) -> None:
    result = cli("labels", "-m", "1b_lyrics", "--artists", "-s", "zzzzzzzz")
    assert result.exit_code == 0
    assert "no artists" in result.stdout
    assert (
        json.loads(cli("labels", "-m", "1b_lyrics", "--artists", "-s", "zzzzzzzz", "--json").stdout)["items"]
        == []
    )


@pytest.mark.parametrize("flags", [(), ("--artists", "--genres")])
def test_exactly_one_kind(cli, flags: tuple[str, ...]) -> None:
    _assert_clean_error(cli("labels", *flags), 2, "exactly one of --artists and --genres")


def test_unknown_model(cli) -> None:
    # The same reading of --model as every other command: an unknown name is exit code 3, with a suggestion.
    result = cli("labels", "--artists", "--model", "1b-lyrics")
    _assert_clean_error(result, 3, "no model of that name. Did you mean 1b_lyrics?")
    assert "1b_lyrics" in result.stderr and "5b_lyrics" in result.stderr


def test_bad_limit_is_a_usage_error(cli) -> None:
    assert cli("labels", "-m", "1b_lyrics", "--artists", "--limit", "-1").exit_code == 2


def test_labels_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from jukebox_cli.cli import labels\n"
        "from jukebox_cli.cli.app import app, main\n"
        "if not any(c.name == 'labels' for c in app.registered_commands):\n"
        "    app.command('labels')(labels.labels)\n"
        "for args in (['labels', '--help'], ['labels', '--genres', '-s', 'jazz']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "print('HEAVY', sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
