"""Loading what a ``--model`` value names (``resolve.py`` decides what it names): a whole model, a VQ-VAE
alone, or the files of a model to download.

Adding a source of checkpoints means a new kind in ``resolve.resolve`` and its case in :func:`model_files`
here (and in :func:`load_vqvae` if it can hold a VQ-VAE alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE, folder_files, prior_file
from jukebox_cli.engine.checkpoints.layouts import (
    detect_layout,
    import_state_dict,
    load_torch_file,
    original_vqvae_config,
)
from jukebox_cli.engine.checkpoints.native import FORMAT_NAME, load_native, read_native_metadata
from jukebox_cli.engine.errors import CheckpointNotFound, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models.builders import build_prior, build_vqvae
from jukebox_cli.engine.models.presets import NEEDS_WEIGHTS, prior_config, vqvae_config
from jukebox_cli.engine.models.vqvae import VQVAEConfig
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.weights import released, remote
from jukebox_cli.engine.weights.adapters import ADAPTER_FILE, load_adapter, with_adapters
from jukebox_cli.engine.weights.bundle import Bundle
from jukebox_cli.engine.weights.cache import ModelCache
from jukebox_cli.engine.weights.registry import MODELS
from jukebox_cli.engine.weights.resolve import (
    TINY_RANDOM,
    TINY_RANDOM_PRIORS,
    TINY_RANDOM_VQVAE,
    ModelSource,
    known_names,
    resolve,
    split_adapters,
)

# The released VQ-VAE is one part shared by every released model; this one is asked for when none is named.
_DEFAULT_RELEASED = "1b_lyrics"


# -- whole models ---------------------------------------------------------------------------------------------


def model_files(
    source: ModelSource,
    *,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: ProgressCallback = noop,
) -> tuple[Path, dict[int, Path]]:
    """(VQ-VAE file, level -> prior file) in the native layout for a model with priors.

    Args:
        source: from :func:`resolve`.
        cache_dir: the model cache (default: ``$JUKEBOX_CACHE`` or the user cache folder).
        download: fetch a released model's missing parts instead of failing (repositories and URLs are
            always fetched).
        progress: download and conversion events.

    Raises:
        CheckpointNotFound: missing files, a released model not downloaded, or a source without priors.
        IncompatibleCheckpoint: files of another kind or architecture.
    """
    kind = source.kind
    if kind in ("folder", "shipped"):
        return folder_files(source.path)
    if kind == "released":
        if download:
            released.download_model(source.released, cache_dir=cache_dir, progress=progress)
        return released.model_files(source.released, cache_dir=cache_dir)
    if kind in ("url", "repo"):
        vqvae, priors = _fetch(source, cache_dir=cache_dir, progress=progress)
        if not priors:
            raise CheckpointNotFound(f"{source.spec} holds a VQ-VAE but no priors; it cannot generate.")
        return vqvae, priors
    what = "a checkpoint file" if kind == "file" else f"the {kind} {source.spec!r}"
    raise CheckpointNotFound(
        f"{source.spec} is {what}, not a whole model with priors (give a model folder, {known_names()}, a hub "
        "repo or a URL)."
    )


def _fetch(
    source: ModelSource,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> tuple[Path, dict[int, Path]]:
    """(VQ-VAE file, level -> prior file) of a URL or a hub repository (a released model's repository at
    ``revision``, too), fetched into the cache."""
    if source.kind == "url":
        return remote.fetch_url(source.url, cache_dir=cache_dir, progress=progress)
    repo = source.repo or MODELS[source.released].hub_repo
    return remote.fetch_repo(repo, revision or source.revision, cache_dir=cache_dir, progress=progress)


@dataclass(frozen=True)
class Downloaded:
    """What :func:`download` made present: the model's name and its native files (part name -> path)."""

    name: str
    files: dict[str, Path]
    status: released.ModelStatus | None = None  # released models: the cache's record of each part


