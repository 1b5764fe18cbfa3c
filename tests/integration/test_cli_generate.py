"""The sampling cascade as a user runs it: generate, resume after Ctrl-C, continue, upsample (tiny-random)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from tests.conftest import music_like

SR = 22050  # tiny-random's rate
HOPS = {2: 128, 1: 32, 0: 8}
COMMON = ("--model", "tiny-random", "--device", "cpu", "--quiet")


def _codes(run: Path, level: int) -> torch.Tensor:
    return load_file(run / f"level_{level}" / "codes.safetensors")["codes"]


def _expected_samples(seconds: float) -> int:
    return int(seconds * SR) // 128 * 128


def test_generate_writes_every_level(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli("generate", *COMMON, "--genre", "rock", "--duration", "1", "--samples", "2", "-o", run)
    assert result.exit_code == 0, result.stderr
    length = _expected_samples(1.0)
    for level, hop in HOPS.items():
        codes = _codes(run, level)
        assert codes.shape == (2, length // hop) and codes.min() >= 0 and codes.max() < 64
        for item in range(2):
            audio, rate = sf.read(run / f"level_{level}" / f"item_{item}.wav")
            assert rate == SR and len(audio) == length
    record = json.loads((run / "run.json").read_text())
    assert record["settings"]["seed"] == 0 and record["settings"]["samples"][0]["genre"] == "rock"


def test_same_seed_same_codes_other_seed_differs(run_cli, tmp_path: Path) -> None:
    args = (*COMMON, "--duration", "1", "--levels", "2")
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert run_cli("generate", *args, "--seed", seed, "-o", tmp_path / name).exit_code == 0
    assert torch.equal(_codes(tmp_path / "a", 2), _codes(tmp_path / "b", 2))
    assert not torch.equal(_codes(tmp_path / "a", 2), _codes(tmp_path / "c", 2))


def test_interrupted_run_resumes_bit_identically(run_cli, tmp_path: Path, monkeypatch) -> None:
    args = (*COMMON, "--duration", "1", "--samples", "2", "--seed", "5")
    reference = tmp_path / "reference"
    assert run_cli("generate", *args, "-o", reference).exit_code == 0

    import jukebox_cli.engine.sampling.level as sampling

    real = sampling.sample_window
    calls = {"n": 0}

    def interrupt_midway(prior, *a, **k):
        calls["n"] += prior.config.level == 1
        if calls["n"] == 2:  # the second window of level 1
            raise KeyboardInterrupt
        return real(prior, *a, **k)

    monkeypatch.setattr(sampling, "sample_window", interrupt_midway)
    run = tmp_path / "run"
    assert run_cli("generate", *args, "-o", run).exit_code == 130
    saved = load_file(run / "level_2" / "codes.safetensors")
    assert saved["codes"].shape[1] == _expected_samples(1.0) // 128, "finished levels stay saved"
    assert (run / "level_2" / "item_0.wav").exists(), "top-level audio is written before upsampling"
    assert load_file(run / "level_1" / "codes.safetensors")["codes"].shape[1] < _expected_samples(1.0) // 32
    assert not (run / "level_0").exists()
    monkeypatch.setattr(sampling, "sample_window", real)
    result = run_cli("generate", *args, "-o", run)  # the same command resumes
    assert result.exit_code == 0, result.stderr
    for level in HOPS:
        assert torch.equal(_codes(run, level), _codes(reference, level))
    assert run_cli("generate", "--resume", "-o", run, "--quiet", "--device", "cpu").exit_code == 0


def test_changed_settings_are_refused(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-o", run).exit_code == 0
    result = run_cli(
        "generate", *COMMON, "--duration", "1", "--levels", "2", "--temperature", "0.5", "-o", run
    )
    assert result.exit_code == 7 and "different settings" in result.stderr and "temperature" in result.stderr
    # --resume with the run's own values, spelt otherwise: its song length (raised to the model's shortest,
    # not a whole number of codes) is not re-rounded into a refusal.
    result = run_cli("generate", "--resume", "-o", run, "--seed", "0", "--temperature", "0.990", "-q")
    assert result.exit_code == 0, result.stderr


def test_upsample_keeps_every_top_level_code(run_cli, tmp_path: Path) -> None:
    """184 codes read as seconds (184 * 128 / 22050) and back give 183: the last one must not be lost."""
    run, seconds = tmp_path / "run", 184 * 128 / 22050
    assert (
        run_cli("generate", *COMMON, "--duration", seconds + 1e-4, "--levels", "2", "-o", run).exit_code == 0
    )
    assert _codes(run, 2).shape[1] == 184
    result = run_cli("upsample", run, "--device", "cpu", "--quiet", "-o", tmp_path / "up")
    assert result.exit_code == 0, result.stderr
    assert _codes(tmp_path / "up", 1).shape[1] == 184 * 4 and _codes(tmp_path / "up", 0).shape[1] == 184 * 16


def test_refusals_come_before_the_plan_and_a_resumed_plan_counts_saved_codes(run_cli, tmp_path: Path) -> None:
    """The plan and its time probe take seconds to minutes: a folder that would be refused is refused first.
    Resuming, the plan shows what is saved and only what is left to sample."""
    run = tmp_path / "run"
    loud = ("--model", "tiny-random", "--device", "cpu", "--duration", "1", "--levels", "2,1")
    assert run_cli("generate", *loud, "--quiet", "-o", run).exit_code == 0
    result = run_cli("generate", *loud, "--seed", "3", "-o", run)
    assert result.exit_code == 7 and "different settings" in result.stderr
    assert "Plan" not in result.stderr
    from jukebox_cli.engine.sampling.generation import prepare_resume

    job = prepare_resume(run)
    for plan in job.plan("cpu"):
        assert plan.existing_codes == plan.total_codes and plan.new_tokens == 0 and plan.windows == 0
    result = run_cli("generate", *loud, "-o", run)
    assert result.exit_code == 0, result.stderr
    assert "resuming" in result.stderr
    rows = [line.split() for line in result.stderr.splitlines() if line.strip()[:1] in ("1", "2")]
    assert rows and all(row[2] == row[1] and row[4] == "0" for row in rows), result.stderr


def test_continue_says_what_it_keeps_and_what_is_new(run_cli, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(3.0, 44100), 44100)
    args = ("--model", "tiny-random", "--device", "cpu", "--levels", "2", "--duration", "2", "--dry-run")
    result = run_cli("continue", song, *args, "--prompt-seconds", "0.5", "-o", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    assert "prompt: 0.5 s of song.wav from 2.5 s; 1.5 s new, 2.0 s in all; genre unknown, artist unknown" in (
        result.stderr
    )


def test_continuing_a_run_names_its_own_labels(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    labels = ("--genre", "rock", "--artist", "null pointer")
    assert (
        run_cli(
            "generate", *COMMON, *labels, "--duration", "1", "--levels", "2", "-n", "2", "-o", run
        ).exit_code
        == 0
    )
    args = ("--device", "cpu", "--levels", "2", "--duration", "1.5", "--dry-run")
    result = run_cli("continue", run, *args, "-o", tmp_path / "longer")
    assert result.exit_code == 0, result.stderr
    assert (
        f"prompt: 1.0 s of {run}; 0.5 s new, 1.5 s in all; genre rock, artist null pointer" in result.stderr
    )
    result = run_cli("continue", run, *args, "--genre", "classical", "-o", tmp_path / "other")
    assert "; genre classical, artist null pointer" in result.stderr


def test_continue_from_audio_keeps_the_prompt(run_cli, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(2.0, 44100), 44100)
    run = tmp_path / "cont"
    result = run_cli("continue", song, *COMMON, "--prompt-seconds", "0.5", "--prompt-start", "0", "--duration", "1.2",
                     "-o", run)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    from jukebox_cli.engine.audio.io import load_audio
    from jukebox_cli.engine.weights.loading import load_bundle

    vqvae = load_bundle("tiny-random").vqvae
    prompt = torch.from_numpy(load_audio(song, SR))[None, : _expected_samples(0.5)]
    for level, hop in HOPS.items():
        codes = _codes(run, level)
        assert codes.shape[1] == _expected_samples(1.2) // hop
        assert torch.equal(codes[:, : prompt.shape[1] // hop], vqvae.encode_level(prompt, level))


def test_co_composition_extend_then_upsample(run_cli, tmp_path: Path) -> None:
    takes = tmp_path / "takes"
    assert (
        run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-n", "3", "-o", takes).exit_code
        == 0
    )
    longer = tmp_path / "longer"
    result = run_cli("continue", takes, *COMMON, "--levels", "2", "--duration", "1.5", "-o", longer)
    assert result.exit_code == 0, result.stderr
    assert torch.equal(_codes(longer, 2)[:, : _codes(takes, 2).shape[1]], _codes(takes, 2))
    final = tmp_path / "final"
    result = run_cli("upsample", longer, "--takes", "0,7", "--device", "cpu", "--quiet", "-o", final)
    assert result.exit_code == 2 and "has takes 0..2; chosen take(s) 7 do not exist" in result.stderr
    assert not final.exists()
    result = run_cli("upsample", longer, "--takes", "0,2", "--device", "cpu", "--quiet", "-o", final)
    assert result.exit_code == 0, result.stderr
    assert torch.equal(_codes(final, 2), _codes(longer, 2)[[0, 2]])
    assert _codes(final, 0).shape == (2, _expected_samples(1.5) // 8)
    assert sorted(p.name for p in (final / "level_0").glob("*.wav")) == ["item_0.wav", "item_1.wav"]


def test_continue_chosen_takes(run_cli, tmp_path: Path) -> None:
    """--takes extends only the chosen takes, in the order given, and records the choice; a take the run does
    not have is one line and exit 2, before anything is written."""
    takes = tmp_path / "takes"
    assert (
        run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-n", "3", "-o", takes).exit_code
        == 0
    )
    longer = tmp_path / "longer"
    args = ("--levels", "2", "--duration", "1.5", "--seed", "4")
    result = run_cli("continue", takes, *COMMON, *args, "--takes", "2,0", "-o", longer)
    assert result.exit_code == 0, result.stderr
    kept = _codes(takes, 2)
    assert torch.equal(_codes(longer, 2)[:, : kept.shape[1]], kept[[2, 0]])
    assert _codes(longer, 2).shape == (2, _expected_samples(1.5) // 128)
    assert json.loads((longer / "run.json").read_text())["settings"]["prompt"]["takes"] == [2, 0]
    # Take i of the result is what continuing take takes[i] alone gives: each take draws from its own stream.
    alone = tmp_path / "alone"
    assert run_cli("continue", takes, *COMMON, *args, "--takes", "2", "-o", alone).exit_code == 0
    assert torch.equal(_codes(alone, 2)[0, kept.shape[1] :], _codes(longer, 2)[0, kept.shape[1] :])
    for bad in ("3", "x", "0,-1"):
        out = tmp_path / f"bad{bad}"
        result = run_cli("continue", takes, *COMMON, *args, "--takes", bad, "-o", out)
        assert result.exit_code == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert not out.exists()
    result = run_cli("continue", takes, *COMMON, *args, "--takes", "3", "-o", tmp_path / "y")
    assert "takes 0..2; chosen take(s) 3 do not exist" in result.stderr


def test_dry_run_prints_the_plan(run_cli, tmp_path: Path) -> None:
    result = run_cli(
        "generate", "--model", "tiny-random", "--duration", "2", "--dry-run", "--json", "-o", tmp_path / "r"
    )
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert [p["level"] for p in plan] == [2, 1, 0]
    assert plan[2]["total_codes"] == _expected_samples(2.0) // 8
    assert not (tmp_path / "r").exists()


def test_the_plan_says_its_time_is_for_idle_cores_when_they_are_busy(
    run_cli, tmp_path: Path, monkeypatch
) -> None:
    import jukebox_cli.engine.devices as devices

    args = ("generate", "--model", "tiny-random", "--device", "cpu", "--duration", "1", "--levels", "2",
            "--dry-run", "-o", tmp_path / "r")  # fmt: skip
    monkeypatch.setattr(devices, "busy_cpu", lambda: (3.2, 2))
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert (
        "the expected time is for idle cores" in result.stderr
        and "(load average 3.2 on 2 cores)" in result.stderr
    )
    monkeypatch.setattr(devices, "busy_cpu", lambda: None)
    assert "idle cores" not in run_cli(*args).stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--genre", "polka"), 2, "polka"),
        (("--model", "5b_lyrics"), 2, "needs at least 5.94 s"),  # checked before any download
        (("--model", "5b_lyrics", "--duration", "20", "-q"), 3, "offline mode is on"),
        (("--levels", "1,0"), 2, "top level"),
        (("--duration", "0.2"), 2, "upsampler needs at least"),
        (("--temperature", "0.9,0.9"), 2, "one per sampled level"),
        (("--lyrics", "a", "--lyrics-file", "x.txt"), 2, "not both"),
    ],
)
def test_bad_input(run_cli, tmp_path: Path, args, code: int, fragment: str) -> None:
    base = {"--model": "tiny-random", "--duration": "1"}
    merged = list(args)
    for key, value in base.items():
        if key not in args:
            merged += [key, value]
    result = run_cli("generate", *merged, "--device", "cpu", "-o", tmp_path / "run")
    assert result.exit_code == code, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_primed_generate_and_per_level_batches(run_cli, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(1.0, 22050), 22050)
    run = tmp_path / "primed"
    result = run_cli("generate", *COMMON, "--prime", song, "--prompt-seconds", "0.3", "--duration", "1",
                     "-n", "3", "--max-batch-size", "2,2,3", "-o", run)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    top = _codes(run, 2)
    assert top.shape == (3, _expected_samples(1.0) // 128)
    prompt_codes = _expected_samples(0.3) // 128
    assert torch.equal(top[0, :prompt_codes], top[2, :prompt_codes]), "every take starts from the same prompt"
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert settings["max_batch_size"] == {"2": 2, "1": 2, "0": 3}
    assert settings["prompt"] == {"file": str(song), "seconds": 0.3}


def test_each_take_is_its_own_whatever_the_batching(run_cli, tmp_path: Path) -> None:
    """Each sample draws from its own stream: one batch, three batches and one take alone agree."""
    args = (*COMMON, "--genre", "rock", "--duration", "1", "--seed", "11")
    for name, extra in {
        "auto": ("-n", "3"),
        "ones": ("-n", "3", "--max-batch-size", "1"),
        "one": ("-n", "1"),
    }.items():
        assert run_cli("generate", *args, *extra, "-o", tmp_path / name).exit_code == 0
    state = json.loads((tmp_path / "auto" / "run.json").read_text())["state"]
    assert state["batch_sizes"] == {"2": 3, "1": 3, "0": 3}  # auto: all three fit in memory
    for level in (2, 1, 0):
        together = _codes(tmp_path / "auto", level)
        assert torch.equal(_codes(tmp_path / "ones", level), together)
        assert torch.equal(_codes(tmp_path / "one", level)[0], together[0])
        assert not torch.equal(together[0], together[1])


def test_an_unknown_label_names_the_model_and_one_that_knows_it(run_cli, tmp_path: Path) -> None:
    result = run_cli("generate", "--genre", "country", "--artist", "zac brown band", "--duration", "3", "-q",
                     "-o", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith("error: demo: unknown artist 'zac brown band'"), line
    assert line.endswith("1b_lyrics knows it: add --model 1b_lyrics."), line
    assert not (tmp_path / "run").exists()


def test_an_audio_prompt_is_the_end_of_the_song_unless_told(run_cli, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(4.0, 22050), 22050)
    prompt_codes = _expected_samples(1.0) // 128
    runs = {}
    for name, extra in {
        "end": (),
        "start": ("--prompt-start", "0"),
        "three": ("--prompt-start", "3"),
    }.items():
        run = tmp_path / name
        result = run_cli("continue", song, *COMMON, "--prompt-seconds", "1", "--duration", "2", "--levels", "2",
                         *extra, "-o", run)  # fmt: skip
        assert result.exit_code == 0, result.stderr
        runs[name] = _codes(run, 2)[:, :prompt_codes]
    assert torch.equal(runs["end"], runs["three"])  # the last second of a 4 s song starts at 3 s
    assert not torch.equal(runs["end"], runs["start"])
    prompt = json.loads((tmp_path / "end" / "run.json").read_text())["settings"]["prompt"]
    assert prompt == {"file": str(song), "seconds": 1.0, "start": 3.0}
    result = run_cli("continue", song, *COMMON, "--prompt-seconds", "1", "--prompt-start", "3.5", "-o",
                     tmp_path / "bad")  # fmt: skip
    assert result.exit_code == 2 and "--prompt-start must be between 0 and 3.00" in result.stderr


def test_continue_bad_input(run_cli, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(1.0, 22050), 22050)
    out = tmp_path / "out"
    result = run_cli("continue", song, *COMMON, "--prompt-seconds", "2", "--duration", "1.5", "-o", out)
    assert result.exit_code == 2 and "must be shorter than --duration" in result.stderr
    result = run_cli("continue", song, *COMMON, "--prompt-seconds", "0.001", "--duration", "1", "-o", out)
    assert result.exit_code == 6 and "shorter than one top-level code" in result.stderr
    result = run_cli("continue", song, *COMMON, "--prompt-seconds", "1.2", "--duration", "2", "-o", out)
    assert result.exit_code == 6 and "shorter than the 1.2 s prompt" in result.stderr
    assert not out.exists()
    takes = tmp_path / "takes"
    assert run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-o", takes).exit_code == 0
    result = run_cli("continue", takes, "--model", "1b_lyrics", "--duration", "2", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "was made with model 'tiny-random'" in result.stderr
    assert not (tmp_path / "x").exists()


def test_out_of_memory_names_the_flag_to_lower(run_cli, tmp_path: Path, monkeypatch) -> None:
    import jukebox_cli.engine.sampling.cascade as generate

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(generate, "sample_level", out_of_memory)
    result = run_cli("generate", *COMMON, "--duration", "1", "-o", tmp_path / "run")
    assert result.exit_code == 5
    assert "--max-batch-size" in result.stderr and "Traceback" not in result.stderr


def test_resume_keeps_the_prompt_of_continue_and_upsample(run_cli, tmp_path: Path, monkeypatch) -> None:
    """Runs interrupted before their first window resume from the run folder alone (--resume)."""
    takes = tmp_path / "takes"
    assert (
        run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-n", "2", "-o", takes).exit_code
        == 0
    )
    cont_args = ("continue", takes, *COMMON, "--levels", "2", "--duration", "1.5")
    assert run_cli(*cont_args, "-o", tmp_path / "reference").exit_code == 0

    import jukebox_cli.engine.sampling.level as sampling

    real = sampling.sample_window

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sampling, "sample_window", interrupt)
    assert run_cli(*cont_args, "-o", tmp_path / "cont").exit_code == 130
    assert run_cli("upsample", takes, "--device", "cpu", "--quiet", "-o", tmp_path / "up").exit_code == 130
    monkeypatch.setattr(sampling, "sample_window", real)

    assert (
        run_cli("generate", "--resume", "-o", tmp_path / "cont", "--device", "cpu", "--quiet").exit_code == 0
    )
    assert torch.equal(_codes(tmp_path / "cont", 2), _codes(tmp_path / "reference", 2))
    assert run_cli("generate", "--resume", "-o", tmp_path / "up", "--device", "cpu", "--quiet").exit_code == 0
    assert torch.equal(_codes(tmp_path / "up", 2), _codes(takes, 2))
    assert _codes(tmp_path / "up", 0).shape == (2, _expected_samples(1.0) // 8)
    assert (tmp_path / "up" / "level_2" / "item_1.wav").exists()


def test_lyrics_models_write_a_lyric_alignment(run_cli, tmp_path: Path) -> None:
    lyrics = "la la land, sing along"
    args = (*COMMON, "--genre", "rock", "--duration", "1", "--levels", "2", "--lyrics", lyrics, "--json")
    run = tmp_path / "run"
    result = run_cli("generate", *args, "--samples", "2", "-o", run)
    assert result.exit_code == 0, result.stderr
    files = [run / "level_2" / f"item_{i}.alignment.json" for i in range(2)]
    assert json.loads(result.stdout)["alignments"] == [str(f) for f in files]
    record = json.loads(files[0].read_text())
    assert record["lyrics"] == lyrics
    sung = iter(lyrics.split())  # the attended words, in the order of the lyrics
    assert record["words"] and all(w["text"] in sung for w in record["words"])
    matrix = np.array(record["matrix"])
    rows = _expected_samples(1.0) / SR / record["seconds_per_row"]
    assert matrix.shape[0] == int(rows) and 0 < matrix.max() <= 1
    assert record["first_char"] + matrix.shape[1] <= len(lyrics)
    for i in range(2):
        assert (run / "level_2" / f"item_{i}.alignment.png").read_bytes()[:4] == b"\x89PNG"
    # Lost (or asked for later): the same command writes it again from the saved codes, identically.
    before, codes = files[1].read_text(), (run / "level_2" / "codes.safetensors").stat().st_mtime_ns
    files[1].unlink()
    assert run_cli("generate", *args, "--samples", "2", "-o", run).exit_code == 0
    assert files[1].read_text() == before
    assert (run / "level_2" / "codes.safetensors").stat().st_mtime_ns == codes

    plain = tmp_path / "plain"
    result = run_cli("generate", *args, "--no-alignment", "-o", plain)
    assert result.exit_code == 0 and json.loads(result.stdout)["alignments"] == []
    assert not list(plain.rglob("*.alignment.*"))
    no_lyrics = tmp_path / "no-lyrics"
    assert run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-o", no_lyrics).exit_code == 0
    assert not list(no_lyrics.rglob("*.alignment.*"))


@pytest.mark.parametrize(("choice", "mode"), [("on", "compiled"), ("off", "eager"), ("auto", "auto")])
def test_compile_option_reaches_the_sampler(run_cli, tmp_path: Path, monkeypatch, choice, mode) -> None:
    import jukebox_cli.engine.sampling.generation as generation

    seen = {}

    def fake_cascade(bundle, run, request, **kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(generation, "run_cascade", fake_cascade)
    result = run_cli("generate", *COMMON, "--duration", "1", "--compile", choice, "-o", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    assert seen["decode"] == mode and seen["device"].type == "cpu"


def test_lyrics_are_cut_to_what_the_model_can_be_shown(tmp_path: Path) -> None:
    from jukebox_cli.engine import prepare_generate

    huge = "la love night fire " * 60_000  # about a megabyte: it once took 20 GB and a 464 MB alignment
    job = prepare_generate("tiny-random", lyrics=huge, duration=2, levels=[2], output=tmp_path / "run")
    cut = [w for w in job.warnings if w.startswith("lyrics cut to ")]
    assert cut == [
        "lyrics cut to 128 characters: the model sees at most 8 per window, and 16 windows cover the 2.00 s "
        "song (a longer --total-duration shows more)."
    ], job.warnings
    assert job.request.samples[0].lyrics == huge[:128], "the start is kept, as written, and run.json holds it"
    result = job.run(device="cpu", compile="off")
    (alignment,) = result.alignments
    assert len(json.loads(alignment.read_text())["lyrics"]) == 128
    assert alignment.stat().st_size < 100_000 and (tmp_path / "run" / "run.json").stat().st_size < 5_000


def test_each_level_is_announced_when_it_is_written(run_cli, tmp_path: Path, monkeypatch) -> None:
    import jukebox_cli.engine.sampling.level as sampling

    real = sampling.sample_window

    def mark_upsampling(prior, *a, **k):
        if prior.config.level == 1:
            sys.stderr.write("<upsampling level 1>\n")
        return real(prior, *a, **k)

    monkeypatch.setattr(sampling, "sample_window", mark_upsampling)
    run = tmp_path / "run"
    result = run_cli("generate", "--model", "tiny-random", "--device", "cpu", "--duration", "1", "-o", run)
    assert result.exit_code == 0, result.stderr
    ready = result.stderr.index(f"level 2 ready: 1 sample(s) in {run / 'level_2'}/")
    assert ready < result.stderr.index("<upsampling level 1>"), "the top level is announced before upsampling"
    assert "level 0 ready" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("done in ") and last.endswith(f"final audio in {run / 'level_0' / 'item_0.wav'}")
    top = tmp_path / "top"
    result = run_cli("generate", *COMMON[:-1], "--duration", "1", "--levels", "2", "-n", "2", "-o", top)
    *_, said, command = result.stderr.strip().splitlines()  # the command to copy has a line of its own
    assert f"level-2 audio in {top / 'level_2'}/ (2 takes); upsample" in said
    assert command.startswith(f"jukebox upsample {top}")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_with_the_command_to_resume(tmp_path: Path, signum: int, code: int) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    run = tmp_path / "run"
    command = [sys.executable, "-m", "jukebox_cli", "generate", "--model", "tiny-random", "--device", "cpu",
               "--levels", "2", "--duration", "8", "-o", str(run)]  # fmt: skip
    proc = subprocess.Popen(
        command, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if (run / "level_2" / "codes.safetensors").exists():  # the first window is saved
            break
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    lines = err.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("stopped:"))
    # The prose wraps at the terminal's width; the command to copy has a line of its own.
    assert " ".join(lines[at:-1]) == f"stopped: {run} is saved up to its last finished window; resume with:"
    assert lines[-1] == f"jukebox generate --resume -o {run}"
    resumed = subprocess.run([sys.executable, "-m", "jukebox_cli", "generate", "--resume", "-o", str(run), "--quiet",
                              "--device", "cpu"], env=env, cwd=root, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _codes(run, 2).shape[1] == _expected_samples(8.0) // 128


@pytest.mark.parametrize("phase", ["loading", "time probe", "time probe of a saved run"])
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"]
)
def test_a_signal_before_sampling_says_so(
    run_cli, tmp_path: Path, monkeypatch, phase: str, signum: int, code: int
) -> None:
    import jukebox_cli.engine.sampling.generation as generation

    run = tmp_path / "run"
    if phase == "time probe of a saved run":
        assert run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-o", run).exit_code == 0

    def interrupt(*args, **kwargs):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        # Python's default would end pytest itself: only signal when the command has taken SIGTERM over.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode, long before this ends

    if phase == "loading":
        monkeypatch.setattr(generation, "_bundle", interrupt)
    else:
        monkeypatch.setattr(generation.GenerationJob, "estimate", interrupt)
    # Not --quiet: the plan, and so its time probe, is shown.
    result = run_cli("generate", "--model", "tiny-random", "--device", "cpu", "--duration", "1", "--levels", "2",
                     "-o", run)  # fmt: skip
    assert result.exit_code == code and "Traceback" not in result.stderr
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back
    stopped = [line for line in result.stderr.splitlines() if line.startswith("stopped")]
    if phase == "time probe of a saved run":
        assert result.stderr.splitlines()[-2:] == [
            f"stopped: {run} is saved up to its last finished window; resume with:",
            f"jukebox generate --resume -o {run}",
        ]
    else:
        assert stopped == ["stopped before sampling; nothing was written"] and not run.exists()


def test_run_audio_format_is_chosen_recorded_and_changed_on_resume(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = (*COMMON, "--duration", "1", "--levels", "2,1", "-o", run)
    assert run_cli("generate", *args, "--format", "flac", "--bit-depth", "24").exit_code == 0
    assert sf.info(run / "level_1" / "item_0.flac").subtype == "PCM_24"
    assert not list(run.glob("level_*/*.wav"))
    state = json.loads((run / "run.json").read_text())["state"]
    assert state["audio"] == {"format": "flac", "subtype": "PCM_24"}
    # Not a setting: a resume may change it (finished levels are rewritten), and keeps the format unless told.
    assert (
        run_cli(
            "generate", "--resume", "-o", run, "--device", "cpu", "--quiet", "--bit-depth", "16"
        ).exit_code
        == 0
    )
    assert sf.info(run / "level_2" / "item_0.flac").subtype == "PCM_16"
    result = run_cli("generate", *args, "--format", "flac", "--bit-depth", "float", "-o", tmp_path / "bad")
    assert result.exit_code == 2 and "flac" in result.stderr and not (tmp_path / "bad").exists()


def test_each_flag_means_one_thing_and_old_spellings_still_work(run_cli, tmp_path: Path) -> None:
    takes = tmp_path / "takes"
    assert (
        run_cli("generate", *COMMON, "--duration", "1", "--levels", "2", "-n", "3", "-o", takes).exit_code
        == 0
    )
    new = run_cli("upsample", takes, "--takes", "2", "--device", "cpu", "--quiet", "-o", tmp_path / "new")
    old = run_cli("upsample", takes, "--samples", "2", "--device", "cpu", "--quiet", "-o", tmp_path / "old")
    assert new.exit_code == old.exit_code == 0, old.stderr
    assert "--takes" in old.stderr and "note:" in old.stderr and "note:" not in new.stderr
    assert torch.equal(_codes(tmp_path / "new", 0), _codes(tmp_path / "old", 0))
    assert "--samples" not in run_cli("upsample", "--help").stdout
    # --resume is a switch in every command (train's too): the run is the one in -o.
    assert run_cli("generate", "--resume", "-o", takes, "--device", "cpu", "--quiet").exit_code == 0
    legacy = run_cli("generate", "--resume", takes, "--device", "cpu", "--quiet")
    assert legacy.exit_code == 0 and "--resume -o RUN" in legacy.stderr
    assert run_cli("generate", "--resume", "--quiet").exit_code == 2
    assert run_cli("generate", *COMMON, "stray", "-o", tmp_path / "x").exit_code == 2


def test_prepare_upsample_still_takes_the_old_keyword(tmp_path: Path) -> None:
    from jukebox_cli.engine.sampling.generation import prepare_generate, prepare_upsample

    run = prepare_generate("tiny-random", duration=1, samples=2, levels=[2], output=tmp_path / "r").run(
        device="cpu"
    )
    with pytest.warns(DeprecationWarning, match="takes="):
        job = prepare_upsample(run.run, samples=[1], output=tmp_path / "u")
    assert job.request.prompt == {"run": str(run.run), "samples": [1]}


def test_prose_wraps_at_80_columns_and_commands_stay_whole(run_cli, tmp_path: Path, monkeypatch) -> None:
    """On an 80-column terminal our sentences (the plan's footer, notes, the summary, errors) wrap at word
    boundaries instead of being cut mid-word; the command to copy stays whole on a line of its own."""
    import jukebox_cli.cli._say as say
    import jukebox_cli.engine.devices as devices

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(say, "wraps", lambda console: True)  # as on a terminal (a pipe keeps lines whole)
    monkeypatch.setattr(devices, "busy_cpu", lambda: (5.0, 2))  # the busy-cores note, whatever the load
    run = tmp_path / "run"
    result = run_cli("generate", "--model", "tiny-random", "--device", "cpu", "--duration", "1", "--levels", "2",
                     "-o", run)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "the expected time is for idle cores" in result.stderr and "codes: per take" in result.stderr
    prose = [line for line in lines if not line.startswith("jukebox ")]  # a command is copied, not read
    assert all(len(line) <= 80 for line in prose), [line for line in prose if len(line) > 80]
    words = {word for line in lines for word in line.split()}
    for word in ("per", "take;", "already", "decode", "counted)", "longer", "upsample", "like"):
        assert word in words, word  # whole words, not halves of one cut at the edge
    assert lines[-1] == f"jukebox upsample {run} --takes N,..."
    assert lines[-2].endswith("; upsample the takes you like with:")

    error = run_cli("generate", "--model", "tiny-random", "--device", "cpu", "--duration", "3", "--levels", "2",
                    "-o", run)  # fmt: skip
    assert error.exit_code == 7
    assert len(error.stderr.splitlines()) > 1 and all(len(line) <= 80 for line in error.stderr.splitlines())
    assert "--duration: this run has" in " ".join(error.stderr.split())
