"""Shared fixtures: tiny models, generated audio files, and a CLI runner that goes through main()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = DATA / "manifests"


def manifest(name: str) -> dict:
    """A released-checkpoint manifest, e.g. ``manifest("original/vqvae")``."""
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def music_like(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A deterministic chord with a melody, an envelope and a little noise: [T] or [T, C] float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63)) / 3
    melody = np.sin(2 * np.pi * 440.0 * 2 ** (np.floor(t * 4) % 5 / 12) * t)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2
    mono = (0.25 * chord + 0.15 * melody) * envelope + 0.01 * rng.standard_normal(t.shape)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def song(tmp_path: Path) -> Path:
    """A 2 s stereo 44.1 kHz WAV (the tiny model runs at 22.05 kHz, so loading resamples)."""
    path = tmp_path / "song.wav"
    sf.write(path, music_like(2.0, 44100, channels=2), 44100, subtype="PCM_16")
    return path


@pytest.fixture
def tiny_vqvae():
    from jukebox_cli.engine import build_vqvae

    return build_vqvae("tiny")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run ``jukebox ARGS`` through the real entry point (error boundary included)."""
    from jukebox_cli.cli.app import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Non-slow tests never touch the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hub(monkeypatch):
    """A running FakeHub, with huggingface_hub allowed to talk to it (and only to it).

    conftest's ``_no_network`` sets HF_HUB_OFFLINE=1, but huggingface_hub reads that env var once at
    import into ``constants.HF_HUB_OFFLINE`` (checked by its request hook), so both are undone here.
    Telemetry must stay off: with it on, building the User-Agent fetches an "agent harness" registry
    from https://huggingface.co (constants.ENDPOINT, whatever ``endpoint=`` says) and caches it in HF_HOME.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}}, raising=False)
    from tests.fakehub import FakeHub

    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("JUKEBOX_MIRRORS", f"{fake.url}/jukebox/models/")
        yield fake


@pytest.fixture
def no_retry_sleep(monkeypatch):
    """huggingface_hub sleeps between retries; only its modules' view of ``time`` is stubbed."""

    import time

    from huggingface_hub import file_download as hf_file_download

    class _Time:
        sleep = staticmethod(lambda seconds: None)

        def __getattr__(self, name):
            return getattr(time, name)

    from huggingface_hub.utils import _http

    monkeypatch.setattr(hf_file_download, "time", _Time())
    monkeypatch.setattr(_http, "time", _Time())  # the metadata request's backoff (23 s without a network)


@pytest.fixture
def small_chunks(monkeypatch):
    """http_get buffers DOWNLOAD_CHUNK_SIZE (10 MiB) before writing; smaller chunks make resumes visible."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)


__all__ = ["manifest", "music_like", "CliResult", "sys"]


_HOLD = """
import sys, time
from jukebox_cli.engine.locks import hold_folder
with hold_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """``folder`` locked by a second Python process until the block ends (then killed with SIGKILL)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
