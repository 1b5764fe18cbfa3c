"""What a model is made of, for ``jukebox models info``: its parts, parameters, sizes, labels and files.

Any ``--model`` value that names a whole model on this machine can be described: the shipped ``demo``, a model
folder, ``tiny-random`` and the released models (downloaded or not). A model file's config and tensor sizes
are read from its safetensors header, so describing a folder loads no weights and imports no torch; only
the presets (``tiny-random``, released parts not yet downloaded) need torch, and import it when asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from jukebox_cli.engine.checkpoints.folder import folder_files
from jukebox_cli.engine.checkpoints.header import read_config_values, read_metadata, read_tensor_summary
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.weights import released
from jukebox_cli.engine.weights.registry import MODELS, WEIGHTS_LICENSE
from jukebox_cli.engine.weights.resolve import (
    TINY_RANDOM_PRIORS,
    TINY_RANDOM_VQVAE,
    ModelSource,
    label_tables,
    resolve,
)

CARD_FILE = "MODEL_CARD.md"


@dataclass(frozen=True)
class PartInfo:
    """One part of a model (its VQ-VAE or the prior of one level).

    Attributes:
        id: the part's name (``vqvae``, ``prior_level_2``; a released part's registry id).
        kind: ``"vqvae"`` or ``"prior"``.
        level: the prior's level (None for the VQ-VAE).
        preset: the named config it was built from, when there is one.
        parameters: values it holds (a file's: counted from its header).
        present: whether its file is on this machine (always for folders; random models have none).
        path: its file, when it has one.
        bytes: the file's size, when present.
        dtypes: the dtypes its file stores.
        source: where a released part came from (the cache's record).
        config: its config as stored (or the preset's).
    """

    id: str
    kind: str
    level: int | None
    preset: str | None
    parameters: int
    present: bool
    path: str | None
    bytes: int | None
    dtypes: list[str]
    source: dict | None
    config: dict


@dataclass(frozen=True)
class ModelInfo:
    """A whole model: what :func:`describe` returns.

    Attributes:
        name: how messages name it.
        kind: the resolver's kind (``shipped``, ``folder``, ``tiny-random``, ``released``).
        description: one line about it.
        labels: its top prior's label set (``v2``, ``v3``, ``tiny``, ``custom``).
        artists, genres: rows of the top prior's artist and genre tables.
        lyrics: whether the top prior reads lyrics.
        parameters: all parts together.
        pretrained: False for random weights.
        folder: where its files are (the model folder; the cache's parts folder; None for random weights).
        card: its model card, when it has one.
        license: the terms of the weights, when known.
        parts: each part.
        hub_repo, sources: a released model's origins.
    """

    name: str
    kind: str
    description: str
    labels: str
    artists: int
    genres: int
    lyrics: bool
    parameters: int
    pretrained: bool
    folder: str | None
    card: str | None
    license: str | None
    parts: list[PartInfo]
    hub_repo: str | None = None
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["parts"] = {p.id: {k: v for k, v in asdict(p).items() if k != "id"} for p in self.parts}
        data["sources"] = list(self.sources)
        return data


def describe(spec: str | Path, *, cache_dir: str | Path | None = None) -> ModelInfo:
    """Describe the whole model ``spec`` names, without loading its weights.

    Raises:
        CheckpointNotFound: an unknown name, or a folder without model files.
        ConfigError: a value that names no whole model on this machine (a single file, a VQ-VAE preset, a hub
            repository or URL not fetched here).
        CheckpointError: a model file whose header cannot be read.
    """
    source = resolve(spec)
    if source.kind in ("folder", "shipped"):
        return _folder(source)
    if source.kind == "tiny-random":
        return _tiny_random(source)
    if source.kind == "released":
        return _released(source, cache_dir)
    what = {"file": "a single file", "preset": "a VQ-VAE preset"}.get(source.kind, "a remote model")
    raise ConfigError(
        f"{source.spec} is {what}, not a whole model on this machine; `jukebox models info` describes demo, "
        "tiny-random, a released model or a model folder."
    )


def _labels(source: ModelSource) -> tuple[str, int, int]:
    version, tables = label_tables(source.spec)
    return version, tables.n_artists, tables.n_genres


def _file_part(part_id: str, kind: str, level: int | None, path: Path) -> PartInfo:
    count, dtypes = read_tensor_summary(path)
    return PartInfo(part_id, kind, level, None, count, True, str(path), path.stat().st_size, dtypes, None,
                    read_config_values(path))  # fmt: skip


def _folder(source: ModelSource) -> ModelInfo:
    vqvae, priors = folder_files(source.path)
    parts = [_file_part("vqvae", "vqvae", None, vqvae)]
    parts += [_file_part(p.stem, "prior", level, p) for level, p in sorted(priors.items(), reverse=True)]
    top = parts[1].config
    card = source.path / CARD_FILE
    version, artists, genres = _labels(source)
    if source.kind == "shipped":
        description = "the model shipped with jukebox-cli, trained on a small corpus of game music"
    else:
        description = f"a model folder ({read_metadata(vqvae).get('format', 'unknown format')} layout)"
    return ModelInfo(
        source.name, source.kind, description, version, artists, genres, bool(top.get("n_tokens")),
        sum(p.parameters for p in parts), True, str(source.path), str(card) if card.is_file() else None,
        None, parts,
    )  # fmt: skip


def _tiny_random(source: ModelSource) -> ModelInfo:
    # lazy: the presets and builders need torch, which describing a folder does without
    from jukebox_cli.engine.models.builders import build_prior, build_vqvae
    from jukebox_cli.engine.models.presets import prior_config, vqvae_config

    def count(model) -> int:  # what its file would store, as a folder's count is
        return sum(t.numel() for t in model.state_dict().values())

    vqvae = build_vqvae(TINY_RANDOM_VQVAE, device="meta")
    parts = [PartInfo("vqvae", "vqvae", None, TINY_RANDOM_VQVAE, count(vqvae), False, None, None, [], None,
                      vqvae_config(TINY_RANDOM_VQVAE).to_dict())]  # fmt: skip
    for level, preset in sorted(TINY_RANDOM_PRIORS.items(), reverse=True):
        config = prior_config(preset)
        parts.append(PartInfo(f"prior_level_{level}", "prior", level, preset, count(build_prior(preset, device="meta")),
                              False, None, None, [], None, config.to_dict()))  # fmt: skip
    version, artists, genres = _labels(source)
    return ModelInfo(
        source.name, source.kind, "tiny presets with seeded random weights and a made-up label set (tests)",
        version, artists, genres, bool(parts[1].config.get("n_tokens")), sum(p.parameters for p in parts),
        False, None, None, None, parts,
    )  # fmt: skip


def _released(source: ModelSource, cache_dir: str | Path | None) -> ModelInfo:
    status = released.model_status(source.released, cache_dir=cache_dir)
    entry = MODELS[source.released]
    parts = []
    for p in status.parts:
        if p.present:
            config = read_config_values(p.path)
            dtypes = read_tensor_summary(p.path)[1]
        else:
            config, dtypes = _preset_config(p.part.kind, p.part.preset), []
        parts.append(PartInfo(p.part.id, p.part.kind, p.part.level, p.part.preset, p.part.params, p.present,
                              str(p.path), p.size if p.present else None, dtypes, p.record.get("source"),
                              config))  # fmt: skip
    version, artists, genres = _labels(source)
    top = next(p for p in parts if p.level == 2)
    return ModelInfo(
        entry.name, source.kind, entry.description, version, artists, genres, bool(top.config.get("n_tokens")),
        entry.params(), True, str(status.parts[0].path.parent), None, WEIGHTS_LICENSE, parts, entry.hub_repo,
        entry.sources,
    )  # fmt: skip


def _preset_config(kind: str, preset: str) -> dict:
    # lazy: the presets need torch; a downloaded part's config is read from its file's header instead
    from jukebox_cli.engine.models.presets import prior_config, vqvae_config

    return (vqvae_config(preset) if kind == "vqvae" else prior_config(preset)).to_dict()
