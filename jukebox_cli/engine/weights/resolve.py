"""What a ``--model`` value names: every command and the Python API read it here (``loading.py`` then
loads what it names).

A value is read as the first of these that fits:

1. an existing path: a model folder in the native layout (``vqvae.safetensors`` + ``prior_level_N.safetensors``;
   a training run is one), or a checkpoint file (a VQ-VAE: native or hub-layout ``.safetensors``, OpenAI's
   ``.pth.tar``, a hub ``.bin``);
2. a model shipped in the package (``demo``, see ``shipped.py``);
3. ``tiny-random``: the tiny presets with seeded random weights and a made-up label set (tests, smoke runs);
4. a released model (``1b_lyrics``, ``5b``, ``5b_lyrics``): converted parts in the model cache (``released.py``);
5. a VQ-VAE preset (``jukebox``: the released VQ-VAE, which needs its weights; ``tiny``, ``small``: random);
6. a URL of a native model folder or file (``remote.py``);
7. a hub repository ``owner/name[@revision]``; a released model's own repository without a revision is that
   released model (its parts are shared with the other released models in the cache).

Any of these may be followed by ``+adapter=PATH`` (repeated): LoRA adapters merged into the priors as they
load (``adapters.py``). ``load_bundle`` records such a value as the spec of an adapted model, so that a run
sampled with ``--adapter`` resumes with it; everything that only names the model reads the base before it.

Adding a source of checkpoints means a new kind in :func:`resolve` and its case in ``loading.model_files``
(and ``loading.load_vqvae`` if it can hold a VQ-VAE alone). This module imports no torch, so that naming a
model (``jukebox labels --model 1b_lyrics``) stays cheap.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from jukebox_cli.engine.checkpoints.folder import folder_files
from jukebox_cli.engine.checkpoints.header import read_config_values
from jukebox_cli.engine.errors import CheckpointNotFound, ConfigError
from jukebox_cli.engine.models.labels import LabelSet, label_set_for_model, load_label_set
from jukebox_cli.engine.weights import shipped
from jukebox_cli.engine.weights.registry import MODELS, model_for_repo

TINY_RANDOM = "tiny-random"
ADAPTER_MARK = "+adapter="
#: A LoRA training run's adapter file: ``--adapter RUN`` names the one in it.
ADAPTER_FILE = "adapter.safetensors"
#: The presets ``tiny-random`` is built from: its VQ-VAE, and its prior per level.
TINY_RANDOM_VQVAE = "tiny"
TINY_RANDOM_PRIORS = {2: "tiny_1b_lyrics", 1: "tiny_upsampler_level_1", 0: "tiny_upsampler_level_0"}
#: VQ-VAE presets (``models/presets.py``, which needs torch; a test keeps the two in step).
VQVAE_PRESET_NAMES = ("jukebox", "tiny", "small")
_REPO = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?")

KINDS = ("folder", "file", "shipped", "tiny-random", "released", "preset", "url", "repo")


@dataclass(frozen=True)
class ModelSource:
    """What a ``--model`` value names.

    Attributes:
        spec: the value as given.
        kind: one of :data:`KINDS`.
        name: how runs and messages name the model.
        path: the folder or file (``folder``, ``file``, ``shipped``).
        released: the released model's registry name (``released``).
        repo: hub repository id (``repo``); ``revision`` its branch, tag or commit if given.
        url: the URL (``url``).
    """

    spec: str
    kind: str
    name: str
    path: Path | None = None
    released: str | None = None
    repo: str | None = None
    revision: str | None = None
    url: str | None = None


def parse_repo(text: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision); None for anything else.

    Raises:
        ConfigError: a revision that reads as a path (``..``, ``.`` or empty parts, a leading or trailing
            ``/``): the revision becomes part of cache paths and URLs, where such parts would climb out.
    """
    match = _REPO.fullmatch(text)
    if not match:
        return None
    revision = match["rev"]
    if revision is not None and any(part in ("", ".", "..") for part in revision.split("/")):
        raise ConfigError(
            f"{text!r}: the revision {revision!r} looks like a path; give a branch, tag or commit "
            "(branches may hold '/', but no '.', '..' or empty parts)."
        )
    return match["repo"], revision


def is_url(text: str) -> bool:
    return text.startswith(("https://", "http://"))


