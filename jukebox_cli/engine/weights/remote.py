"""``--model`` values that name something to download: a hub repository (``owner/name[@revision]``) or a URL.

A hub repository is one of (a released model's own repository without a revision is not fetched here but
as that released model, see ``resolve.py``):

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
from pathlib import Path

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE, prior_file
from jukebox_cli.engine.checkpoints.layouts import source_key_plan
from jukebox_cli.engine.errors import IncompatibleCheckpoint, RemoteFileMissing
from jukebox_cli.engine.files import write_json
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.weights import download as fetch
from jukebox_cli.engine.weights.cache import ModelCache
from jukebox_cli.engine.weights.convert import ShardedState, convert_part, load_source, skeleton
from jukebox_cli.engine.weights.registry import PARTS, Part
from jukebox_cli.engine.weights.released import HUB_SINGLE, hub_manifest

_LEVELS = range(3)
# Which released parts may sit at each place of a hub bundle.
_CANDIDATES = {
    "vqvae": ("vqvae",),
    0: ("upsampler_level_0",),
    1: ("upsampler_level_1",),
    2: ("1b_lyrics_top", "5b_lyrics_top", "5b_top"),
}


def fetch_repo(
    repo: str,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> tuple[Path, dict[int, Path]]:
    """Native files (VQ-VAE, level -> prior) of the model in hub repository ``repo`` at ``revision``.

    Raises:
        CheckpointNotFound, NetworkError, ChecksumMismatch, DiskSpaceError: as for downloads.
        IncompatibleCheckpoint: not a Jukebox model, or weights of no known architecture.
    """
    cache = ModelCache(cache_dir)
    try:
        vqvae = fetch.hub_weight_file(cache, repo, VQVAE_FILE, revision=revision, progress=progress)
    except RemoteFileMissing:
        pass  # not our native layout
    else:
        priors = {}
        for level in _LEVELS:
            try:
                priors[level] = fetch.hub_weight_file(
                    cache, repo, prior_file(level), revision=revision, progress=progress
                )
            except RemoteFileMissing:
                continue  # a model without this level
        return vqvae, priors
    return _convert_transformers_repo(cache, repo, revision, progress)


def _convert_transformers_repo(
    cache: ModelCache, repo: str, revision: str | None, progress: ProgressCallback
) -> tuple[Path, dict[int, Path]]:
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
    vqvae = fetch.url_file(cache, VQVAE_FILE, [prefix], dest=folder / VQVAE_FILE, progress=progress)
    priors = {}
    for level in _LEVELS:
        try:
            priors[level] = fetch.url_file(
                cache, prior_file(level), [prefix], dest=folder / prior_file(level), progress=progress
            )
        except RemoteFileMissing:
            continue
    return vqvae, priors
