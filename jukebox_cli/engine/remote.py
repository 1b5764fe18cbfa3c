"""``--model`` values that name something to download: a hub repository (``owner/name[@revision]``) or a URL.

A hub repository is one of:

- a released model's repository (``openai/jukebox-1b-lyrics``): the registry entry, shared parts and all;
  with an explicit revision it is treated like any other transformers-layout repository;
- a repository in our native layout (``vqvae.safetensors`` + ``prior_level_N.safetensors``, e.g. a model
  trained with ``jukebox train`` and uploaded): its files are used as they are;
- a transformers-layout Jukebox repository (``config.json`` with ``model_type: jukebox``, sharded ``.bin``
  files): each part is identified by its keys and shapes among the released architectures and converted once
  into ``parts/<owner>--<name>@<commit>/``.

A URL names a folder holding native files (the same names), or, for the VQ-VAE alone, one file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from jukebox_cli.engine import fetch
from jukebox_cli.engine.cache import ModelCache
from jukebox_cli.engine.errors import IncompatibleCheckpoint, RemoteFileMissing
from jukebox_cli.engine.files import write_json
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.registry import PARTS, Part, model_for_repo

_REPO = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?")
NATIVE_VQVAE = "vqvae.safetensors"
_LEVELS = range(3)
# Which released parts may sit at each place of a hub bundle.
_CANDIDATES = {
    "vqvae": ("vqvae",),
    0: ("upsampler_level_0",),
    1: ("upsampler_level_1",),
    2: ("1b_lyrics_top", "5b_lyrics_top", "5b_top"),
}


def native_prior(level: int) -> str:
    return f"prior_level_{level}.safetensors"


def parse_repo(text: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision); None for anything else."""
    match = _REPO.fullmatch(text)
    return (match["repo"], match["rev"]) if match else None


def is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


def fetch_repo(
    text: str, *, cache_dir: str | Path | None = None, progress: ProgressCallback = noop
) -> tuple[Path, dict[int, Path]]:
    """Native files (VQ-VAE, level -> prior) of the model in hub repository ``owner/name[@revision]``.

    Raises:
        CheckpointNotFound, NetworkError, ChecksumMismatch, DiskSpaceError: as for downloads.
        IncompatibleCheckpoint: not a Jukebox model, or weights of no known architecture.
    """
    from jukebox_cli.engine import models

    repo, revision = parse_repo(text) or (text, None)
    entry = model_for_repo(repo)
    if entry is not None and revision is None:
        models.download_model(entry.name, cache_dir=cache_dir, progress=progress)
        return models.model_files(entry.name, cache_dir=cache_dir)
    cache = ModelCache(cache_dir)
    try:
        vqvae = fetch.hub_weight_file(cache, repo, NATIVE_VQVAE, revision=revision, progress=progress)
    except RemoteFileMissing:
        pass  # not our native layout
    else:
        priors = {}
        for level in _LEVELS:
            try:
                priors[level] = fetch.hub_weight_file(
                    cache, repo, native_prior(level), revision=revision, progress=progress
                )
            except RemoteFileMissing:
                continue  # a model without this level
        return vqvae, priors
    return _convert_transformers_repo(cache, repo, revision, progress)


def _convert_transformers_repo(
    cache: ModelCache, repo: str, revision: str | None, progress: ProgressCallback
) -> tuple[Path, dict[int, Path]]:
    from jukebox_cli.engine.convert import ShardedState, convert_part, load_source
    from jukebox_cli.engine.models import HUB_SINGLE, hub_manifest

    manifest = hub_manifest(cache, repo, revision, progress)
    folder = f"{repo.replace('/', '--')}@{manifest['commit'][:12]}"
    marker = cache.root / "parts" / folder / "complete.json"
    if not marker.is_file():
        weight_map = manifest["weight_map"]
        shards = sorted(set(weight_map.values())) if weight_map else [HUB_SINGLE]
        paths = [fetch.hub_weight_file(cache, repo, s, revision=revision, progress=progress) for s in shards]
        state = ShardedState([load_source(p) for p in paths])
        info = {"kind": "hub", "repo": repo, "revision": revision or "main", "commit": manifest["commit"]}
        done = {}
        for place in ("vqvae", *_LEVELS):
            part = _identify(state, place)
            if part is None:
                continue
            part_id = f"{folder}/{part.id}"
            with cache.lock(part_id):
                if not cache.has_part(part_id):
                    convert_part(cache, part, state, "hub", source=info, progress=progress, record_id=part_id)
            done[str(place)] = part_id
        del state
        if "vqvae" not in done:
            raise IncompatibleCheckpoint(f"{repo} holds no VQ-VAE (no 'vqvae.*' tensors).")
        if len(done) == 1:
            raise IncompatibleCheckpoint(f"{repo} holds no priors (no 'priors.N.*' tensors).")
        write_json(marker, done, overwrite=True)
        for path in paths:
            path.unlink(missing_ok=True)
    done = json.loads(marker.read_text(encoding="utf-8"))
    priors = {int(place): cache.part_file(pid) for place, pid in done.items() if place != "vqvae"}
    return cache.part_file(done["vqvae"]), priors


def _identify(state, place) -> Part | None:
    """The released part whose keys and shapes match the tensors at ``place`` of a hub bundle.

    Raises:
        IncompatibleCheckpoint: tensors are there but fit no released architecture (the closest's message).
    """
    from jukebox_cli.engine.checkpoints import source_key_plan
    from jukebox_cli.engine.convert import skeleton

    candidates = [PARTS[p] for p in _CANDIDATES[place]]
    if not any(k.startswith(candidates[0].hub_prefix) for k in state):
        return None
    first_error = None
    for part in candidates:
        try:
            source_key_plan(skeleton(part), state, "hub")
            return part
        except IncompatibleCheckpoint as err:
            first_error = first_error or err
    raise first_error


def fetch_url(
    url: str, *, cache_dir: str | Path | None = None, progress: ProgressCallback = noop
) -> tuple[Path, dict[int, Path]]:
    """Native files from a URL: one file (a VQ-VAE alone, no priors) or a folder of native files."""
    cache = ModelCache(cache_dir)
    folder = cache.root / "urls" / hashlib.sha1(url.encode()).hexdigest()[:16]
    if not url.endswith("/") and url.rsplit("/", 1)[-1].count("."):
        prefix, name = url.rsplit("/", 1)
        return fetch.url_file(cache, name, [prefix + "/"], dest=folder / name, progress=progress), {}
    prefix = url if url.endswith("/") else url + "/"
    vqvae = fetch.url_file(cache, NATIVE_VQVAE, [prefix], dest=folder / NATIVE_VQVAE, progress=progress)
    priors = {}
    for level in _LEVELS:
        try:
            priors[level] = fetch.url_file(
                cache, native_prior(level), [prefix], dest=folder / native_prior(level), progress=progress
            )
        except RemoteFileMissing:
            continue
    return vqvae, priors
