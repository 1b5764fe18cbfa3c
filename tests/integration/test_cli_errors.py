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
        (("generate", *TINY, "--duration", "-1"), "--duration must be above 0; got -1"),
        (("generate", *TINY, "--duration", "nan"), "--duration must be a finite number; got nan"),
        (("generate", *TINY, "--duration", "0"), "--duration must be above 0; got 0"),
        (("generate", *TINY, "--duration", "10x"), "'10x' is not a length of time (write seconds: 10, 10s"),
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


def _fail_writes(monkeypatch, code: int, root: Path) -> None:
    """Every atomic write under `root` fails as a full disk (ENOSPC) or a read-only folder (EROFS) would.

    Moving the finished temporary file into place is the one step every writer shares. Writes elsewhere
    go through: a fresh environment's first librosa call moves numba's cache files into site-packages.
    """
    import os

    replace = os.replace

    def refuse(src, dst, *args, **kwargs) -> None:
        if not Path(os.fspath(dst)).resolve().is_relative_to(root.resolve()):
            return replace(src, dst, *args, **kwargs)
        raise OSError(code, os.strerror(code), str(src))

    monkeypatch.setattr(os, "replace", refuse)


@pytest.mark.parametrize(
    ("command", "failure", "code", "fragment"),
    [
        ("generate", "ENOSPC", 3, "the disk is full"),
        ("generate", "EROFS", 4, "Read-only file system"),
        ("generate", "under-a-file", 4, "a-file is a file, not a folder"),
        ("analyze", "EROFS", 4, "Read-only file system"),
        ("analyze", "under-a-file", 4, "a-file is a file, not a folder"),
        ("reconstruct", "ENOSPC", 3, "the disk is full"),
    ],
)
def test_output_write_failures(
    run_cli, tmp_path: Path, song: Path, monkeypatch, command: str, failure: str, code: int, fragment: str
) -> None:
    import errno

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out" if failure == "under-a-file" else tmp_path / "out"
    if failure != "under-a-file":
        _fail_writes(monkeypatch, getattr(errno, failure), tmp_path)
    if command == "generate":
        args = ["generate", *TINY, "-o", out]
    elif command == "analyze":
        args = ["analyze", song, "-o", out.with_suffix(".png")]
    else:
        args = ["reconstruct", song, "--model", "tiny", "-q", "-o", out]
    result = run_cli(*args)
    errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
    assert result.exit_code == code, result.stderr
    assert len(errors) == 1 and fragment in errors[0] and "unexpected" not in errors[0], result.stderr
    assert "corrupt" not in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize("command", ["analyze", "reconstruct", "continue", "generate --prime"])
def test_unreadable_input_is_an_audio_error(
    run_cli, tmp_path: Path, song: Path, monkeypatch, command
) -> None:
    # chmod 000 does not stop root, so the refusal is simulated where the engine first opens the file.
    real_open = Path.open

    def refuse(self, *args, **kwargs):
        if self == song:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    out = tmp_path / "out"
    args = {
        "analyze": ["analyze", song, "-o", out.with_suffix(".png")],
        "reconstruct": ["reconstruct", song, "--model", "tiny", "-o", out],
        "continue": ["continue", song, *TINY, "--prompt-seconds", "1", "-o", out],
        "generate --prime": ["generate", *TINY, "--prime", song, "--prompt-seconds", "1", "-o", out],
    }[command]
    result = run_cli(*args)
    errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
    assert result.exit_code == 4, result.stderr
    assert errors == [f"error: Cannot read {song}: permission denied."], result.stderr
    assert "corrupt" not in result.stderr


def test_a_corrupt_mp3_is_one_decode_error_without_decoder_notes(capfd, tmp_path: Path) -> None:
    """mpg123 prints "Note: Illegal Audio-MPEG-Header ..." to file descriptor 2 from C, and libsndfile then
    says the file "does not exist": only our error (and its hint) may reach the terminal, saying it cannot be
    decoded."""
    import numpy as np
    import soundfile as sf

    from jukebox_cli.cli.app import main

    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    good = tmp_path / "good.mp3"
    sf.write(good, np.sin(np.arange(44100) / 10).astype(np.float32), 44100, format="MP3")
    junk = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(good.read_bytes()[:400] + junk)  # a valid first frame, then garbage
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(bad), "-o", str(tmp_path / "a.png")])
    err = capfd.readouterr().err
    lines = _error_lines(err)
    assert exit_.value.code == 4, err
    assert lines[0] == (
        f"error: Cannot decode {bad}: the decoder found no valid audio in it; the file is corrupt, truncated or "
        "not really a '.mp3' file."
    ), err
    assert len(lines) == 2 and not lines[1].startswith("error"), err  # the message and its hint, nothing else


