"""`jukebox models` and `--model NAME` against a fake hub and a fake OpenAI mirror on loopback.

The servers hold tiny models in the released file layouts (sharded hub ``.bin`` files with their index and
config, legacy ``.pth.tar`` files); the registry's parts are pointed at the tiny presets, which have the
released key names. Everything else is the real code path.
"""

from __future__ import annotations

import json
import logging
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
from tests.fake_models import (
    hub_repo_files,
    malicious_file,
    original_file,
    original_files,
    tiny_parts,
    use_tiny_presets,
)

REPO = "openai/jukebox-1b-lyrics"
ROOT = Path(__file__).resolve().parents[2]
SHARD = "pytorch_model-00001-of-00002.bin"

# Runs the CLI in a fresh process with the tiny presets (for kill -9 and concurrency tests).
SCRIPT = """
import sys
from huggingface_hub import constants
constants.DOWNLOAD_CHUNK_SIZE = 4096
from tests.fake_models import TINY_PRESETS
import dataclasses
from jukebox_cli.engine.weights import registry
for part, preset in TINY_PRESETS.items():
    registry.PARTS[part] = dataclasses.replace(registry.PARTS[part], preset=preset)
from jukebox_cli.cli.app import main
main(sys.argv[1:])
"""


@pytest.fixture
def parts():
    return tiny_parts()


@pytest.fixture
def served(hub, parts, monkeypatch):
    """The fake hub serving 1b_lyrics, the fake mirror serving every original file; tiny presets."""
    use_tiny_presets(monkeypatch)
    hub.add_repo(REPO, hub_repo_files(parts))
    for path, data in original_files({**parts, **tiny_parts("5b_top")}).items():
        hub.add_static(path, data)
    return hub


def _cli(cache: Path, *args: str) -> list[str]:
    return [*args, "--cache-dir", str(cache)]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_download_convert_generate_end_to_end(served, parts, run_cli, tmp_path: Path) -> None:
    from jukebox_cli.engine.checkpoints.native import load_native

    cache = tmp_path / "cache"
    result = run_cli(*_cli(cache, "models", "download", "1b_lyrics", "--json"))
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["in_cache"] == "yes" and set(status["parts"]) == set(parts)
    for part_id, model in parts.items():
        converted = load_native(status["parts"][part_id]["path"])
        assert _same_weights(converted, model), part_id
    assert (cache / "downloads").is_dir(), "weights went through the resumable downloader"
    assert not [p for p in (cache / "downloads").rglob("*") if p.is_file()], "sources are removed"

    run = tmp_path / "run"
    result = run_cli(*_cli(cache, "generate", "--model", "1b_lyrics", "--genre", "rock", "--duration", "2",
                           "--device", "cpu", "--quiet", "-o", str(run)))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert all((run / f"level_{level}" / "item_0.wav").is_file() for level in (0, 1, 2))
    assert json.loads((run / "run.json").read_text())["state"]["model"]["pretrained"] is True


