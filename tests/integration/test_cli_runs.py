"""``jukebox runs``: listing run folders and showing one (tiny-random runs; broken folders are notes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from jukebox_cli.engine.sampling.runs import Run

COMMON = ("--model", "tiny-random", "--device", "cpu", "--quiet")


def test_runs_lists_finished_resumable_and_skips_the_rest(run_cli, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert (
        run_cli(
            "generate", *COMMON, "--duration", "1", "--levels", "2,1", "-n", "2", "-o", root / "a"
        ).exit_code
        == 0
    )
    # A run stopped in level 1: its codes say how far it got, and a listing reads only their header.
    assert (
        run_cli(
            "generate", *COMMON, "--duration", "1", "--levels", "2,1", "-o", root / "group" / "b"
        ).exit_code
        == 0
    )
    stopped = Run.open(root / "group" / "b")
    codes, windows, finished = stopped.load_codes(1)
    assert finished and windows > 3
    # Where an uninterrupted run stood after two windows: n_ctx codes, then one window advance more.
    prior = stopped.state["model"]["priors"]["1"]
    after_two = prior["n_ctx"] + int(stopped.settings["hop_fraction"]["1"] * prior["n_ctx"])
    stopped.save_codes(1, codes[:, :after_two], windows_done=2)
    (root / "junk").mkdir()
    (root / "junk" / "run.json").write_text("{not json")
    (root / "notes").mkdir()  # an ordinary folder: passed over in silence

    result = run_cli("runs", root)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "skipped" in result.stderr and "junk" in result.stderr
    assert "notes" not in result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if "tiny-random" in line}
    assert set(rows) == {"a", "group/b"}
    assert "finished" in rows["a"] and "2/2" in rows["a"]
    assert f"resumable at level 1 window 3 of {windows}" in rows["group/b"] and "1/2" in rows["group/b"]

    listed = json.loads(run_cli("runs", root, "--json").stdout)
    assert [Path(r["path"]).name for r in listed["runs"]] == ["a", "b"]
    assert listed["runs"][0]["samples"] == 2 and abs(listed["runs"][0]["seconds"] - 1.0) < 0.01
    assert [Path(s["path"]).name for s in listed["skipped"]] == ["junk"]

    one = run_cli("runs", root / "group" / "b")
    assert one.exit_code == 0 and "resumable at level 1 window 3" in one.stdout
    assert "resume with: jukebox generate --resume -o" in one.stdout and "level_2/" in one.stdout
    detail = json.loads(run_cli("runs", root / "a", "--json").stdout)
    assert [lv["level"] for lv in detail["levels"]] == [2, 1]
    assert detail["levels"][1]["windows_total"] == detail["levels"][1]["windows_done"] == windows
    assert f"2/{windows}" in one.stdout  # the level table: windows done of the whole plan
    assert len(detail["levels"][1]["audio"]) == 2 and detail["audio"]["format"] == "wav"
    # The song's length reads in seconds, not in samples at the model's rate.
    song = json.loads(run_cli("runs", root / "group" / "b", "--json").stdout)
    total = next(line for line in one.stdout.splitlines() if "total_length" in line)
    assert f"{song['song_seconds']:.1f} s" in total and str(song["settings"]["total_length"]) not in total
    assert run_cli("runs", tmp_path / "missing").exit_code == 2


def test_runs_shows_every_folder_name_whole_at_80_columns(run_cli, tmp_path: Path, monkeypatch) -> None:
    """A long folder name wraps in its column; nothing is cut with an ellipsis."""
    root = tmp_path / "runs"
    assert run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-o", root / "a").exit_code == 0
    long_name = "group/" + "a-long-run-folder-name-that-a-user-pastes-into-the-next-command-" * 2 + "seed7"
    shutil.copytree(root / "a", root / long_name)
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli("runs", root)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("folder"))
    model_at = lines[header].index("model")
    folder_column = "".join(line[:model_at].strip() for line in lines[header + 1 :])
    assert long_name in folder_column and folder_column.startswith("a")
    assert "…" not in result.stdout and max(map(len, lines)) <= 80


def test_analyze_a_run_draws_every_level_of_every_take(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        run_cli("generate", *COMMON, "--duration", "1", "--levels", "2,1", "-n", "2", "-o", run).exit_code
        == 0
    )
    result = run_cli("analyze", run, "-o", tmp_path / "fig.png", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted((f["level"], f["take"]) for f in data["files"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert data["status"] == "finished" and (tmp_path / "fig.png").stat().st_size > 0

    from jukebox_cli.engine.sampling.run_analysis import analyze_run

    events = []
    figure = analyze_run(run, 22050, progress=events.append).figure()
    # One bar for the whole run, in seconds of audio: 4 files of 1 s each.
    assert [type(e).__name__ for e in (events[0], events[-1])] == ["StageStarted", "StageFinished"]
    assert events[0].total == 4 and sum(e.n for e in events[1:-1]) == 4
    titles = [ax.get_title(loc="left") for ax in figure.axes if ax.get_title(loc="left")]
    assert titles == ["level 2, take 0", "level 2, take 1", "level 1, take 0", "level 1, take 1"]


def test_no_runs_folder_yet_is_a_first_look_not_an_error(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("runs")
    assert result.exit_code == 0 and "no runs yet" in result.stderr
    assert json.loads(run_cli("runs", "--json").stdout) == {"runs": [], "skipped": []}
    result = run_cli("runs", "elsewhere")  # a folder the user named is still checked
    assert result.exit_code == 2 and "does not exist" in result.stderr