#: Every name :func:`resolve` knows, in the order it reads them: whole models (any command), then VQ-VAE
#: presets (a VQ-VAE alone: ``reconstruct``, ``load_vqvae``). Messages and help list names from here.
MODEL_NAMES = (*shipped.SHIPPED_MODELS, TINY_RANDOM, *MODELS)
NAMES = (*MODEL_NAMES, *VQVAE_PRESET_NAMES)


def known_names(*, vqvae: bool = False) -> str:
    """The names :func:`resolve` knows, for messages: whole models, and with ``vqvae`` the VQ-VAE presets."""
    names = ", ".join(MODEL_NAMES)
    return f"{names}; for a VQ-VAE alone also {', '.join(VQVAE_PRESET_NAMES)}" if vqvae else names


def split_adapters(spec: str | Path) -> tuple[str, list[str]]:
    """``(base, adapter paths)`` of a ``--model`` value (``BASE+adapter=PATH...``; none: ``[]``)."""
    base, *adapters = str(spec).split(ADAPTER_MARK)
    return base, adapters


def with_adapter_spec(base: str, adapters: list[str]) -> str:
    """The ``--model`` value of ``base`` with ``adapters`` (inverse of :func:`split_adapters`)."""
    return "".join([base, *(ADAPTER_MARK + a for a in adapters)])


def model_identity(spec: str | Path) -> tuple[str, ...]:
    """What a ``--model`` value names, its spelling aside: paths made absolute, a released model's own hub
    repository read as the released model. Two values name the same model when their identities are equal
    (``--resume`` compares what the user asks with what the run recorded)."""
    base, adapters = split_adapters(spec)
    try:
        source = resolve(base)
    except (CheckpointNotFound, ConfigError):  # named as spelt: it can equal only itself
        head = base
    else:
        head = str(source.path.resolve()) if source.path is not None else source.released or source.spec
    files = [Path(a).expanduser() for a in adapters]
    return (head, *(str((f / ADAPTER_FILE if f.is_dir() else f).resolve()) for f in files))


def resolve(spec: str | Path) -> ModelSource:
    """Read a ``--model`` value (see the module docstring for the order). Touches no network.

    Raises:
        CheckpointNotFound: nothing of that name (the message lists what is known).
    """
    text = split_adapters(spec)[0]
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSource(text, "folder", path.name, path=path)
    if path.is_file():
        return ModelSource(text, "file", text, path=path)
    if text in shipped.SHIPPED_MODELS:
        return ModelSource(text, "shipped", text, path=shipped.shipped_folder(text))
    if text == TINY_RANDOM:
        return ModelSource(text, "tiny-random", text)
    if text in MODELS:
        return ModelSource(text, "released", text, released=text)
    if text in VQVAE_PRESET_NAMES:
        return ModelSource(text, "preset", text)
    if is_url(text):
        return ModelSource(text, "url", text, url=text)
    repo = parse_repo(text)
    if repo is not None:
        repo_id, revision = repo
        entry = model_for_repo(repo_id)
        if entry is not None and revision is None:
            return ModelSource(text, "released", text, released=entry.name, repo=repo_id)
        return ModelSource(text, "repo", text, repo=repo_id, revision=revision)
    close = difflib.get_close_matches(text, NAMES, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise CheckpointNotFound(
        f"No file or folder at {path}, and no model of that name.{hint} (Names: {known_names(vqvae=True)}; "
        "also a model folder, a checkpoint file, a hub repo owner/name[@rev] or a URL.)"
    )


def label_tables(spec: str | Path) -> tuple[str, LabelSet]:
    """(label set name, tables) of a model's top prior, without loading any weights.

    Raises:
        CheckpointNotFound: an unknown name, or a folder without prior files.
        ConfigError: a model whose labels cannot be known before it is downloaded.
    """
    source = resolve(spec)
    if source.kind in ("folder", "shipped"):
        _, priors = folder_files(source.path)
        config = read_config_values(priors[max(priors)])  # from the header: no torch, no weights
        version = config.get("label_set", "v2")
        tables = LabelSet.from_dict(config["labels"]) if config.get("labels") else load_label_set(version)
        return version, tables
    name = source.released or source.name
    version = label_set_for_model(name)
    return version, load_label_set(version)
