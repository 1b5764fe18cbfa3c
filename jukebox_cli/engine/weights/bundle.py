"""A whole Jukebox model: the VQ-VAE, one prior per level, and the labeller of each prior.

``loading.load_bundle`` makes one from any ``--model`` value. Priors are loaded one level at a time, so a 5B
model never needs two of them in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE, prior_file
from jukebox_cli.engine.checkpoints.native import load_native, read_config, save_native
from jukebox_cli.engine.errors import IncompatibleCheckpoint
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.labels import Labeller, LabelSet
from jukebox_cli.engine.models.prior import Prior, PriorConfig
from jukebox_cli.engine.models.vqvae import VQVAE

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
    source: str | None = None  # the --model value it was loaded from (default: its name)
    # A released model not yet in the cache: the architecture only (a meta-device VQ-VAE, no prior loader), so
    # a plan and its time estimate need no download; ``fetch(progress)`` downloads it and returns the real one.
    fetch: Callable[..., Bundle] | None = None
    download_bytes: int = 0  # what ``fetch`` downloads, about (pending bundles only)
    released: str | None = None  # the registry name of a released model (pending bundles only)

    @property
    def pending(self) -> bool:
        """The weights are not here yet (see ``fetch``)."""
        return self.fetch is not None

    def fetched(self, progress: Callable | None = None) -> Bundle:
        """This bundle with its weights: itself, or what ``fetch`` downloads and loads."""
        if self.fetch is None:
            return self
        return self.fetch() if progress is None else self.fetch(progress=progress)

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

    @classmethod
    def from_files(cls, name: str, vqvae_file: Path, prior_files: dict[int, Path]) -> Bundle:
        """A bundle over native part files: the VQ-VAE is loaded now, each prior when its level needs it."""
        configs = {level: read_config(path, "prior") for level, path in prior_files.items()}

        def load(level: int, device: torch.device, linear_dtype: torch.dtype | None) -> Prior:
            return load_native(prior_files[level], kind="prior", device=device, linear_dtype=linear_dtype)

        return cls(name, load_native(vqvae_file, kind="vqvae"), configs, load, pretrained=True)

    @property
    def spec(self) -> str:
        """The ``--model`` value that loads this model again (what a run records, so it can resume)."""
        return self.source or self.name

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
        return build_prior(self.prior_configs[level], "meta")

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


def save_bundle(bundle: Bundle, folder: str | Path) -> Path:
    """Write every part in the native layout (one safetensors file each), one prior at a time."""
    folder = Path(folder)
    save_native(bundle.vqvae, folder / VQVAE_FILE)
    for level in bundle.prior_configs:
        prior = bundle.load_prior(level)
        save_native(prior, folder / prior_file(level))
        bundle.release_prior(prior)
    return folder