@pytest.mark.parametrize("command", ["reconstruct", "reconstruct --force", "analyze", "analyze --force"])
def test_a_folder_where_an_output_file_goes_gets_no_force_hint(
    run_cli, tmp_path: Path, song: Path, command: str
) -> None:
    """--force replaces files, never a folder: the hint must not suggest it, with or without it given."""
    out = tmp_path / "out"
    if command.startswith("reconstruct"):
        (out / "level_2.wav").mkdir(parents=True)
        args = ["reconstruct", song, "-m", "tiny", "--levels", "2", "-o", out]
    else:
        (out / f"{song.stem}_analysis.png").mkdir(parents=True)
        args = ["analyze", song, "-o", f"{out}/"]
    result = run_cli(*args, *(["--force"] if command.endswith("--force") else []))
    lines = _error_lines(result.stderr)
    assert result.exit_code == 7, result.stderr
    assert lines[0].startswith("error: Cannot write") and lines[0].endswith("it is a directory."), (
        result.stderr
    )
    assert lines[1:] == ["--force does not replace a folder; choose another output with -o, or move it away."]


def test_the_engine_s_folder_refusal_maps_to_the_same_hint() -> None:
    from jukebox_cli.cli._errors import lookup
    from jukebox_cli.engine.errors import OutputExistsError, OutputIsFolder

    assert lookup(OutputIsFolder("x"))[1].startswith("--force does not replace a folder")
    assert lookup(OutputExistsError("x"))[1].startswith("Pass --force")


def test_a_config_that_is_not_json_is_a_checkpoint_error(run_cli, tmp_path: Path, song: Path) -> None:
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "vqvae.safetensors"
    save_file(
        {"x": torch.zeros(1)}, str(bad), metadata={"format": "jukebox-cli", "kind": "vqvae", "config": "{x"}
    )
    result = run_cli("reconstruct", song, "--model", bad, "-o", tmp_path / "out")
    errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
    assert result.exit_code == 3, result.stderr
    assert len(errors) == 1 and "unreadable 'config' metadata" in errors[0], result.stderr


@pytest.mark.parametrize("command", ["continue", "upsample"])
def test_codes_outside_the_named_models_codebook(run_cli, tmp_path: Path, command: str) -> None:
    import torch

    from jukebox_cli.engine.sampling.runs import Run

    run = tmp_path / "run"
    assert run_cli("generate", *TINY, "-o", run).exit_code == 0
    codes, windows, finished = Run.open(run).load_codes(2)
    Run.open(run).save_codes(2, torch.full_like(codes, 510), windows_done=windows, finished=finished)
    extra = ("--duration", "3") if command == "continue" else ()
    result = run_cli(command, run, *extra, "-q", "--device", "cpu", "-o", tmp_path / "out")
    errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
    assert result.exit_code == 2, result.stderr
    assert len(errors) == 1 and "codes run up to 510, but tiny-random has 64 codes" in errors[0], (
        result.stderr
    )


def test_a_run_with_truncated_codes_is_refused_then_forced_over(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_cli("generate", *TINY, "-o", run).exit_code == 0
    codes = run / "level_2" / "codes.safetensors"
    for args in (("generate", *TINY, "-o", run), ("generate", "--resume", run, "-q")):
        codes.write_bytes(codes.read_bytes()[:100])
        result = run_cli(*args)
        errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
        assert result.exit_code == 7, result.stderr
        assert len(errors) == 1 and "re-run with --force to start the run over" in errors[0], result.stderr
        assert run_cli(*args, "--force").exit_code == 0
        assert run_cli(*args).exit_code == 0, "the run is whole again"


@pytest.mark.parametrize("name", ["one-sample", "silent"])
def test_library_warnings_stay_off_stderr(run_cli, tmp_path: Path, name: str, recwarn) -> None:
    import numpy as np
    import soundfile as sf

    path = tmp_path / f"{name}.wav"
    sf.write(
        path, np.full(1, 0.5, np.float32) if name == "one-sample" else np.zeros(22050, np.float32), 22050
    )
    result = run_cli("analyze", path, "-o", tmp_path / "a.png")
    assert result.exit_code == 0, result.stderr
    assert "Warning" not in result.stderr and result.stderr.strip() == "", result.stderr
    # pytest records warnings instead of printing them: what escaped would have reached stderr.
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--device", "cpu:7"), 5, "Device 'cpu:7' does not exist: the CPU is one device"),
        (("--model", "owner/name@../../x"), 2, "the revision '../../x' looks like a path"),
    ],
)
def test_a_device_or_revision_that_names_nothing_real(
    run_cli, tmp_path: Path, args, code: int, fragment: str
) -> None:
    result = run_cli("generate", *TINY, *args, "-o", tmp_path / "out")
    errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
    assert result.exit_code == code, result.stderr
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["generate", "train"])
def test_a_folder_another_process_is_writing_is_refused_untouched(
    run_cli, tmp_path: Path, song: Path, command: str
) -> None:
    from tests.conftest import held_by_another_process

    out = tmp_path / "out"
    if command == "generate":
        args = ("generate", *TINY, "-o", out)
    else:
        data = tmp_path / "songs"
        data.mkdir()
        song.rename(data / song.name)
        args = ("train", "vqvae", data, "--preset", "tiny", "--steps", "1", "--batch-size", "1",
                "--chunk-seconds", "0.2", "--device", "cpu", "-q", "--cache-dir", tmp_path / "cache", "-o", out)  # fmt: skip
    with held_by_another_process(out) as other:
        result = run_cli(*args)
        errors = [line for line in _error_lines(result.stderr) if line.startswith("error:")]
        assert result.exit_code == 9, result.stderr
        assert len(errors) == 1 and f"is in use by another jukebox process (pid {other.pid})" in errors[0]
        assert [p.name for p in out.iterdir()] == [".jukebox.lock"], "nothing of the refused run is written"
    assert run_cli(*args).exit_code == 0, "free again once the other process is gone (killed)"


