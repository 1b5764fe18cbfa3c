"""Released models in the cache: download + convert once, status, verify, remove.

``download_model("1b_lyrics")`` fetches only the files that hold parts missing from the cache (a part
converted for one model serves every model that shares it), converts each part into a native safetensors
file under a per-part lock, and removes the downloaded sources unless asked to keep them. Everything after
that loads from the converted files.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from jukebox_cli.engine.errors import (
    CheckpointNotFound,
    ChecksumMismatch,
    ConfigError,
    IncompatibleCheckpoint,
    NetworkError,
    RemoteFileMissing,
)
from jukebox_cli.engine.progress import ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.weights import download as fetch
from jukebox_cli.engine.weights.cache import ModelCache, disk_usage, sha256_file
from jukebox_cli.engine.weights.convert import (
    ShardedState,
    convert_part,
    load_source,
    native_size,
    stored_dtype,
)
from jukebox_cli.engine.weights.registry import MODELS, PARTS, ModelEntry, Part, get_model, openai_mirrors

HUB_INDEX = "pytorch_model.bin.index.json"
HUB_SINGLE = "pytorch_model.bin"


@dataclass
class PartStatus:
    part: Part
    path: Path
    present: bool
    size: int = 0
    record: dict = field(default_factory=dict)


@dataclass
class ModelStatus:
    entry: ModelEntry
    parts: list[PartStatus]

    @property
    def complete(self) -> bool:
        return all(p.present for p in self.parts)

    @property
    def state(self) -> str:
        n = sum(p.present for p in self.parts)
        return "yes" if n == len(self.parts) else "no" if n == 0 else f"partial ({n}/{len(self.parts)})"

    @property
    def disk_used(self) -> int:
        return sum(p.size for p in self.parts if p.present)

    def to_dict(self) -> dict:
        return {
            "name": self.entry.name,
            "description": self.entry.description,
            "in_cache": self.state,
            "download_bytes": self.entry.hub_size or self.entry.original_size(),
            "source": self.entry.default_source,
            "disk_bytes": self.disk_used,
            "parts": {
                p.part.id: {"present": p.present, "path": str(p.path), "bytes": p.size if p.present else None}
                for p in self.parts
            },
        }


def model_status(name: str, *, cache_dir: str | Path | None = None) -> ModelStatus:
    """Which parts of ``name`` the cache holds.

    Raises:
        CheckpointNotFound: unknown model name.
    """
    entry = get_model(name)
    cache = ModelCache(cache_dir)
    parts = []
    for part in entry.part_list():
        record = cache.record(part.id)
        parts.append(PartStatus(part, cache.part_file(part.id), record is not None,
                                record["size"] if record else 0, record or {}))  # fmt: skip
    return ModelStatus(entry, parts)


def part_files(name: str, *, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Converted files of every part of ``name`` (part id -> path).

    Raises:
        CheckpointNotFound: unknown name, or parts not downloaded (the message says how to get them).
    """
    status = model_status(name, cache_dir=cache_dir)
    missing = [p.part.id for p in status.parts if not p.present]
    if missing:
        raise CheckpointNotFound(
            f"Model {name!r} is not downloaded (missing: {', '.join(missing)}); run `jukebox models download "
            f"{name}` (about {(status.entry.hub_size or status.entry.original_size()) / 1e9:.1f} GB)."
        )
    return {p.part.id: p.path for p in status.parts}


def model_files(name: str, *, cache_dir: str | Path | None = None) -> tuple[Path, dict[int, Path]]:
    """Converted files of released model ``name``: (VQ-VAE, level -> prior).

    Raises:
        CheckpointNotFound: unknown name, or parts not downloaded.
    """
    files = part_files(name, cache_dir=cache_dir)
    priors = {PARTS[p].level: path for p, path in files.items() if PARTS[p].kind == "prior"}
    return files["vqvae"], priors


