"""A whole Jukebox model: the VQ-VAE, one prior per level, and the labeller of each prior.

``--model`` names one of these: ``demo`` (trained, shipped in the package, see ``bundled.py``),
``tiny-random`` (tiny presets, seeded random weights, a made-up label set), a folder in our native layout
(``vqvae.safetensors`` + ``prior_level_{L}.safetensors``), or a released model name (its parts are converted
files in the model cache, see ``models.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jukebox_cli.engine.errors import CheckpointNotFound, IncompatibleCheckpoint
from jukebox_cli.engine.labels import Labeller, LabelSet
from jukebox_cli.engine.prior import Prior, PriorConfig
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.vqvae import VQVAE

TINY_RANDOM = "tiny-random"
_TINY_PRIORS = {2: "tiny_1b_lyrics", 1: "tiny_upsampler_level_1", 0: "tiny_upsampler_level_0"}


def prior_file(level: int) -> str:
    return f"prior_level_{level}.safetensors"


PriorLoader = Callable[[int, torch.device, "torch.dtype | None"], Prior]


@dataclass
class Bundle:
    """The parts of one model.

    Priors are loaded one level at a time (``load_prior``), straight onto the device that samples them, and
    released afterwards (``release_prior``): a 5B model never holds two priors in memory.
    """

    name: str
    vqvae: VQVAE
    prior_configs: dict[int, PriorConfig]
    loader: PriorLoader
    pretrained: bool
    labellers: dict[int, Labeller] = field(default_factory=dict)
    resident: bool = False  # priors live in memory (moved, not reloaded, between devices)

    def __post_init__(self) -> None:
        for level, c in self.prior_configs.items():
            if (
                c.codebook_size != self.vqvae.config.codebook_size
                or c.hop_length != self.vqvae.hop_lengths[level]
            ):
                raise IncompatibleCheckpoint(
                    f"The level-{level} prior ({c.codebook_size} codes, hop {c.hop_length}) does not fit the "
                    f"VQ-VAE ({self.vqvae.config.codebook_size} codes, hop {self.vqvae.hop_lengths[level]})."
                )
            tables = LabelSet.from_dict(c.labels) if c.labels else None
            self.labellers.setdefault(level, Labeller(c.label_set, c.max_genres, c.n_tokens, tables))

    @classmethod
    def from_models(cls, name: str, vqvae: VQVAE, priors: dict[int, Prior], *, pretrained: bool) -> Bundle:
        """A bundle over priors already in memory."""

        def move(level: int, device: torch.device, linear_dtype: torch.dtype | None) -> Prior:
            return priors[level].to(device)

        return cls(name, vqvae, {lv: p.config for lv, p in priors.items()}, move, pretrained, resident=True)

    @property
    def top_level(self) -> int:
        return max(self.prior_configs)

    @property
    def sample_rate(self) -> int:
        return self.vqvae.sample_rate

    @property
    def priors(self) -> Mapping[int, Prior]:
        """Level -> prior on the CPU, loaded when looked up (prefer ``load_prior`` for large models)."""
        return _LazyPriors(self)

    def load_prior(
        self, level: int, device: str | torch.device = "cpu", linear_dtype: torch.dtype | None = None
    ) -> Prior:
        """The level's prior on ``device`` (Conv1D weights in ``linear_dtype`` when loading from files)."""
        if level not in self.prior_configs:
            raise IncompatibleCheckpoint(f"Model {self.name} has no level-{level} prior.")
        return self.loader(level, torch.device(device), linear_dtype)

    def release_prior(self, prior: Prior) -> None:
        """Give back the accelerator memory of a prior from ``load_prior``."""
        if self.resident:
            prior.to("cpu")

    def skeleton(self, level: int) -> Prior:
        """The level's prior on the meta device: structure and sizes without memory."""
        from jukebox_cli.engine.api import build_prior_from_config

        return build_prior_from_config(self.prior_configs[level], "meta")

    def describe(self) -> dict:
        """JSON-friendly summary (for run records and ``--json``)."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "sample_rate": self.sample_rate,
            "hop_lengths": list(self.vqvae.hop_lengths),
            "priors": {
                level: {
                    "n_ctx": c.n_ctx,
                    "width": c.width,
                    "depth": c.depth,
                    "label_set": c.label_set,
                    "lyrics": c.n_tokens,
                }
                for level, c in sorted(self.prior_configs.items())
            },  # fmt: skip
        }


class _LazyPriors(Mapping):
    def __init__(self, bundle: Bundle) -> None:
        self._bundle = bundle

    def __getitem__(self, level: int) -> Prior:
        if level not in self._bundle.prior_configs:
            raise KeyError(level)
        return self._bundle.load_prior(level)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._bundle.prior_configs))

    def __len__(self) -> int:
        return len(self._bundle.prior_configs)


def _tiny_random(seed: int = 0) -> Bundle:
    from jukebox_cli.engine.api import build_prior, build_vqvae

    vqvae = build_vqvae("tiny", seed=seed)
    priors = {level: build_prior(name, seed=seed + 1 + level) for level, name in _TINY_PRIORS.items()}
    return Bundle.from_models(TINY_RANDOM, vqvae, priors, pretrained=False)


def _prior_config_of(path: Path) -> PriorConfig:
    from jukebox_cli.engine.checkpoints import FORMAT_NAME, read_native_metadata

    metadata = read_native_metadata(path)
    if metadata.get("format") != FORMAT_NAME or metadata.get("kind") != "prior":
        raise IncompatibleCheckpoint(f"{path} is not a jukebox-cli prior file.")
    return PriorConfig.from_dict(json.loads(metadata["config"]))


def folder_label_set(folder: str | Path) -> tuple[str, LabelSet]:
    """(label set name, tables) of the top prior in a native model folder, read from its metadata only.

    Raises:
        CheckpointNotFound: no prior files in the folder.
    """
    from jukebox_cli.engine.labels import load_label_set

    files = sorted(Path(folder).glob("prior_level_*.safetensors"))
    if not files:
        raise CheckpointNotFound(f"{folder} holds no prior_level_N.safetensors files.")
    config = _prior_config_of(files[-1])
    tables = LabelSet.from_dict(config.labels) if config.labels else load_label_set(config.label_set)
    return config.label_set, tables


def bundle_from_files(name: str, vqvae_file: Path, prior_files: dict[int, Path]) -> Bundle:
    """A bundle over native part files: the VQ-VAE is loaded now, each prior when its level needs it."""
    from jukebox_cli.engine.checkpoints import load_native

    configs = {level: _prior_config_of(path) for level, path in prior_files.items()}

    def load(level: int, device: torch.device, linear_dtype: torch.dtype | None) -> Prior:
        return load_native(prior_files[level], kind="prior", device=device, linear_dtype=linear_dtype)

    return Bundle(name, load_native(vqvae_file, kind="vqvae"), configs, load, pretrained=True)


def load_bundle(
    spec: str | Path,
    *,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: ProgressCallback = noop,
) -> Bundle:
    """Resolve a ``--model`` value to a whole model (VQ-VAE on the CPU, priors loaded on demand).

    Args:
        spec: ``demo`` (bundled), ``tiny-random``, a released model name (``1b_lyrics``, ``5b``, ``5b_lyrics``), a folder in the
            native layout, a hub repository ``owner/name[@revision]``, or a URL (see ``remote.py``).
        cache_dir: the model cache (default: ``$JUKEBOX_CACHE`` or the user cache folder).
        download: fetch a released model's missing parts instead of failing (repositories and URLs are
            always fetched).
        progress: download and conversion events.

    Raises:
        CheckpointNotFound: unknown name or missing files, or a released model not downloaded.
        IncompatibleCheckpoint: parts that do not belong together.
    """
    from jukebox_cli.engine import bundled, models, remote

    spec = bundled.resolve(spec)
    text = str(spec)
    path = Path(spec)
    if text == TINY_RANDOM and not path.exists():
        return _tiny_random()
    if text in models.MODELS and not path.exists():
        if download:
            models.download_model(text, cache_dir=cache_dir, progress=progress)
        return bundle_from_files(text, *models.model_files(text, cache_dir=cache_dir))
    if path.is_dir():
        priors = {
            level: path / prior_file(level) for level in range(8) if (path / prior_file(level)).is_file()
        }
        if not priors:
            raise CheckpointNotFound(f"{path} holds no prior_level_N.safetensors files.")
        vqvae = path / "vqvae.safetensors"
        if not vqvae.is_file():
            raise CheckpointNotFound(f"{path} is a folder without a vqvae.safetensors file.")
        return bundle_from_files(path.name, vqvae, priors)
    if remote.is_url(text) or remote.parse_repo(text):
        fetcher = remote.fetch_url if remote.is_url(text) else remote.fetch_repo
        try:
            vqvae, priors = fetcher(text, cache_dir=cache_dir, progress=progress)
        except CheckpointNotFound as err:
            raise CheckpointNotFound(f"No model folder at {path}, and: {err}") from err
        if not priors:
            raise CheckpointNotFound(f"{text} holds a VQ-VAE but no priors; it cannot generate.")
        return bundle_from_files(text, vqvae, priors)
    known = ", ".join((*bundled.BUNDLED_MODELS, TINY_RANDOM, *models.MODELS))
    raise CheckpointNotFound(
        f"No model folder at {path} and no model of that name (known: {known}; also a hub repo owner/name[@rev] "
        "or a URL)."
    )


def save_bundle(bundle: Bundle, folder: str | Path) -> Path:
    """Write every part in the native layout (one safetensors file each), one prior at a time."""
    from jukebox_cli.engine.checkpoints import save_native

    folder = Path(folder)
    save_native(bundle.vqvae, folder / "vqvae.safetensors")
    for level in bundle.prior_configs:
        prior = bundle.load_prior(level)
        save_native(prior, folder / prior_file(level))
        bundle.release_prior(prior)
    return folder