def test_an_unknown_model_points_at_where_model_is_explained(run_cli, tmp_path: Path) -> None:
    result = run_cli("generate", "--model", "nosuch", "--genre", "rock", "-o", tmp_path / "out")
    assert result.exit_code == 3
    lines = result.stderr.splitlines()  # no empty line above the error (as analyze's errors have none)
    assert lines[0].startswith("error: No file or folder at nosuch, and no model of that name.")
    assert lines[1:] == [
        "`jukebox models list` shows the models; `jukebox generate --help` explains --model."
    ]
    assert "--model" in run_cli("generate", "--help").stdout


@pytest.mark.parametrize("case", ["not-a-run", "other-duration", "edited-model", "pickle-model"])
def test_messages_and_hints_say_what_can_actually_fix_it(
    run_cli, tmp_path: Path, song: Path, case: str
) -> None:
    """Each failure names the option and values a user can act on, and nothing that would not help."""
    import pickle

    run = tmp_path / "run"
    if case == "not-a-run":
        run.mkdir()
        (run / "notes.txt").write_text("mine")
        args, code = ("generate", *TINY, "-o", run), 7
        expected = ["is not empty and is not a run directory", "--force replaces only a run"]
    elif case == "pickle-model":
        model = tmp_path / "model.pth"
        model.write_bytes(pickle.dumps({"model": Path("x")}))
        args, code, expected = (
            ("reconstruct", song, "--model", model, "-o", tmp_path / "out"),
            3,
            ["unpickling a file can run any code", "save its tensors with safetensors"],
        )
    else:
        assert run_cli("generate", *TINY, "-o", run).exit_code == 0
        if case == "other-duration":
            args, code = ("generate", *TINY, "--duration", "3", "-o", run), 7
            expected = ["--duration: this run has 2.00 s, you asked for 3.00 s", "another -o, or --force"]
        else:
            record = (run / "run.json").read_text()
            (run / "run.json").write_text(record.replace('"model": "tiny-random"', '"model": "demo"', 1))
            args, code = ("generate", "--resume", "-o", run, "-q"), 2
            expected = [
                "its run.json asks for settings its model 'demo' cannot honour",
                "Was run.json edited",
            ]
    result = run_cli(*args)
    assert result.exit_code == code, result.stderr
    assert result.stderr.lstrip().startswith("error: ") and "Warning" not in result.stderr, result.stderr
    for fragment in expected:
        assert fragment in " ".join(result.stderr.split()), result.stderr
    assert "Pass --force" not in result.stderr, result.stderr
    if case == "edited-model":  # no option of --resume can change the song's length
        assert "--total-duration" not in result.stderr, result.stderr


def test_resume_refuses_an_option_that_differs_from_the_run(run_cli, tmp_path: Path) -> None:
    """--resume keeps the run's settings: one given that differs is refused like without --resume; one given
    equal, or left out (its default differs from the run's), is no conflict."""
    run = tmp_path / "run"
    assert run_cli("generate", *TINY, "--genre", "rock", "--seed", "3", "-o", run).exit_code == 0
    resume = ("generate", "--resume", "-o", run, "-q", "--device", "cpu")
    result = run_cli(*resume, "--genre", "chiptune")
    assert result.exit_code == 7, result.stderr
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert '--genre: this run has "rock", you asked for "chiptune"' in " ".join(result.stderr.split())
    result = run_cli(*resume, "--duration", "3")
    assert result.exit_code == 7 and "--duration: this run has 2.00 s, you asked for 3.00 s" in " ".join(
        result.stderr.split()
    )
    assert run_cli(*resume, "--genre", "rock", "--duration", "2", "--seed", "3").exit_code == 0