def download_model(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    source: str | None = None,
    dtype: str | None = None,
    keep_source: bool = False,
    force: bool = False,
    parts: tuple[str, ...] | None = None,
    local: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> ModelStatus:
    """Make every part of released model ``name`` present in the cache (download and convert what is missing).

    Args:
        name: a registry name (``1b_lyrics``, ``5b``, ``5b_lyrics``).
        cache_dir: the cache root (default: ``$JUKEBOX_CACHE`` or the user cache folder).
        source: ``"hub"`` or ``"openai"`` (default: the hub where the model is there).
        dtype: how priors are stored: ``auto`` (as released), ``fp32``, ``fp16`` or ``bf16``.
        keep_source: keep the downloaded checkpoint files after conversion.
        force: convert again even parts already present.
        parts: only these part ids (default: all of the model's).
        local: a folder laid out like OpenAI's storage (``5b/vqvae.pth.tar``, ...) to convert from instead of
            downloading (implies the ``openai`` source).
        progress: byte stages per file, then tensor stages per converted part.

    Raises:
        CheckpointNotFound, NetworkError, ChecksumMismatch, DiskSpaceError, IncompatibleCheckpoint.
    """
    entry = get_model(name)
    source = "openai" if local is not None else source or entry.default_source
    if source not in entry.sources:
        raise ConfigError(
            f"Model {name!r} can be downloaded from {' or '.join(entry.sources)}, not {source!r}."
        )
    store = stored_dtype(dtype)
    cache = ModelCache(cache_dir)
    wanted = [p for p in entry.part_list() if parts is None or p.id in parts]
    missing = [p for p in wanted if force or not cache.has_part(p.id)]
    if missing:
        if source == "hub":
            _download_from_hub(cache, entry, missing, store, keep_source, force, progress)
        else:
            mirrors = (
                [Path(local).expanduser().resolve().as_uri() + "/"] if local is not None else openai_mirrors()
            )
            _download_from_openai(cache, missing, mirrors, store, keep_source, force, progress)
    return model_status(name, cache_dir=cache.root)


def download_blocker(name: str) -> str | None:
    """Why released model ``name`` cannot be downloaded from its default source right now (None: it can be
    tried). Cheap (one connection attempt at most), so a command can refuse before any other work."""
    entry = get_model(name)
    if fetch.is_offline():
        return "offline mode is on (HF_HUB_OFFLINE)"
    if entry.default_source == "hub":
        url = fetch.hub_base_url()
    else:
        url = next((m for m in openai_mirrors() if not m.startswith("file://")), None)
        if url is None:
            return None
    return None if fetch.reachable(url) else fetch.unreachable_reason(url)


def ensure_vqvae(
    name: str, *, cache_dir: str | Path | None = None, progress: ProgressCallback = noop
) -> Path:
    """The released VQ-VAE's converted file, downloading only it if needed.

    OpenAI's 7.5 MB original file is tried first; the hub only ships it inside a multi-GB shard.
    """
    cache = ModelCache(cache_dir)
    if not cache.has_part("vqvae"):
        entry = get_model(name)
        try:
            download_model(name, cache_dir=cache_dir, source="openai", parts=("vqvae",), progress=progress)
        except (NetworkError, CheckpointNotFound):  # OpenAI's storage unreachable, or the file gone
            if entry.hub_repo is None or fetch.is_offline():
                raise
            download_model(name, cache_dir=cache_dir, source="hub", parts=("vqvae",), progress=progress)
    return cache.part_file("vqvae")


def _download_from_openai(cache, parts, mirrors, store, keep_source, force, progress) -> None:
    for part in parts:
        with cache.lock(part.id):
            if cache.has_part(part.id) and not force:
                continue  # another process converted it while we waited
            path = fetch.url_file(cache, part.original_file, mirrors,
                                  extra_bytes=native_size(part, store), progress=progress)  # fmt: skip
            progress(StageStarted(f"hash {path.name}", None, "file"))
            digest = sha256_file(path)
            progress(StageFinished(f"hash {path.name}"))
            info = {
                "kind": "openai",
                "file": part.original_file,
                "sha256": digest,
                "size": path.stat().st_size,
            }
            convert_part(
                cache, part, load_source(path), "original", source=info, dtype=store, progress=progress
            )
            if not keep_source and path.is_relative_to(cache.root):  # never a user's own copy
                path.unlink()


def hub_manifest(cache: ModelCache, repo_id: str, revision: str | None, progress: ProgressCallback) -> dict:
    """The repo's ``config.json`` (checked to be a Jukebox model) and its key -> shard map.

    Raises:
        IncompatibleCheckpoint: the repository is not a Jukebox model.
    """
    config_path = fetch.hub_file(cache, repo_id, "config.json", revision=revision, progress=progress)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise IncompatibleCheckpoint(f"{repo_id}'s config.json is not valid JSON ({err}).") from err
    if not isinstance(config, dict) or config.get("model_type") != "jukebox":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise IncompatibleCheckpoint(
            f"{repo_id} is not a Jukebox model (its config.json says model_type {found!r})."
        )
    try:
        index_path = fetch.hub_file(cache, repo_id, HUB_INDEX, revision=revision, progress=progress)
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except RemoteFileMissing:
        weight_map = None  # a single-file repository
    except (OSError, ValueError, KeyError) as err:
        raise IncompatibleCheckpoint(f"{repo_id}'s {HUB_INDEX} is not a valid shard index ({err}).") from err
    return {"config": config, "weight_map": weight_map, "commit": config_path.parent.name}


def _download_from_hub(cache, entry, parts, store, keep_source, force, progress) -> None:
    revision = None  # registry parts always come from the main branch (other revisions: remote.fetch_repo)

    repo = entry.hub_repo
    manifest = hub_manifest(cache, repo, revision, progress)
    weight_map = manifest["weight_map"]
    if weight_map is None:
        shards = [HUB_SINGLE]
    else:
        prefixes = tuple(p.hub_prefix for p in parts)
        shards = sorted({f for k, f in weight_map.items() if k.startswith(prefixes)})
        if not shards:
            raise IncompatibleCheckpoint(f"{repo}'s index lists no tensors under {', '.join(prefixes)}.")
    sizes = _hub_sizes(repo, shards, revision)
    converted = sum(native_size(p, store) for p in parts)
    fetch.check_space(cache, sum(sizes) + converted, f"Downloading {entry.name}")
    paths = [
        fetch.hub_weight_file(cache, repo, shard, revision=revision, extra_bytes=converted, progress=progress)
        for shard in shards
    ]
    state = ShardedState([load_source(p) for p in paths])
    info = {"kind": "hub", "repo": repo, "revision": revision or "main", "commit": manifest["commit"],
            "files": {s: p.name for s, p in zip(shards, paths, strict=True)}}  # fmt: skip
    for part in parts:
        with cache.lock(part.id):
            if cache.has_part(part.id) and not force:
                continue
            convert_part(cache, part, state, "hub", source=info, dtype=store, progress=progress)
    del state
    if not keep_source:
        for path in paths:
            path.unlink(missing_ok=True)


def _hub_sizes(repo: str, files: list[str], revision: str | None) -> list[int]:
    """Announced sizes of hub files (0 where unknown: offline, or the file is cached already)."""
    if fetch.is_offline():
        return [0] * len(files)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    sizes = []
    for name in files:
        try:
            url = hf_hub_url(repo, name, revision=revision, endpoint=fetch.hub_endpoint())
            sizes.append(get_hf_file_metadata(url).size or 0)
        except Exception:  # the download itself reports network errors properly
            sizes.append(0)
    return sizes


def verify_model(
    name: str, *, cache_dir: str | Path | None = None, progress: ProgressCallback = noop
) -> dict:
    """Re-hash every converted part of ``name`` against its record; a corrupt part is deleted.

    Returns:
        part id -> ``"ok"``, ``"missing"`` or ``"corrupt (removed)"``.

    Raises:
        ChecksumMismatch: some part was corrupt (after all parts were checked; the message names them).
    """
    status = model_status(name, cache_dir=cache_dir)
    cache = ModelCache(cache_dir)
    results = {}
    for part_status in status.parts:
        part = part_status.part
        if not part_status.present:
            results[part.id] = "missing"
            continue
        progress(StageStarted(f"verify {part.id}", None, "file"))
        ok = sha256_file(part_status.path) == part_status.record.get("sha256")
        progress(StageFinished(f"verify {part.id}"))
        if not ok:
            cache.remove_part(part.id)
        results[part.id] = "ok" if ok else "corrupt (removed)"
    bad = [p for p, r in results.items() if r.startswith("corrupt")]
    if bad:
        raise ChecksumMismatch(
            f"{', '.join(bad)} of {name} did not match the recorded sha256 and were removed; run `jukebox models "
            f"download {name}` to fetch them again."
        )
    return results


def remove_model(name: str, *, cache_dir: str | Path | None = None, shared: bool = False) -> dict:
    """Delete ``name``'s converted parts (and any kept sources).

    Parts shared with another model that is (partly) in the cache are kept unless ``shared`` is True.

    Returns:
        ``{"removed": [...], "kept": [...], "bytes": freed}``.
    """
    entry = get_model(name)
    cache = ModelCache(cache_dir)
    others = {
        p for m in MODELS.values() if m.name != name and model_status(m.name, cache_dir=cache.root).state != "no"
        for p in m.parts
    }  # fmt: skip
    removed, kept, freed = [], [], 0
    for part in entry.part_list():
        if part.id in others and not shared:
            if cache.has_part(part.id):
                kept.append(part.id)
            continue
        with cache.lock(part.id):
            if cache.has_part(part.id):
                removed.append(part.id)
            freed += cache.remove_part(part.id)
            original = cache.original_path(part.original_file)
            for path in (original, original.with_name(original.name + ".incomplete")):
                freed += disk_usage(path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    if entry.hub_repo:
        slug = entry.hub_repo.replace("/", "--")
        for folder in (cache.hub_dir / f"models--{slug}", cache.root / "downloads" / slug):
            freed += disk_usage(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return {"removed": removed, "kept": kept, "bytes": freed}


def list_models(*, cache_dir: str | Path | None = None) -> list[ModelStatus]:
    return [model_status(name, cache_dir=cache_dir) for name in MODELS]


__all__ = [
    "PARTS",
    "ModelStatus",
    "download_model",
    "ensure_vqvae",
    "list_models",
    "model_files",
    "model_status",
    "part_files",
    "remove_model",
    "verify_model",
]
