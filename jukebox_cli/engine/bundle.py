"""A whole Jukebox model: the VQ-VAE, one prior per level, and the labeller of each prior.

``--model`` names one of these: ``tiny-random`` (tiny presets, seeded random weights, a made-up label set),
a folder in our native layout (``vqvae.safetensors`` + ``prior_level_{L}.safetensors``), or a released model
name (which needs its downloaded weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jukebox_cli.engine.errors import CheckpointNotFound, IncompatibleCheckpoint
from jukebox_cli.engine.labels import Labeller
from jukebox_cli.engine.prior import Prior, PriorConfig
from jukebox_cli.engine.vqvae import VQVAE

TINY_RANDOM = "tiny-random"
RELEASED_MODELS = ("1b_lyrics", "5b", "5b_lyrics")
_TINY_PRIORS = {2: "tiny_1b_lyrics", 1: "tiny_upsampler_level_1", 0: "tiny_upsampler_level_0"}


def prior_file(level: int) -> str:
    return f"prior_level_{level}.safetensors"


@dataclass
class Bundle:
    """The parts of one model. Priors live on the CPU until their level is sampled."""

    name: str
    vqvae: VQVAE
    priors: dict[int, Prior]
    pretrained: bool
    labellers: dict[int, Labeller] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for level, prior in self.priors.items():
            c = prior.config
            if (
                c.codebook_size != self.vqvae.config.codebook_size
                or c.hop_length != self.vqvae.hop_lengths[level]
            ):
                raise IncompatibleCheckpoint(
                    f"The level-{level} prior ({c.codebook_size} codes, hop {c.hop_length}) does not fit the "
                    f"VQ-VAE ({self.vqvae.config.codebook_size} codes, hop {self.vqvae.hop_lengths[level]})."
                )
            self.labellers.setdefault(level, Labeller(c.label_set, c.max_genres, c.n_tokens))

    @property
    def top_level(self) -> int:
        return max(self.priors)

    @property
    def sample_rate(self) -> int:
        return self.vqvae.sample_rate

    def describe(self) -> dict:
        """JSON-friendly summary (for run records and ``--json``)."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "sample_rate": self.sample_rate,
            "hop_lengths": list(self.vqvae.hop_lengths),
            "priors": {
                level: {
                    "n_ctx": p.config.n_ctx,
                    "width": p.config.width,
                    "depth": p.config.depth,
                    "label_set": p.config.label_set,
                    "lyrics": p.config.n_tokens,
                }
                for level, p in sorted(self.priors.items())
            },  # fmt: skip
        }


def _tiny_random(seed: int = 0) -> Bundle:
    from jukebox_cli.engine.api import build_prior, build_vqvae

    vqvae = build_vqvae("tiny", seed=seed)
    priors = {level: build_prior(name, seed=seed + 1 + level) for level, name in _TINY_PRIORS.items()}
    return Bundle(TINY_RANDOM, vqvae, priors, pretrained=False)


def _load_native_prior(path: Path) -> Prior:
    from safetensors.torch import load_file

    from jukebox_cli.engine.checkpoints import FORMAT_NAME, import_state_dict, read_native_metadata

    metadata = read_native_metadata(path)
    if metadata.get("format") != FORMAT_NAME or metadata.get("kind") != "prior":
        raise IncompatibleCheckpoint(f"{path} is not a jukebox-cli prior file.")
    config = PriorConfig.from_dict(json.loads(metadata["config"]))
    with torch.device("meta"):
        prior = Prior(config)
    import_state_dict(prior, load_file(str(path)), "native")
    return prior.eval()


def load_bundle(spec: str | Path) -> Bundle:
    """Resolve a ``--model`` value to a whole model (on the CPU).

    Raises:
        CheckpointNotFound: unknown name or missing files, or a released model whose weights are not here.
        IncompatibleCheckpoint: parts that do not belong together.
    """
    from jukebox_cli.engine.checkpoints import load_vqvae

    text = str(spec)
    path = Path(spec)
    if text == TINY_RANDOM and not path.exists():
        return _tiny_random()
    if text in RELEASED_MODELS and not path.exists():
        raise CheckpointNotFound(
            f"Model {text!r} needs OpenAI's released weights, which are not downloaded; automatic downloads "
            f"(jukebox models download {text}) arrive in a later release. Use --model {TINY_RANDOM} to try "
            "the pipeline."
        )
    if not path.is_dir():
        known = ", ".join((TINY_RANDOM, *RELEASED_MODELS))
        raise CheckpointNotFound(f"No model folder at {path} and no model of that name (known: {known}).")
    priors = {}
    for level in range(8):
        candidate = path / prior_file(level)
        if candidate.is_file():
            priors[level] = _load_native_prior(candidate)
    if not priors:
        raise CheckpointNotFound(f"{path} holds no prior_level_N.safetensors files.")
    vqvae = load_vqvae(path).model
    return Bundle(path.name, vqvae, priors, pretrained=True)


def save_bundle(bundle: Bundle, folder: str | Path) -> Path:
    """Write every part in the native layout (one safetensors file each)."""
    from jukebox_cli.engine.checkpoints import save_native

    folder = Path(folder)
    save_native(bundle.vqvae, folder / "vqvae.safetensors")
    for level, prior in bundle.priors.items():
        save_native(prior, folder / prior_file(level))
    return folder
