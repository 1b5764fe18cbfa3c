"""Run directories: round trips, atomic code saves, resuming with the same settings and refusing others."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from jukebox_cli import __version__
from jukebox_cli.engine.errors import ConfigError, OutputDiskFull, OutputExistsError
from jukebox_cli.engine.sampling.runs import RUN_FORMAT_VERSION, Run

SETTINGS = {
    "model": "5b_lyrics",
    "artist": "Alan Jackson",
    "genre": "Country",
    "lyrics": "old town road\nline two",
    "seed": 1234,
    "temperature": [0.99, 0.99, 0.98],
    "sample_length": 881_920,
    "hop_fraction": (0.5, 0.5, 0.125),
    "top_k": 0,
    "top_p": 0.0,
    "fp16": True,
    "levels": {"chunk_size": 16, "max_batch_size": 3},
}


def _codes(n: int = 3, t: int = 100, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2048, (n, t), generator=torch.Generator().manual_seed(seed))


def test_create_then_open_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "song"
    run = Run.create(path, SETTINGS)
    assert run.path == path and (path / "run.json").is_file()
    opened = Run.open(path)
    expected = json.loads(json.dumps(SETTINGS))  # tuples read back as lists
    assert opened.settings == run.settings == expected
    assert opened.tool_version == __version__
    assert opened.state == {}


def test_run_json_is_human_readable(tmp_path: Path) -> None:
    Run.create(tmp_path / "run", SETTINGS)
    text = (tmp_path / "run" / "run.json").read_text(encoding="utf-8")
    assert "\n  " in text, "indented"
    record = json.loads(text)
    assert record["format"] == "jukebox-cli-run" and record["version"] == RUN_FORMAT_VERSION
    assert record["tool_version"] == __version__ and record["created"]
    assert record["settings"]["lyrics"] == "old town road\nline two"
    assert list(record)[:5] == ["format", "version", "tool_version", "created", "settings"]


def test_codes_round_trip_bit_identical(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    assert run.load_codes(2) == (None, 0, False)
    codes = _codes()
    codes[0, 0], codes[0, 1] = 0, 2047
    run.save_codes(2, codes, windows_done=3)
    loaded, windows_done, finished = Run.open(run.path).load_codes(2)
    assert loaded is not None and loaded.dtype == torch.int64
    assert torch.equal(loaded, codes) and (windows_done, finished) == (3, False)
    run.save_codes(2, codes.to(torch.int32), windows_done=4, finished=True)
    loaded, windows_done, finished = run.load_codes(2)
    assert torch.equal(loaded, codes) and (windows_done, finished) == (4, True)
    # The file's bytes depend on the codes only (a resumed run hashes as an uninterrupted one), and any
    # safetensors reader reads it.
    file = run.path / "level_2" / "codes.safetensors"
    first = file.read_bytes()
    for _ in range(5):
        run.save_codes(2, codes, windows_done=4, finished=True)
        assert file.read_bytes() == first
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        assert f.metadata()["windows_done"] == "4"
        assert (f.get_tensor("codes") == codes.numpy()).all()


def test_empty_codes_round_trip(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    run.save_codes(0, torch.zeros(4, 0, dtype=torch.long), windows_done=0)
    loaded, _, _ = run.load_codes(0)
    assert loaded is not None and loaded.shape == (4, 0)


def test_bad_codes_are_refused(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    for codes in (
        torch.zeros(3, 4),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(1, 2, 3, dtype=torch.long),
    ):
        with pytest.raises(ConfigError, match="integer"):
            run.save_codes(1, codes, windows_done=0)
    with pytest.raises(ConfigError):
        run.save_codes(1, _codes(), windows_done=-1)


def test_a_failing_write_leaves_the_previous_codes_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    before = _codes(seed=1)
    run.save_codes(1, before, windows_done=2)

    real_write_bytes = Path.write_bytes

    def half_write(self: Path, data: bytes) -> None:
        real_write_bytes(self, b"\x00" * 17)  # half a header, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_write)
    with pytest.raises(OutputDiskFull, match="disk is full"):
        run.save_codes(1, _codes(seed=2, t=200), windows_done=3)
    monkeypatch.undo()

    loaded, windows_done, finished = run.load_codes(1)
    assert torch.equal(loaded, before) and (windows_done, finished) == (2, False)
    assert [p.name for p in (run.path / "level_1").iterdir()] == ["codes.safetensors"], (
        "no temporary file left"
    )


def test_resume_with_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "run"
    run, resumed = Run.create_or_resume(path, SETTINGS)
    assert not resumed
    run.save_codes(2, _codes(), windows_done=5)
    run.update(level=2, seconds={"2": 12.5})

    again, resumed = Run.create_or_resume(path, dict(SETTINGS))
    assert resumed
    assert torch.equal(again.load_codes(2)[0], _codes()) and again.load_codes(2)[1] == 5
    assert again.state == {"level": 2, "seconds": {"2": 12.5}}
    # force with identical settings still resumes: a fresh run would give the same codes.
    assert Run.create_or_resume(path, SETTINGS, force=True)[1]


def test_resume_with_different_settings_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "run"
    run, _ = Run.create_or_resume(path, SETTINGS)
    run.save_codes(2, _codes(), windows_done=1)
    changed = {**SETTINGS, "temperature": [0.99, 0.99, 0.97]}
    with pytest.raises(
        ConfigError, match=r"resuming with different settings: temperature \[0.99, 0.99, 0.97\]"
    ):
        Run.create_or_resume(path, changed)
    with pytest.raises(ConfigError, match=r"levels.chunk_size 32 != 16"):
        Run.create_or_resume(path, {**SETTINGS, "levels": {"chunk_size": 32, "max_batch_size": 3}})
    with pytest.raises(ConfigError, match=r"extra 1 != <missing>, seed <missing> != 1234"):
        Run.create_or_resume(path, {**{k: v for k, v in SETTINGS.items() if k != "seed"}, "extra": 1})
    assert Run.open(path).load_codes(2)[1] == 1, "a refused resume touches nothing"

    run, resumed = Run.create_or_resume(path, changed, force=True)
    assert not resumed and run.settings["temperature"] == [0.99, 0.99, 0.97]
    assert run.load_codes(2) == (None, 0, False), "force starts over"
    assert not (path / "level_2").exists()


def test_float_settings_are_compared_exactly(tmp_path: Path) -> None:
    path = tmp_path / "run"
    Run.create(path, {"temperature": 0.1 + 0.2, "top_p": 0.0})
    assert Run.create_or_resume(path, {"temperature": 0.1 + 0.2, "top_p": 0.0})[1], (
        "floats survive JSON exactly"
    )
    with pytest.raises(ConfigError, match=r"temperature 0.3 != 0.30000000000000004"):
        Run.create_or_resume(path, {"temperature": 0.3, "top_p": 0.0})
    # An integer-valued float equals the integer; a bool never equals a number.
    assert Run.create_or_resume(path, {"temperature": 0.1 + 0.2, "top_p": 0})[1]
    with pytest.raises(ConfigError, match="top_p"):
        Run.create_or_resume(path, {"temperature": 0.1 + 0.2, "top_p": False})


def test_create_refuses_existing_outputs(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="not a run directory"):
            Run.create(other, SETTINGS, force=force)
        with pytest.raises(OutputExistsError):
            Run.create_or_resume(other, SETTINGS, force=force)
    assert (other / "notes.txt").read_text() == "mine"

    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(OutputExistsError):
        Run.create(file, SETTINGS)

    empty = tmp_path / "empty"
    empty.mkdir()
    Run.create(empty, SETTINGS)  # an empty folder is fine

    with pytest.raises(OutputExistsError, match="already holds a run"):
        Run.create(empty, SETTINGS)


def test_force_clears_only_what_the_run_owns(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    run.save_codes(0, _codes(), windows_done=1)
    run.audio_path(0, 0).write_bytes(b"RIFF")
    (run.path / "README.txt").write_text("keep me")
    run.update(level=0)

    fresh = Run.create(run.path, {"model": "1b_lyrics"}, force=True)
    assert fresh.settings == {"model": "1b_lyrics"} and fresh.state == {}
    assert sorted(p.name for p in run.path.iterdir()) == ["README.txt", "run.json"]


def test_open_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        Run.open(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a run directory"):
        Run.open(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ConfigError, match="Cannot read"):
        Run.open(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": "something else", "version": 1}))
    with pytest.raises(ConfigError, match="not a jukebox-cli run"):
        Run.open(tmp_path)


def test_open_refuses_a_newer_format(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    record = json.loads((run.path / "run.json").read_text())
    record["version"] = RUN_FORMAT_VERSION + 1
    (run.path / "run.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="newer jukebox-cli"):
        Run.open(run.path)
    with pytest.raises(ConfigError, match="newer jukebox-cli"):
        Run.create_or_resume(run.path, SETTINGS)


def test_settings_must_be_plain_json(tmp_path: Path) -> None:
    for bad in ({"temperature": float("nan")}, {"device": torch.device("cpu")}):
        with pytest.raises(ConfigError, match="plain JSON"):
            Run.create(tmp_path / "run", bad)
    assert not (tmp_path / "run").exists()


def test_update_merges_into_state_atomically(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    run.update(level=2, timings={"2": 1.5})
    run.update(level=1)
    record = json.loads((run.path / "run.json").read_text())
    assert record["state"] == {"level": 1, "timings": {"2": 1.5}}
    assert record["settings"] == json.loads(json.dumps(SETTINGS))
    assert Run.open(run.path).state == record["state"]
    with pytest.raises(ConfigError):
        run.update(tensor=torch.zeros(1))
    assert Run.open(run.path).state == record["state"]
    assert [p.name for p in run.path.iterdir()] == ["run.json"]


def test_audio_paths_per_level_and_sample(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "run", SETTINGS)
    assert run.audio_path(2, 0) == run.path / "level_2" / "item_0.wav"
    assert run.audio_path(0, 11, ext="flac") == run.path / "level_0" / "item_11.flac"
    with pytest.raises(ConfigError):
        run.audio_path(-1, 0)
