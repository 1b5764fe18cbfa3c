"""`jukebox train` as a user runs it: tiny presets on a folder of synthetic songs, on the CPU, in seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tests.conftest import music_like

ROOT = Path(__file__).resolve().parents[2]
ARTISTS = ("alpha", "beta")
GENRES = ("rock", "jazz")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Six 3 s songs (22.05 kHz and 44.1 kHz, one stereo), a subfolder, metadata, and one bad file."""
    root = tmp_path / "songs"
    (root / "album").mkdir(parents=True)
    rows = ["path,artist,genre,lyrics"]
    for i in range(6):
        rate = 22050 if i % 2 else 44100
        name = f"album/song{i}.wav" if i < 3 else f"song{i}.flac"
        sf.write(root / name, music_like(3.0, rate, channels=1 + (i == 4), seed=i), rate)
        rows.append(f"{name},{ARTISTS[i % 2]},{GENRES[i // 3]},la la la")
    (root / "broken.mp3").write_bytes(b"not audio at all")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def _common(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    return ["--device", "cpu", "--quiet", "--cache-dir", str(tmp_path / "cache"), "-o", str(run), *extra]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from jukebox_cli.engine.train.report import read_scalars

    return read_scalars(run)


def _went_down(values: list[tuple[int, float]]) -> bool:
    first = sum(v for _, v in values[:3]) / 3
    last = sum(v for _, v in values[-3:]) / 3
    return last < first


def test_train_vqvae_then_use_it(corpus: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "vq"
    result = run_cli("train", "vqvae", corpus, "--preset", "tiny", "--steps", "40", "--batch-size", "4",
                     "--chunk-seconds", "0.2",
                     "--lr", "3e-3", "--warmup", "5", "--save-every", "20", "--eval-every", "20", "--log-every", "2",
                     "--json", *_common(tmp_path, run))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["step"] == 40 and summary["stopped"] == "done"
    assert (run / "vqvae.safetensors").is_file() and (run / "checkpoints" / "latest.pt").is_file()
    scalars = _scalars(run)
    named = {"loss", "recons_loss", "spectral_loss", "multispectral_loss", "spectral_convergence", "l1_loss",
             "l2_loss", "linf_loss", "commit_loss", "entropy", "usage", "used_curr", "recons_loss_l1",
             "recons_loss_l3", "spectral_convergence_l2", "lr", "grad_norm", "eval_loss",
             "eval_spectral_convergence"}  # fmt: skip
    assert named <= set(scalars), named - set(scalars)
    assert _went_down(scalars["loss"]), scalars["loss"]

    out = tmp_path / "recon"
    assert run_cli("reconstruct", corpus / "song3.flac", "-m", run, "-o", out, "-q").exit_code == 0
    assert (out / "level_0.wav").is_file()
    result = run_cli("train", "report", run)
    assert result.exit_code == 0 and Path(result.stdout.strip()).read_bytes()[:4] == b"\x89PNG"


def test_train_prior_and_upsampler_then_generate(corpus: Path, tmp_path: Path, run_cli) -> None:
    top = tmp_path / "top"
    result = run_cli("train", "prior", corpus, "--vqvae", "tiny", "--preset", "tiny", "--metadata",
                     corpus / "meta.csv", "--steps", "30", "--lr", "3e-3", "--warmup", "3", "--log-every", "2",
                     "--save-every", "30", "--eval-every", "30", *_common(tmp_path, top))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    scalars = _scalars(top)
    assert {"bpd", "gen_loss", "eval_bpd", "lr"} <= set(scalars)
    assert _went_down(scalars["bpd"]), scalars["bpd"]
    assert sorted(p.name for p in top.glob("*.safetensors")) == [
        "prior_level_2.safetensors",
        "vqvae.safetensors",
    ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_file = next((top / "logs").rglob("events.out.tfevents.*"))
    tags = EventAccumulator(str(event_file), size_guidance={"audio": 0, "images": 0}).Reload().Tags()
    assert {"sample_T1", "truth"} <= set(tags["audio"]) and "sample_T1_chroma" in tags["images"]

    up = tmp_path / "up"
    result = run_cli("train", "upsampler", corpus, "--vqvae", "tiny", "--level", "1", "--preset", "tiny",
                     "--steps", "4", "--save-every", "4", "--eval-every", "4", "--min-level-db", "-60",
                     "--trim-edges-db", "-50", "--label-dropout", "0.1", "--artist-dropout", "0.3",
                     *_common(tmp_path, up))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (up / "prior_level_1.safetensors").is_file()
    task = json.loads((up / "train.json").read_text())["task"]  # what a resume must repeat
    assert (task["min_level_db"], task["trim_edges_db"]) == (-60, -50)
    assert (task["label_dropout"], task["artist_dropout"]) == (0.1, 0.3)

    # The trained top prior knows the corpus' artists and genres.
    result = run_cli("labels", "--artists", "--model", top, "--json")
    assert result.exit_code == 0 and {i["name"] for i in json.loads(result.stdout)["items"]} >= set(ARTISTS)
    gen = tmp_path / "gen"
    result = run_cli("generate", "--model", top, "--levels", "2", "--artist", "beta", "--genre", "jazz",
                     "--duration", "1", "--device", "cpu", "--quiet", "-o", gen)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (gen / "level_2" / "item_0.wav").is_file()
    result = run_cli("generate", "--model", top, "--levels", "2", "--genre", "polka", "--duration", "1",
                     "--device", "cpu", "-o", tmp_path / "gen2")  # fmt: skip
    assert result.exit_code == 2 and "polka" in result.stderr


def test_fine_tune_adds_new_artists(corpus: Path, tmp_path: Path, run_cli) -> None:
    """Fine-tuning tiny-random's top prior (made-up v3-style labels) on a corpus with new artists."""
    run = tmp_path / "ft"
    result = run_cli("train", "prior", corpus, "--vqvae", "tiny-random", "--from", "tiny-random", "--metadata",
                     corpus / "meta.csv", "--steps", "3", "--save-every", "3", "--eval-every", "3",
                     *_common(tmp_path, run))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    from jukebox_cli.engine.weights.loading import load_bundle

    old = load_bundle("tiny-random").load_prior(2)
    new = load_bundle(run).load_prior(2)
    labels = new.config.labels
    assert (
        labels["artists"]["alpha"] >= old.config.n_artists
        and new.config.n_artists == old.config.n_artists + 2
    )
    rows = old.config.n_artists
    assert new.y_emb.artist_emb.emb.weight.shape[0] == rows + 2


def test_bad_training_input(tmp_path: Path, run_cli, corpus: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("train", "vqvae", empty, "--preset", "tiny", *_common(tmp_path, tmp_path / "r1"))
    assert result.exit_code == 8 and "No audio files" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "vqvae", tmp_path / "nope", *_common(tmp_path, tmp_path / "r2"))
    assert result.exit_code == 2 and "nope" in result.stderr
    bad_meta = tmp_path / "bad.csv"
    bad_meta.write_text("path,artist\nmissing.wav,x\n")
    result = run_cli("train", "prior", corpus, "--vqvae", "tiny", "--preset", "tiny", "--metadata", bad_meta,
                     *_common(tmp_path, tmp_path / "r3"))  # fmt: skip
    assert result.exit_code == 2 and "missing.wav" in result.stderr
    result = run_cli("train", "prior", corpus, "--vqvae", "tiny", "--from", "tiny-random", "--level", "2",
                     "--steps", "1", "--save-every", "1", "--eval-every", "1",
                     *_common(tmp_path, tmp_path / "r4"))  # fmt: skip
    assert result.exit_code == 0, (
        result.stderr
    )  # tiny-random's prior fits the tiny VQ-VAE: fine-tuning it is fine
    result = run_cli("train", "upsampler", corpus, "--vqvae", "tiny", *_common(tmp_path, tmp_path / "r5"))
    assert result.exit_code == 2 and "--level" in result.stderr

    # Resuming with a changed setting is refused and names it.
    run = tmp_path / "r6"
    base = [
        "train",
        "vqvae",
        corpus,
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--save-every",
        "2",
        "--eval-every",
        "2",
        "--chunk-seconds",
        "0.2",
    ]
    assert run_cli(*base, *_common(tmp_path, run)).exit_code == 0
    result = run_cli(*base, "--lr", "1e-2", "--resume", *_common(tmp_path, run))
    assert result.exit_code == 8 and "lr" in result.stderr
    result = run_cli(*base, *_common(tmp_path, run))
    assert result.exit_code == 8 and "--resume" in result.stderr


def _train_script(corpus: Path, tmp_path: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jukebox_cli", "train", "vqvae", str(corpus), "--preset", "tiny", "--steps",
            str(steps), "--batch-size", "2", "--chunk-seconds", "0.2", "--save-every", "5", "--eval-every", "1000", "--log-every", "5",
            "--logger", "none", *_common(tmp_path, run), *extra]  # fmt: skip


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["model"]


def _wait_for_first_checkpoint(proc: subprocess.Popen, run: Path, timeout: float = 120) -> None:
    """Until the training process has saved a checkpoint (or ended, or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "checkpoints" / "latest.pt").exists():
            return
        time.sleep(0.02)


def test_kill_9_then_resume_equals_an_uninterrupted_run(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(_train_script(corpus, tmp_path, whole, 30), env=env, cwd=ROOT, check=True, timeout=300)
    proc = subprocess.Popen(_train_script(corpus, tmp_path, broken, 30), env=env, cwd=ROOT)
    _wait_for_first_checkpoint(proc, broken)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_train_script(corpus, tmp_path, broken, 30, "--resume"), env=env, cwd=ROOT, check=True,
                   timeout=300)  # fmt: skip
    a, b = _final_weights(whole), _final_weights(broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_small_batches_get_a_codebook_note_and_a_threshold_option(
    run_cli, corpus: Path, tmp_path: Path
) -> None:
    args = ("train", "vqvae", corpus, "--preset", "tiny", "--steps", "2", "--batch-size", "1", "--chunk-seconds",
            "0.2", "--eval-every", "1000", "--logger", "none", "--device", "cpu")  # fmt: skip
    result = run_cli(*args, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.stderr
    assert "note: level 2:" in result.stderr and "--revival-threshold" in result.stderr
    result = run_cli(*args, "--revival-threshold", "0.01", "-o", tmp_path / "b")
    assert result.exit_code == 0 and "note:" not in result.stderr
    record = json.loads((tmp_path / "b" / "train.json").read_text())
    assert record["task"]["model"]["revival_threshold"] == 0.01
    # A resume with another threshold is a changed setting.
    result = run_cli(*args, "--resume", "-o", tmp_path / "b")
    assert result.exit_code == 8 and "revival_threshold" in result.stderr


def test_sigterm_saves_a_checkpoint_and_exits_130(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = tmp_path / "terminated"
    command = [arg for arg in _train_script(corpus, tmp_path, run, 100_000) if arg != "--quiet"]
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_first_checkpoint(proc, run)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    step = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["step"]
    assert 5 <= step < 100_000
    assert f"vqvae stopped at step {step:,} of 100,000. Resume with: jukebox train vqvae {corpus}" in out
    assert out.strip().endswith(" --resume")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(_free_port()), "-m", "jukebox_cli", "train", "vqvae", str(corpus), "--preset", "tiny",
               "--chunk-seconds", "0.2", "--steps",
               "6", "--batch-size", "2", "--save-every", "3", "--eval-every", "6", "--log-every", "1",
               *_common(tmp_path, run)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "vqvae.safetensors").is_file()
    assert len(list((run / "checkpoints").glob("*.pt"))) == 1
    assert len(list((run / "logs").rglob("events.out.tfevents.*"))) == 1, "only rank 0 logs"


def test_a_refused_start_writes_nothing(corpus: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "run"
    args = ("train", "vqvae", corpus, "--preset", "tiny", "--steps", "1", "--chunk-seconds", "0.2",
            "--eval-every", "1000", "--trim-edges-db", "-60", "--device", "cpu", "--cache-dir", tmp_path / "cache",
            "-o", run)  # fmt: skip
    first = run_cli(*args)
    assert first.exit_code == 0, first.stderr
    assert "data: 6 songs in" in first.stderr and "skipped" in first.stderr and "{" not in first.stderr
    assert "quiet edges (below -60 dBFS) trimmed from 0 songs, 0 s left out" in first.stderr
    before = sorted(p for p in run.rglob("*"))
    again = run_cli(*args)
    assert again.exit_code == 8 and "already holds a training run" in again.stderr
    assert sorted(p for p in run.rglob("*")) == before, "the refused run left a file behind"
    changed = run_cli(*args[:-2], "--lr", "1e-3", "--resume", "-o", run)  # a changed setting: refused too
    assert changed.exit_code == 8 and sorted(p for p in run.rglob("*")) == before


def test_two_process_fsdp_prior_then_generate(corpus: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "fsdp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(_free_port()), "-m", "jukebox_cli", "train", "prior", str(corpus), "--vqvae", "tiny",
               "--preset", "tiny", "--metadata", str(corpus / "meta.csv"), "--steps", "4", "--batch-size", "1",
               "--save-every", "2", "--eval-every", "4", "--strategy", "fsdp", "--checkpoint-acts",
               "--precision", "bf16", *_common(tmp_path, run)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.pt", "step-00000004.dcp"]
    # The export is the native layout a one-process run writes: `--model RUN` samples from it.
    assert sorted(p.name for p in run.glob("*.safetensors")) == [
        "prior_level_2.safetensors",
        "vqvae.safetensors",
    ]
    result = run_cli("generate", "--model", run, "--levels", "2", "--duration", "1", "--device", "cpu",
                     "--quiet", "-o", tmp_path / "gen")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "gen" / "level_2" / "item_0.wav").is_file()


def test_plan_flag_prints_the_plan_and_trains_nothing(corpus: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "planned"
    result = run_cli("train", "prior", corpus, "--vqvae", "tiny", "--preset", "tiny", "--plan",
                     "--checkpoint-acts", "--device", "cpu", "--cache-dir", tmp_path / "cache", "-o", run)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Training plan: prior on cpu" in result.stderr and "activation checkpointing on" in result.stderr
    assert not run.exists()
    result = run_cli("train", "prior", corpus, "--vqvae", "tiny", "--preset", "tiny", "--plan", "--strategy",
                     "fsdp", "--device", "cpu", "--cache-dir", tmp_path / "cache", "-o", run)  # fmt: skip
    assert result.exit_code == 2 and "--strategy fsdp needs several processes" in result.stderr
