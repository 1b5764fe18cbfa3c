"""``jukebox generate`` end to end on CUDA, in a fresh process as a user runs it (``python -m jukebox_cli``).

Checks what a user gets: exit status 0, one WAV per sample and level at the model's rate and the requested
length, finite audio that is neither silent nor clipped, and the run folder recording the CUDA device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

DEVICE = os.environ.get("JUKEBOX_GPU_TEST_DEVICE", "cuda")  # "cpu": check these tests without a GPU
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ROOT = Path(__file__).resolve().parents[2]


def _generate(tmp_path: Path, *args: str) -> tuple[Path, dict]:
    run = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    result = subprocess.run(
        [sys.executable, "-m", "jukebox_cli", "generate", "--device", DEVICE, "--quiet", "--json", "-o", str(run),
         *args],
        capture_output=True, text=True, timeout=140, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run, json.loads(result.stdout)


def _check_audio(run: Path, summary: dict, samples: int, seconds: float) -> None:
    rate = summary["sample_rate"]
    length = int(seconds * rate) // 128 * 128
    for level, hop in ((2, 128), (1, 32), (0, 8)):
        assert summary["codes"][str(level)] == [samples, length // hop]
        for item in range(samples):
            audio, file_rate = sf.read(run / f"level_{level}" / f"item_{item}.wav", dtype="float32")
            assert file_rate == rate and audio.shape == (length,), (level, item, audio.shape)
            assert np.isfinite(audio).all()
            peak, rms = float(np.abs(audio).max()), float(np.sqrt(np.mean(np.square(audio))))
            assert peak <= 1.0 and rms > 1e-3, (level, item, peak, rms)  # neither clipped nor silent
    record = json.loads((run / "run.json").read_text())
    assert record["state"]["device"].startswith(DEVICE)


def test_generate_tiny_random_on_cuda(tmp_path: Path) -> None:
    run, summary = _generate(tmp_path, "--model", "tiny-random", "--duration", "1", "--samples", "2")
    _check_audio(run, summary, samples=2, seconds=1.0)


def test_generate_demo_on_cuda(tmp_path: Path) -> None:
    from jukebox_cli.engine.audio.analysis import summarize
    from jukebox_cli.engine.weights.shipped import shipped_folder

    genre = json.loads((shipped_folder("demo") / "card.json").read_text())["genres"][0]
    run, summary = _generate(tmp_path, "--model", "demo", "--genre", genre, "--duration", "3")
    _check_audio(run, summary, samples=1, seconds=3.0)
    top, rate = sf.read(run / "level_2" / "item_0.wav", dtype="float32")
    assert summarize(top, rate).rms_dbfs > -50  # the trained model makes sound, not silence