def test_models_list_info_path_verify_rm(served, run_cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    listing = json.loads(run_cli(*_cli(cache, "models", "list", "--json")).stdout)
    assert {m["name"]: m["in_cache"] for m in listing["models"]} == {
        "1b_lyrics": "no",
        "5b_lyrics": "no",
        "5b": "no",
    }
    assert run_cli(*_cli(cache, "models", "download", "1b_lyrics", "--quiet")).exit_code == 0
    listing = json.loads(run_cli(*_cli(cache, "models", "list", "--json")).stdout)
    states = {m["name"]: m["in_cache"] for m in listing["models"]}
    assert states == {"1b_lyrics": "yes", "5b_lyrics": "partial (3/4)", "5b": "partial (3/4)"}

    table = run_cli(*_cli(cache, "models", "list")).stdout
    assert "1b_lyrics" in table and "11.64 GB" in table and "partial (3/4)" in table
    text = run_cli(*_cli(cache, "models", "info", "5b_lyrics")).stdout
    assert "5,640,506,800" in text and "Noncommercial" in text and "no" in text
    info = json.loads(run_cli(*_cli(cache, "models", "info", "1b_lyrics", "--json")).stdout)
    assert info["labels"] == "v3" and info["parts"]["1b_lyrics_top"]["parameters"] == 942_643_200
    assert info["parts"]["vqvae"]["source"]["kind"] == "hub" and "Noncommercial" in info["license"]
    paths = run_cli(*_cli(cache, "models", "path", "1b_lyrics")).stdout.split()
    assert len(paths) == 4 and all(Path(p).is_file() for p in paths)
    assert run_cli(*_cli(cache, "models", "verify", "1b_lyrics", "--quiet")).exit_code == 0

    # Damage one converted file: verify detects it, removes it, and the model becomes partial.
    top = next(p for p in paths if "1b_lyrics_top" in p)
    data = bytearray(Path(top).read_bytes())
    data[-10] ^= 0xFF
    Path(top).write_bytes(bytes(data))
    result = run_cli(*_cli(cache, "models", "verify", "1b_lyrics"))
    assert result.exit_code == 3 and "1b_lyrics_top" in result.stderr and "removed" in result.stderr
    assert not Path(top).exists()

    # rm keeps the parts 5b / 5b_lyrics would share only while one of them is (partly) present: here none is
    # beyond the shared parts themselves, so everything goes.
    result = json.loads(run_cli(*_cli(cache, "models", "rm", "1b_lyrics", "--json")).stdout)
    assert result["kept"] == ["vqvae", "upsampler_level_0", "upsampler_level_1"]
    result = json.loads(run_cli(*_cli(cache, "models", "rm", "1b_lyrics", "--shared", "--json")).stdout)
    assert set(result["removed"]) == {"vqvae", "upsampler_level_0", "upsampler_level_1"}
    listing = json.loads(run_cli(*_cli(cache, "models", "list", "--json")).stdout)
    assert all(m["in_cache"] == "no" for m in listing["models"])
    result = run_cli(*_cli(cache, "models", "path", "1b_lyrics"))
    assert result.exit_code == 3 and "jukebox models download 1b_lyrics" in result.stderr


def test_original_files_and_shared_parts(served, run_cli, tmp_path: Path) -> None:
    """5b exists only as original files; after 1b_lyrics, only its top prior is fetched."""
    cache = tmp_path / "cache"
    assert run_cli(*_cli(cache, "models", "download", "1b_lyrics", "--quiet")).exit_code == 0
    served.requests.clear()
    result = run_cli(*_cli(cache, "models", "download", "5b", "--quiet"))
    assert result.exit_code == 0, result.stderr
    fetched = {path for method, path, _ in served.requests if method == "GET"}
    assert fetched == {"/jukebox/models/5b/prior_level_2.pth.tar"}
    record = json.loads((cache / "parts" / "5b_top.json").read_text())
    assert record["source"]["kind"] == "openai" and len(record["source"]["sha256"]) == 64
    assert not (cache / "openai" / "5b" / "prior_level_2.pth.tar").exists(), "sources are removed"
    run = tmp_path / "run"
    result = run_cli(*_cli(cache, "generate", "-m", "5b", "--genre", "jazz", "--levels", "2", "--duration", "1",
                           "--device", "cpu", "--quiet", "-o", str(run)))  # fmt: skip
    assert result.exit_code == 0, result.stderr


@pytest.mark.usefixtures("no_retry_sleep")
def test_corrupted_download_is_detected_and_fetched_again(served, tmp_path: Path) -> None:
    from jukebox_cli.engine.errors import ChecksumMismatch
    from jukebox_cli.engine.progress import StageStarted
    from jukebox_cli.engine.weights.released import download_model

    path = served.file_path(REPO, SHARD)
    size = len(hub_repo_files(tiny_parts())[SHARD])
    served.tamper(path, os.urandom(size))
    with pytest.raises(ChecksumMismatch, match="does not match its sha256"):
        download_model("1b_lyrics", cache_dir=tmp_path / "c1")
    assert not [p for p in (tmp_path / "c1" / "downloads").rglob("*") if p.is_file()], (
        "corrupt copies deleted"
    )
    assert not list((tmp_path / "c1").glob("parts/*.json")), "nothing converted"

    # Corrupt only the first transfer: the hash check fails, the file is fetched again, and all is well.
    def heal(event) -> None:
        if isinstance(event, StageStarted) and event.name == f"verify {SHARD}":
            served.clear_faults()

    served.tamper(path, os.urandom(size))
    status = download_model("1b_lyrics", cache_dir=tmp_path / "c2", progress=heal)
    assert status.complete
    gets = [r for m, p, r in served.requests if m == "GET" and p == path]
    assert len(gets) >= 3


@pytest.mark.usefixtures("no_retry_sleep", "small_chunks")
def test_interrupted_transfer_resumes_in_a_new_process(served, run_cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = served.file_path(REPO, SHARD)
    served.slow(path, 20_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": served.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *_cli(cache, "models", "download", "1b_lyrics", "-q")],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    partial = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in (cache / "downloads").rglob("*.incomplete") if p.stat().st_size >= 8192]
        if found:
            partial = found[0]
            break
        time.sleep(0.05)
    assert partial is not None, proc.communicate()
    proc.send_signal(signal.SIGKILL)  # like a crash or a closed laptop: no cleanup runs
    proc.wait()
    have = partial.stat().st_size
    assert have > 0

    served.clear_faults()
    served.requests.clear()
    result = run_cli(*_cli(cache, "models", "download", "1b_lyrics", "--quiet"))
    assert result.exit_code == 0, result.stderr
    ranges = [r for m, p, r in served.requests if m == "GET" and p == path]
    assert ranges and ranges[0] is not None and int(ranges[0].split("=")[1].rstrip("-")) > 0
    assert not partial.exists()


def test_concurrent_downloads_share_the_cache(served, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for name in (SHARD, "pytorch_model-00002-of-00002.bin"):
        served.slow(served.file_path(REPO, name), 200_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": served.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", SCRIPT, *_cli(cache, "models", "download", "1b_lyrics", "--json")],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(json.loads(out)["in_cache"] == "yes" for out, _ in outputs)
    for name in (SHARD, "pytorch_model-00002-of-00002.bin"):
        gets = [m for m, p, _ in served.requests if m == "GET" and p == served.file_path(REPO, name)]
        assert len(gets) == 1, f"{name} was downloaded {len(gets)} times"
    from jukebox_cli.engine.weights.released import verify_model

    assert set(verify_model("1b_lyrics", cache_dir=cache).values()) == {"ok"}


def test_offline_without_files(run_cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for args in (("models", "download", "1b_lyrics"), ("models", "download", "5b"),
                 ("generate", "--model", "5b_lyrics", "--genre", "rock")):  # fmt: skip
        result = run_cli(*_cli(cache, *args))
        assert result.exit_code == 3, result.stderr
        assert "offline mode is on" in result.stderr and "Traceback" not in result.stderr
    assert not list(cache.glob("parts/*"))


def test_info_describes_shipped_random_and_folder_models(run_cli, tmp_path: Path) -> None:
    from jukebox_cli.engine.weights.shipped import shipped_folder

    folder = shipped_folder("demo")
    demo = json.loads(run_cli(*_cli(tmp_path / "cache", "models", "info", "demo", "--json")).stdout)
    card = json.loads((folder / "card.json").read_text())
    labels = ({r["artist"] for r in card["corpus"]}, {r["genre"] for r in card["corpus"]})
    # every artist and genre of the corpus the model learnt from, and `unknown`
    assert demo["labels"] == "custom" and (demo["artists"], demo["genres"]) == tuple(
        len(n) + 1 for n in labels
    )
    assert not demo["lyrics"]
    assert demo["card"] == str(folder / "MODEL_CARD.md") and demo["folder"] == str(folder)
    top = demo["parts"]["prior_level_2"]
    assert (
        top["bytes"] == (folder / "prior_level_2.safetensors").stat().st_size and top["config"]["level"] == 2
    )
    assert demo["parameters"] == sum(p["parameters"] for p in demo["parts"].values()) > 3_000_000
    # A folder path reads the same files through the same resolver.
    as_folder = json.loads(run_cli(*_cli(tmp_path / "cache", "models", "info", folder, "--json")).stdout)
    assert as_folder["kind"] == "folder" and as_folder["parts"] == demo["parts"]
    text = run_cli(*_cli(tmp_path / "cache", "models", "info", "tiny-random")).stdout
    assert "untrained random weights" in text and "prior_level_0" in text and "labels tiny" in text
    result = run_cli(*_cli(tmp_path / "cache", "models", "info", "tiny"))
    assert result.exit_code == 2 and "not a whole model" in result.stderr, result.stderr


def test_verify_checks_the_shipped_demo_against_its_card(run_cli, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from jukebox_cli.engine.weights import shipped

    result = run_cli("models", "verify", "demo", "--json")
    assert result.exit_code == 0 and set(json.loads(result.stdout).values()) == {"ok"}
    copy = tmp_path / "demo"
    shutil.copytree(shipped.shipped_folder("demo"), copy)
    with open(copy / "prior_level_1.safetensors", "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    (copy / "prior_level_0.safetensors").unlink()
    monkeypatch.setattr(shipped, "shipped_folder", lambda name: copy)
    result = run_cli("models", "verify", "demo", "--json")
    states = json.loads(result.stdout)
    assert result.exit_code == 3 and states["prior_level_1.safetensors"] == "corrupt"
    assert states["prior_level_0.safetensors"] == "missing" and states["vqvae.safetensors"] == "ok"


def test_code_execution_payload_is_refused(served, run_cli, tmp_path: Path) -> None:
    served.add_static("/jukebox/models/5b/vqvae.pth.tar", malicious_file())
    marker = Path("/tmp/jukebox-cli-pwned")
    marker.unlink(missing_ok=True)
    result = run_cli(*_cli(tmp_path / "cache", "models", "download", "5b"))
    assert (
        result.exit_code == 3
        and "unpickling a file can run any code" in result.stderr
        and "weights_only" not in result.stderr
    ), result.stderr
    assert not marker.exists()
    assert not (tmp_path / "cache" / "parts" / "vqvae.json").exists()


def test_bad_repositories_and_files(served, parts, run_cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_cli(*_cli(cache, "models", "download", "1b-lyric"))
    assert result.exit_code == 3 and "Did you mean 1b_lyrics" in result.stderr

    # A repository that is not a Jukebox model.
    served.add_repo(REPO, {"config.json": b'{"model_type": "gpt2"}'}, revision="gpt")
    result = run_cli(*_cli(cache, "models", "download", "1b_lyrics", "--revision", "gpt"))
    assert result.exit_code == 3 and "not a Jukebox model" in result.stderr

    # Weights of another architecture: the message names the keys that differ.
    other = {**parts, "1b_lyrics_top": tiny_parts("5b_top")["5b_top"]}
    served.add_repo(REPO, hub_repo_files(other))  # replaces main
    result = run_cli(*_cli(cache, "models", "download", "1b_lyrics"))
    assert result.exit_code == 3 and "does not match this architecture" in result.stderr
    assert "missing" in result.stderr or "wrong shape" in result.stderr
    assert not (cache / "parts" / "1b_lyrics_top.json").exists()

    # A truncated original file (served with its truncated length).
    served.add_static("/jukebox/models/5b/vqvae.pth.tar", original_file(parts["vqvae"])[:5000])
    result = run_cli(*_cli(tmp_path / "c2", "models", "download", "5b"))
    assert result.exit_code == 3 and "Traceback" not in result.stderr
    assert not list((tmp_path / "c2").glob("parts/*.json"))


def test_not_enough_disk_space(served, run_cli, tmp_path: Path, monkeypatch) -> None:
    from jukebox_cli.engine.weights.cache import ModelCache

    monkeypatch.setattr(ModelCache, "free_bytes", lambda self: 1000)
    result = run_cli(*_cli(tmp_path / "cache", "models", "download", "1b_lyrics"))
    assert result.exit_code == 3 and "is free under" in result.stderr
    for folder in ("parts", "downloads", "openai"):
        assert not [p for p in (tmp_path / "cache" / folder).rglob("*") if p.is_file()], folder


def _native_files(tmp_path: Path) -> dict[str, bytes]:
    from jukebox_cli.engine.weights.bundle import save_bundle
    from jukebox_cli.engine.weights.loading import load_bundle

    folder = save_bundle(load_bundle("tiny-random"), tmp_path / "native")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_hub_repos_and_urls_as_models(served, parts, run_cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    native = _native_files(tmp_path)
    served.add_repo("someone/my-jukebox", native)
    for name, data in native.items():
        served.add_static(f"/files/my-model/{name}", data)
    fork = {**parts, "5b_top": tiny_parts("5b_top")["5b_top"]}
    del fork["1b_lyrics_top"]
    served.add_repo("someone/jukebox-5b-fork", hub_repo_files(fork))
    served.add_repo(REPO, hub_repo_files(tiny_parts(seed=7)), revision="v2")

    for i, spec in enumerate(("someone/my-jukebox", "someone/jukebox-5b-fork", f"{REPO}@v2",
                              f"{served.url}/files/my-model/")):  # fmt: skip
        genre = "rock" if "5b" not in spec else "jazz"
        result = run_cli(*_cli(cache, "generate", "--model", spec, "--genre", genre, "--levels", "2",
                               "--duration", "1", "--device", "cpu", "--quiet", "-o", str(tmp_path / f"r{i}")))  # fmt: skip
        assert result.exit_code == 0, (spec, result.stderr)
    forks = [p.name for p in (cache / "parts").iterdir() if p.is_dir()]
    assert any(f.startswith("someone--jukebox-5b-fork@") for f in forks)
    assert any(f.startswith("openai--jukebox-1b-lyrics@") for f in forks), "another revision stays apart"
    assert not (cache / "parts" / "1b_lyrics_top.json").exists()

    out = tmp_path / "recon"
    song = tmp_path / "song.wav"
    sf.write(song, music_like(1.0, 22050), 22050)
    result = run_cli(*_cli(cache, "reconstruct", str(song), "-m", "someone/my-jukebox", "-o", str(out), "-q"))
    assert result.exit_code == 0, result.stderr

    result = run_cli(*_cli(cache, "generate", "--model", "nobody/nothing", "--genre", "rock"))
    assert result.exit_code == 3 and "No hub repository 'nobody/nothing'" in result.stderr
    result = run_cli(*_cli(cache, "models", "download", REPO, "--revision", "v2", "--json"))
    assert result.exit_code == 0 and set(json.loads(result.stdout)["files"]) == {
        "vqvae", "prior_level_0", "prior_level_1", "prior_level_2"}  # fmt: skip


@pytest.mark.usefixtures("no_retry_sleep")
def test_no_network(served, run_cli, tmp_path: Path) -> None:
    served.offline()
    for args, fragment in ((("models", "download", "1b_lyrics"), "cannot be reached"),
                           (("models", "download", "5b"), "from any mirror")):  # fmt: skip
        result = run_cli(*_cli(tmp_path / "cache", *args))
        assert result.exit_code == 3 and fragment in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 2, "one line and a hint"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_hub_fails_at_once(run_cli, tmp_path: Path, monkeypatch, caplog) -> None:
    """No route to the hub is one error line, without huggingface_hub's five retries (25 s of "Retrying"
    lines), and generate refuses before its plan."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    caplog.set_level(logging.WARNING)
    for args in (
        ("models", "download", "1b_lyrics"),
        ("generate", "--model", "5b_lyrics", "--genre", "rock"),
    ):
        result = run_cli(*_cli(tmp_path / "cache", *args))
        assert result.exit_code == 3 and "127.0.0.1 cannot be reached" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 2, "one line and a hint"
        assert "Plan" not in result.stderr
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


def test_convert_from_a_local_copy_of_openais_files(parts, run_cli, tmp_path: Path, monkeypatch) -> None:
    """Files already fetched by OpenAI's own code are converted in place, offline, and left alone."""
    use_tiny_presets(monkeypatch)
    local = tmp_path / "jukebox" / "models"
    for url_path, data in original_files({**parts, **tiny_parts("5b_top")}).items():
        target = local / url_path.removeprefix("/jukebox/models/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    before = sorted(p.name for p in local.rglob("*.tar"))
    result = run_cli(*_cli(tmp_path / "cache", "models", "download", "5b", "--from", str(local), "--json"))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["in_cache"] == "yes"
    assert sorted(p.name for p in local.rglob("*.tar")) == before, "the user's files stay"
    assert not (tmp_path / "cache" / "openai").exists(), "nothing copied"
