"""The released Jukebox models: their parts, where each part can be downloaded, and what it loads into.

A model is a VQ-VAE plus one prior per level. The three releases share the VQ-VAE and both
upsamplers, so parts are registered once and a model lists the parts it needs: a part converted for one model
serves the others.

Two sources:

- ``"hub"``: the Hugging Face repositories ``openai/jukebox-1b-lyrics`` and ``openai/jukebox-5b-lyrics``,
  sharded pickled ``.bin`` files (float32) that hold the VQ-VAE and all three priors, with an index that maps
  every key to its shard. The hub records a sha256 for every shard, so downloads are verified.
- ``"openai"``: OpenAI's original ``.pth.tar`` files, one per part, on the storage behind a list of mirrors
  (plain 5b exists only there). No checksums were ever published for them; the size the server announces is
  checked, the hash is recorded at download time, and ``jukebox models verify`` re-checks against it.

This module must not import torch (``jukebox models list`` stays fast).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from jukebox_cli.engine.errors import CheckpointNotFound

# Prefixes OpenAI has served the files under, newest first. ``JUKEBOX_MIRRORS`` (comma-separated
# prefixes) replaces them: a local mirror, a company proxy, or a test server.
OPENAI_MIRRORS = (
    "https://openaipublic.azureedge.net/jukebox/models/",
    "https://openaipublic.blob.core.windows.net/jukebox/models/",
    "https://storage.googleapis.com/jukebox-assets/models/",
)

WEIGHTS_LICENSE = (
    "OpenAI released the Jukebox weights under the Noncommercial Use License (see "
    "https://github.com/openai/jukebox/blob/master/LICENSE); the code of jukebox-cli is MIT."
)

# Prefixes of each part inside a hub bundle (the hub numbers the priors top-down).
HUB_PREFIX = {"vqvae": "vqvae.", 2: "priors.0.", 1: "priors.1.", 0: "priors.2."}


@dataclass(frozen=True)
class Part:
    """One model part: the VQ-VAE or the prior of one level.

    Attributes:
        id: the name of the converted file in the cache (``<id>.safetensors``).
        kind: ``"vqvae"`` or ``"prior"``.
        level: the prior's level (None for the VQ-VAE).
        preset: the preset of ``presets.py`` whose architecture the weights load into.
        original_file: the ``.pth.tar`` path after an OpenAI mirror prefix.
        original_size: approximate bytes of that file (never published, inferred; Content-Length is exact).
        params: unique parameters.
    """

    id: str
    kind: str
    level: int | None
    preset: str
    original_file: str
    original_size: int
    params: int

    @property
    def hub_prefix(self) -> str:
        return HUB_PREFIX["vqvae" if self.kind == "vqvae" else self.level]


@dataclass(frozen=True)
class ModelEntry:
    """A released model: its parts (VQ-VAE first, then priors bottom-up) and its sources."""

    name: str
    description: str
    parts: tuple[str, ...]
    hub_repo: str | None
    hub_size: int | None
    label_set: str

    @property
    def sources(self) -> tuple[str, ...]:
        return ("hub", "openai") if self.hub_repo else ("openai",)

    @property
    def default_source(self) -> str:
        return self.sources[0]

    def part_list(self) -> list[Part]:
        return [PARTS[p] for p in self.parts]

    def original_size(self) -> int:
        return sum(PARTS[p].original_size for p in self.parts)

    def params(self) -> int:
        return sum(PARTS[p].params for p in self.parts)


_GB = 1_000_000_000
PARTS: dict[str, Part] = {
    p.id: p
    for p in (
        Part("vqvae", "vqvae", None, "jukebox", "5b/vqvae.pth.tar", 7_500_000, 1_485_763),
        Part(
            "upsampler_level_0",
            "prior",
            0,
            "upsampler_level_0",
            "5b/prior_level_0.pth.tar",
            int(2.33 * _GB),
            981_298_176,
        ),
        Part(
            "upsampler_level_1",
            "prior",
            1,
            "upsampler_level_1",
            "5b/prior_level_1.pth.tar",
            int(2.33 * _GB),
            981_298_176,
        ),
        Part(
            "1b_lyrics_top",
            "prior",
            2,
            "1b_lyrics",
            "1b_lyrics/prior_level_2.pth.tar",
            int(1.96 * _GB),
            942_643_200,
        ),
        Part("5b_top", "prior", 2, "5b", "5b/prior_level_2.pth.tar", int(10.29 * _GB), 5_060_452_800),
        Part(
            "5b_lyrics_top",
            "prior",
            2,
            "5b_lyrics",
            "5b_lyrics/prior_level_2.pth.tar",
            int(11.45 * _GB),
            5_640_506_800,
        ),
    )  # fmt: skip
}

_SHARED = ("vqvae", "upsampler_level_0", "upsampler_level_1")
MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in (
        ModelEntry(
            "1b_lyrics",
            "1B-parameter top prior with lyrics (v3 labels: 7898 artists, 604 genres)",
            (*_SHARED, "1b_lyrics_top"),
            "openai/jukebox-1b-lyrics",
            int(11.64 * _GB),
            "v3",
        ),
        ModelEntry(
            "5b_lyrics",
            "5B-parameter top prior with a lyric encoder (v2 labels: 4111 artists, 120 genres)",
            (*_SHARED, "5b_lyrics_top"),
            "openai/jukebox-5b-lyrics",
            int(30.4 * _GB),
            "v2",
        ),
        ModelEntry(
            "5b", "5B-parameter top prior without lyrics (v2 labels)", (*_SHARED, "5b_top"), None, None, "v2"
        ),
    )  # fmt: skip
}


def get_model(name: str) -> ModelEntry:
    """The registry entry of released model ``name``.

    Raises:
        CheckpointNotFound: unknown name (the message suggests close ones).
    """
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name.replace("-", "_").lower(), MODELS, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise CheckpointNotFound(f"Unknown model {name!r}; released models: {', '.join(MODELS)}.{hint}")


def model_for_repo(repo_id: str) -> ModelEntry | None:
    """The released model served by hub repository ``repo_id`` (None for any other repository)."""
    return next((m for m in MODELS.values() if m.hub_repo == repo_id), None)


# Where OpenAI's code (and jukebox-infer) cached the files: reused, without copying, when present.
ORIGINAL_CODE_CACHE = "~/.cache/jukebox/models/"


def openai_mirrors() -> list[str]:
    """URL prefixes to try, in order, for original files: ``JUKEBOX_MIRRORS`` if set, else OpenAI's (after the
    original code's own cache folder, when it exists). ``file://`` prefixes name local folders."""
    given = [m.strip() for m in os.environ.get("JUKEBOX_MIRRORS", "").split(",") if m.strip()]
    if not given:
        local = Path(ORIGINAL_CODE_CACHE).expanduser()
        given = ([local.as_uri() + "/"] if local.is_dir() else []) + list(OPENAI_MIRRORS)
    return [m if m.endswith("/") else m + "/" for m in given]
