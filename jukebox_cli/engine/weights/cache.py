"""The model cache: where downloads and converted parts live, and what counts as done.

Layout under the cache root (``--cache-dir`` > ``JUKEBOX_CACHE`` > the platform's user cache folder)::

    hub/                      huggingface_hub's own cache (blobs named by hash, resumable ``.incomplete`` files)
    openai/<path>             OpenAI's original files, at their path after the mirror prefix
    parts/<part>.safetensors  a converted part, in the native layout
    parts/<part>.json         its record: source, sizes, sha256 of the converted file, stored dtype
    locks/                    one lock file per part or download, shared by every process using the cache

A part counts as present only when its record exists and names the file's exact size: the record is written
after the file, and the file is moved into place only when complete, so an interrupted conversion never
counts. This module must not import torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.files import write_json

APP_NAME = "jukebox-cli"
RECORD_VERSION = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$JUKEBOX_CACHE``, else the user cache folder."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("JUKEBOX_CACHE"):
        return Path(os.environ["JUKEBOX_CACHE"]).expanduser()
    import platformdirs

    return platformdirs.user_cache_path(APP_NAME)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ModelCache:
    """Paths and records of one cache root."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.root = cache_root(cache_dir)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"The cache path {self.root} exists and is not a folder.")

    @property
    def hub_dir(self) -> Path:
        return self.root / "hub"

    def original_path(self, relative: str) -> Path:
        return self.root / "openai" / relative

    def part_file(self, part_id: str) -> Path:
        return self.root / "parts" / f"{part_id}.safetensors"

    def record_file(self, part_id: str) -> Path:
        return self.root / "parts" / f"{part_id}.json"

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An inter-process lock (a file under ``locks/``): concurrent downloads wait for each other."""
        from huggingface_hub.utils import WeakFileLock

        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(folder / f"{name.replace('/', '--')}.lock"):
            yield

    def record(self, part_id: str) -> dict | None:
        """The record of a converted part, or None unless both it and a file of the recorded size exist."""
        try:
            record = json.loads(self.record_file(part_id).read_text(encoding="utf-8"))
            if self.part_file(part_id).stat().st_size != record["size"]:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record

    def has_part(self, part_id: str) -> bool:
        return self.record(part_id) is not None

    def write_record(self, part_id: str, record: dict) -> None:
        write_json(self.record_file(part_id), {"record_version": RECORD_VERSION, **record}, overwrite=True)

    def remove_part(self, part_id: str) -> int:
        """Delete a converted part (record first, so a half-removed part never counts); returns bytes freed."""
        freed = 0
        for path in (self.record_file(part_id), self.part_file(part_id)):
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
        return freed

    def free_bytes(self) -> int:
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free


def disk_usage(path: Path) -> int:
    """Bytes used by a file or a folder tree (symlinks not followed)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