def download(
    spec: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    source: str | None = None,
    dtype: str | None = None,
    keep_source: bool = False,
    force: bool = False,
    local: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> Downloaded:
    """Make a model's files present in the cache (download and convert what is missing).

    Args:
        spec: a released model, a hub repository ``owner/name[@revision]`` or a URL.
        revision: a hub branch, tag or commit (a released model's repository at a revision is fetched like
            any other repository, apart from the released parts).
        source, dtype, keep_source, force, local: released models only, see ``released.download_model``.

    Raises:
        ConfigError: a value that names nothing to download (a folder, a file, a shipped model, a preset).
        CheckpointNotFound, NetworkError, ChecksumMismatch, DiskSpaceError, IncompatibleCheckpoint.
    """
    found = resolve(spec)
    if found.kind == "released" and revision is None:
        status = released.download_model(found.released, cache_dir=cache_dir, source=source, dtype=dtype,
                                          keep_source=keep_source, force=force, local=local,
                                          progress=progress)  # fmt: skip
        files = {p.part.id: p.path for p in status.parts}
        return Downloaded(found.released, files, status)
    if found.kind not in ("released", "repo", "url"):
        raise ConfigError(f"{spec} is a {found.kind.replace('-', ' ')}, not something to download.")
    vqvae, priors = _fetch(found, revision=revision, cache_dir=cache_dir, progress=progress)
    if found.kind == "url":
        name = found.url
    else:
        rev = revision or found.revision
        name = (found.repo or MODELS[found.released].hub_repo) + (f"@{rev}" if rev else "")
    return Downloaded(
        name, {"vqvae": vqvae, **{Path(prior_file(lv)).stem: p for lv, p in sorted(priors.items())}}
    )


def load_bundle(
    spec: str | Path,
    *,
    cache_dir: str | Path | None = None,
    download: bool = False,
    defer: bool = False,
    adapters: Sequence[str | Path] = (),
    progress: ProgressCallback = noop,
) -> Bundle:
    """A whole model (VQ-VAE on the CPU, priors loaded on demand) from any ``--model`` value.

    Args:
        spec: see the module docstring.
        cache_dir: the model cache (default: ``$JUKEBOX_CACHE`` or the user cache folder).
        download: fetch a released model's missing parts instead of failing (repositories and URLs are
            always fetched).
        defer: a released model that is not all in the cache comes back pending (``Bundle.fetch``): its
            architecture is known without a download, so it can be planned offline; nothing is fetched
            until ``bundle.fetched()``.
        adapters: LoRA adapter files or LoRA training runs, merged into their level's prior as it loads
            (``weights.adapters``), after any that ``spec`` names (``BASE+adapter=PATH``).
        progress: download and conversion events.

    Raises:
        CheckpointNotFound: unknown name or missing files, or a released model not downloaded; no adapter.
        IncompatibleCheckpoint: parts that do not belong together; an adapter trained on another base (when
            its prior loads).
    """
    base, named = split_adapters(spec)
    if named or adapters:
        bundle = load_bundle(base, cache_dir=cache_dir, download=download, defer=defer, progress=progress)
        return with_adapters(bundle, [*named, *adapters])
    source = resolve(spec)
    if source.kind == "tiny-random":
        return tiny_random()
    if (
        defer
        and source.kind == "released"
        and not released.model_status(source.released, cache_dir=cache_dir).complete
    ):
        return _released_architecture(source, cache_dir)
    if source.kind == "folder" and (source.path / ADAPTER_FILE).is_file():
        raise CheckpointNotFound(
            f"{spec} is a LoRA run (adapters only): use --model {load_adapter(source.path).base or 'BASE'} "
            f"--adapter {spec}."
        )
    vqvae, priors = model_files(source, cache_dir=cache_dir, download=download, progress=progress)
    bundle = Bundle.from_files(source.name, vqvae, priors)
    bundle.source = source.spec
    return bundle


def _released_architecture(source: ModelSource, cache_dir: str | Path | None) -> Bundle:
    """A pending bundle of a released model: its registry presets on the meta device, fetched on demand."""
    parts = MODELS[source.released].part_list()
    configs = {p.level: prior_config(p.preset) for p in parts if p.kind == "prior"}
    vqvae = next(p for p in parts if p.kind == "vqvae")

    def not_fetched(level: int, device: torch.device, linear_dtype: torch.dtype | None):
        raise CheckpointNotFound(f"{source.spec} is not downloaded yet; call bundle.fetched() first.")

    def fetch(progress: ProgressCallback = noop) -> Bundle:
        return load_bundle(source.spec, cache_dir=cache_dir, download=True, progress=progress)

    entry = MODELS[source.released]
    return Bundle(source.name, build_vqvae(vqvae.preset, "meta"), configs, not_fetched, pretrained=True,
                  source=source.spec, fetch=fetch, download_bytes=entry.hub_size or entry.original_size(),
                  released=source.released)  # fmt: skip


def tiny_random(seed: int = 0) -> Bundle:
    """The untrained test model: tiny presets at every level, weights from ``seed``."""
    vqvae = build_vqvae(TINY_RANDOM_VQVAE, seed=seed)
    priors = {level: build_prior(name, seed=seed + 1 + level) for level, name in TINY_RANDOM_PRIORS.items()}
    return Bundle.from_models(TINY_RANDOM, vqvae, priors, pretrained=False)


# -- a VQ-VAE alone ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedVQVAE:
    """A VQ-VAE and where it came from (for messages and run records)."""

    model: nn.Module
    source: str
    pretrained: bool


def load_vqvae(
    spec: str | Path,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: ProgressCallback = noop,
) -> LoadedVQVAE:
    """The VQ-VAE of any ``--model`` value (a whole model's, or a checkpoint or preset of one alone).

    Args:
        spec: any name in ``resolve.NAMES`` (whole models, and the VQ-VAE presets ``tiny``, ``small``: random
            weights from ``seed``; ``jukebox``: the released VQ-VAE), a model folder, a native ``.safetensors`` file, an
            original-layout ``.pth``/``.pth.tar`` file, or a hub-layout ``.bin``/``.safetensors`` file with
            ``vqvae.*`` keys.
        device: where the model should live.
        seed: initialisation seed for presets without weights.
        cache_dir: the model cache (for released names).
        download: fetch the released VQ-VAE when it is not in the cache (only that part).
        progress: download events.

    Raises:
        CheckpointNotFound: no such file, or released weights that are not downloaded.
        IncompatibleCheckpoint: a checkpoint of another kind or architecture.
        CheckpointError: an unreadable file.
    """
    source = resolve(spec)
    kind = source.kind
    if kind == "tiny-random":
        return LoadedVQVAE(build_vqvae(TINY_RANDOM_VQVAE, device, 0), TINY_RANDOM, False)
    if kind == "preset" and source.spec not in NEEDS_WEIGHTS:
        return LoadedVQVAE(build_vqvae(source.spec, device, seed), source.name, False)
    if kind in ("released", "preset"):
        name = source.released or _DEFAULT_RELEASED
        cache = ModelCache(cache_dir)
        if not cache.has_part("vqvae") and download:
            released.ensure_vqvae(name, cache_dir=cache_dir, progress=progress)
        if not cache.has_part("vqvae"):
            raise CheckpointNotFound(
                f"The released VQ-VAE is not downloaded; run `jukebox models download {name}` (or pass the "
                "path of vqvae.pth.tar with --model)."
            )
        return LoadedVQVAE(load_native(cache.part_file("vqvae"), kind="vqvae", device=device), name, True)
    if kind in ("url", "repo"):
        file, _ = _fetch(source, cache_dir=cache_dir, progress=progress)
        return LoadedVQVAE(_vqvae_from_file(file, device), source.name, True)
    if kind == "file":
        return LoadedVQVAE(_vqvae_from_file(source.path, device), str(source.path), True)
    file = source.path / VQVAE_FILE  # a model folder or a shipped model
    if not file.is_file():
        raise CheckpointNotFound(f"{source.path} is a folder without a {VQVAE_FILE} file.")
    name = source.name if kind == "shipped" else str(file)
    return LoadedVQVAE(load_native(file, kind="vqvae", device=device), name, True)


def _vqvae_from_file(path: Path, device: str | torch.device) -> nn.Module:
    """A VQ-VAE from a checkpoint file in any layout (the architecture from its hparams, else the released one).

    ``.pth``/``.tar``/``.bin`` files are read with ``torch.load``; anything else (downloads are stored under
    their hash, without a suffix) as safetensors: ours, or the hub layout.
    """
    if path.suffix not in (".pth", ".tar", ".bin"):
        if read_native_metadata(path).get("format") == FORMAT_NAME:
            return load_native(path, kind="vqvae", device=device)
        state, config = load_file(str(path)), vqvae_config("jukebox")
    else:
        state = load_torch_file(path)
        hps = state.get("hps") if isinstance(state, Mapping) else None
        values = original_vqvae_config(hps) if isinstance(hps, Mapping) else {}
        config = VQVAEConfig(**values) if values else vqvae_config("jukebox")
    if not isinstance(state, Mapping):
        raise IncompatibleCheckpoint(f"{path} does not contain a state dict.")
    model = build_vqvae(config, "meta")
    import_state_dict(model, state, detect_layout(state))
    return model.to(device).eval()
