"""Models shipped inside the package: ``--model demo`` works offline right after ``pip install``.

The demo model (``data/models/demo/``) is a small VQ-VAE with a top prior and two upsamplers, trained on the
dev corpus by ``scripts/train_demo.sh``; its ``MODEL_CARD.md`` says how and how well.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jukebox_cli.engine.errors import CheckpointNotFound

DEMO = "demo"
BUNDLED_MODELS = (DEMO,)


def bundled_folder(name: str) -> Path:
    """The folder of the bundled model ``name`` (native layout: ``vqvae.safetensors``, priors, card).

    Raises:
        CheckpointNotFound: the installation lacks the model's files (e.g. a checkout without them).
    """
    folder = Path(str(resources.files("jukebox_cli"))) / "data" / "models" / name
    if not (folder / "vqvae.safetensors").is_file():
        raise CheckpointNotFound(
            f"The bundled {name!r} model is missing from this installation ({folder}); reinstall jukebox-cli, "
            "or rebuild it with scripts/train_demo.sh."
        )
    return folder


def resolve(spec: str | Path) -> Path | str:
    """``spec`` itself, or the bundled model's folder when ``spec`` names one (and is not a local path)."""
    text = str(spec)
    if text in BUNDLED_MODELS and not Path(spec).exists():
        return bundled_folder(text)
    return spec
