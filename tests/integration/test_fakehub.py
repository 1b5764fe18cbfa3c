"""The fake Hub speaks enough of the protocol for huggingface_hub 2.4, and its faults do what they say.

These tests also pin down how huggingface_hub behaves on a bad network (what it resumes, what it
keeps, what it never checks), which is what our own downloader has to improve on.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get

from tests.fakehub import FakeHub, git_blob_sha1

REPO = "openai/jukebox-1b-lyrics"
CONFIG = b'{"model": "1b_lyrics", "levels": 3}\n'
WEIGHTS = os.urandom(50_000)  # LFS by name and by size
SHA256 = hashlib.sha256(WEIGHTS).hexdigest()


def _download(hub: FakeHub, cache: Path, filename: str, **kwargs) -> Path:
    return Path(hf_hub_download(REPO, filename, cache_dir=cache, endpoint=hub.url, **kwargs))


def _gets(hub: FakeHub, path: str) -> list[str | None]:
    """The Range headers of the GETs of ``path`` received so far."""
    return [rng for method, p, rng in hub.requests if method == "GET" and p == path]


def test_download_text_and_lfs_files_into_cache(hub: FakeHub, tmp_path: Path) -> None:
    sha = hub.add_repo(REPO, {"config.json": CONFIG, "model.bin": WEIGHTS})

    config, weights = _download(hub, tmp_path, "config.json"), _download(hub, tmp_path, "model.bin")

    assert config.read_bytes() == CONFIG and weights.read_bytes() == WEIGHTS
    assert weights.parent.name == sha
    assert weights.resolve().name == SHA256  # LFS blob named by its sha256 (X-Linked-Etag)
    assert config.resolve().name == git_blob_sha1(CONFIG)  # regular blob named by its git sha1
    # The LFS body came from the CDN origin after a HEAD that stopped at the Hub's redirect.
    assert ("HEAD", f"/{REPO}/resolve/main/model.bin", None) in hub.requests
    assert _gets(hub, f"/lfs/{SHA256}") == [None]
    assert _gets(hub, f"/{REPO}/resolve/main/model.bin") == []
    assert try_to_load_from_cache(REPO, "model.bin", cache_dir=tmp_path) == str(weights)

    hub.stop()
    assert _download(hub, tmp_path, "model.bin", local_files_only=True) == weights
    assert _download(hub, tmp_path, "config.json", revision=sha, local_files_only=True) == config


def test_model_info_and_listings(hub: FakeHub) -> None:
    sha = hub.add_repo(
        REPO, {"config.json": CONFIG, "model.bin": WEIGHTS, "priors/level_2.safetensors": b"x"}
    )
    api = HfApi(endpoint=hub.url)

    info = api.model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha == sha
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["config.json"].size == len(CONFIG) and siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == git_blob_sha1(CONFIG)
    assert siblings["model.bin"].lfs.sha256 == SHA256 and siblings["model.bin"].lfs.size == len(WEIGHTS)
    assert siblings["priors/level_2.safetensors"].lfs.size == 1
    assert all(s.size is None for s in api.model_info(REPO).siblings)  # metadata only on request

    assert api.list_repo_files(REPO) == ["config.json", "model.bin", "priors/level_2.safetensors"]
    top = {entry.path: type(entry).__name__ for entry in api.list_repo_tree(REPO)}
    assert top == {"priors": "RepoFolder", "config.json": "RepoFile", "model.bin": "RepoFile"}
    assert [e.path for e in api.list_repo_tree(REPO, "priors")] == ["priors/level_2.safetensors"]
    found = api.get_paths_info(REPO, ["model.bin", "priors", "missing.txt"])
    assert sorted(e.path for e in found) == ["model.bin", "priors"]


def test_revisions(hub: FakeHub, tmp_path: Path) -> None:
    main = hub.add_repo(REPO, {"config.json": CONFIG})
    v1 = hub.add_repo(REPO, {"config.json": b"{}"}, revision="v1")
    assert main != v1 and re.fullmatch("[0-9a-f]{40}", v1)
    assert hub.add_repo(REPO, {"config.json": b"{}"}, revision="v1") == v1  # deterministic

    assert _download(hub, tmp_path, "config.json").read_bytes() == CONFIG
    assert _download(hub, tmp_path, "config.json", revision="v1").read_bytes() == b"{}"
    assert _download(hub, tmp_path, "config.json", revision=main).read_bytes() == CONFIG
    assert HfApi(endpoint=hub.url).model_info(REPO, revision="v1").sha == v1


def test_unknown_repo_file_and_revision(hub: FakeHub, tmp_path: Path) -> None:
    sha = hub.add_repo(REPO, {"config.json": CONFIG})
    api = HfApi(endpoint=hub.url)

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("openai/nope", "config.json", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("openai/nope")
    with pytest.raises(RemoteEntryNotFoundError) as missing:
        _download(hub, tmp_path, "missing.bin")
    assert isinstance(missing.value, EntryNotFoundError)
    # The 404 carries X-Repo-Commit, so the client remembers the file does not exist at that commit.
    assert (tmp_path / "models--openai--jukebox-1b-lyrics" / ".no_exist" / sha / "missing.bin").exists()
    with pytest.raises(RevisionNotFoundError):
        _download(hub, tmp_path, "config.json", revision="v9")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="v9")


@pytest.mark.usefixtures("no_retry_sleep", "small_chunks")
def test_dropped_connection_is_resumed_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {"model.bin": WEIGHTS})
    path = hub.file_path(REPO, "model.bin")
    hub.drop_after(path, 20_000, times=1)

    assert _download(hub, tmp_path, "model.bin").read_bytes() == WEIGHTS

    first, resumed = _gets(hub, path)
    assert first is None and resumed.startswith("bytes=") and resumed.endswith("-")
    offset = int(resumed[len("bytes=") : -1])
    assert 0 < offset <= 20_000 and offset % 4096 == 0  # resumes from the last whole chunk written


@pytest.mark.usefixtures("no_retry_sleep")
def test_drop_within_the_first_chunk_restarts_from_zero(hub: FakeHub, tmp_path: Path) -> None:
    """With the default 10 MiB chunk, bytes received before a drop are lost: no Range is sent."""
    hub.add_repo(REPO, {"model.bin": WEIGHTS})
    path = hub.file_path(REPO, "model.bin")
    hub.drop_after(path, 20_000)

    assert _download(hub, tmp_path, "model.bin").read_bytes() == WEIGHTS
    assert _gets(hub, path) == [None, None]


@pytest.mark.usefixtures("no_retry_sleep", "small_chunks")
def test_exhausted_retries_raise_and_keep_no_partial_file(hub: FakeHub, tmp_path: Path) -> None:
    """huggingface_hub 2.4 downloads to a per-call ``<etag>.<random>.incomplete`` and deletes it on
    failure: nothing is left to resume from, so the next call starts over at byte 0."""
    hub.add_repo(REPO, {"model.bin": WEIGHTS})
    path = hub.file_path(REPO, "model.bin")
    hub.drop_after(path, 0, times=6)  # no progress: 1 try + 5 retries, then it gives up

    with pytest.raises(httpx2.RemoteProtocolError):
        _download(hub, tmp_path, "model.bin")
    assert _gets(hub, path) == [None] * 6
    blobs = tmp_path / "models--openai--jukebox-1b-lyrics" / "blobs"
    assert list(blobs.iterdir()) == []

    hub.requests.clear()
    hub.drop_after(path, 10_000, times=1)
    assert _download(hub, tmp_path, "model.bin").read_bytes() == WEIGHTS
    assert _gets(hub, path) == [None, "bytes=8192-"]


def test_tampered_body_is_not_detected_by_huggingface_hub(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {"model.bin": WEIGHTS})
    corrupted = bytes([WEIGHTS[0] ^ 0xFF]) + WEIGHTS[1:]
    hub.tamper(hub.file_path(REPO, "model.bin"), corrupted)

    weights = _download(hub, tmp_path, "model.bin")

    assert weights.read_bytes() == corrupted != WEIGHTS
    assert weights.resolve().name == SHA256  # cached under the hash it does not have


@pytest.mark.usefixtures("no_retry_sleep", "small_chunks")
def test_static_file_with_ranges(hub: FakeHub) -> None:
    data = os.urandom(30_000)
    path = "/jukebox/models/5b/vqvae.pth.tar"
    hub.add_static(path, data)
    url = hub.url + path

    head = httpx2.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'

    full = io.BytesIO()
    http_get(url, full)
    assert full.getvalue() == data

    partial = io.BytesIO(data[:12_345])
    partial.seek(0, io.SEEK_END)
    http_get(url, partial, resume_size=12_345)
    assert partial.getvalue() == data
    assert _gets(hub, path)[-1] == "bytes=12345-"
    ranged = httpx2.get(url, headers={"Range": "bytes=100-"})
    assert ranged.status_code == 206 and ranged.headers["Content-Range"] == f"bytes 100-29999/{len(data)}"
    assert httpx2.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416

    hub.drop_after(path, 9000)
    dropped = io.BytesIO()
    http_get(url, dropped)
    assert dropped.getvalue() == data
    assert _gets(hub, path)[-2:] == [None, "bytes=8192-"]


def test_offline_and_online(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {"config.json": CONFIG})
    config = _download(hub, tmp_path, "config.json")
    seen = len(hub.requests)

    hub.offline()
    assert _download(hub, tmp_path, "config.json") == config  # ConnectError -> falls back to the cache
    with pytest.raises(httpx2.ConnectError):
        HfApi(endpoint=hub.url).model_info(REPO)
    assert len(hub.requests) == seen

    hub.online()
    assert HfApi(endpoint=hub.url).model_info(REPO).id == REPO


def test_slow_file_does_not_block_other_requests(hub: FakeHub) -> None:
    hub.add_static("/slow.bin", b"s" * 20_000)
    hub.add_static("/fast.bin", b"f" * 20_000)
    hub.slow("/slow.bin", 50_000)  # ~0.4 s
    done: dict[str, float] = {}

    def fetch(name: str) -> None:
        assert httpx2.get(f"{hub.url}/{name}").content == name[0].encode() * 20_000
        done[name] = time.monotonic()

    slow = threading.Thread(target=fetch, args=("slow.bin",))
    start = time.monotonic()
    slow.start()
    fetch("fast.bin")
    slow.join()
    assert done["fast.bin"] < done["slow.bin"]
    assert done["slow.bin"] - start >= 0.3
