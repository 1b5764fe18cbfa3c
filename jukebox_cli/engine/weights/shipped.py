"""Models shipped inside the package: ``--model demo`` works offline right after ``pip install``.

The demo model (``data/models/demo/``) is a small VQ-VAE with a top prior and two upsamplers, trained on the
dev corpus by ``scripts/train_demo.sh``; its ``MODEL_CARD.md`` says how and how well.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE
from jukebox_cli.engine.errors import CheckpointNotFound

DEMO = "demo"
SHIPPED_MODELS = (DEMO,)


def shipped_folder(name: str) -> Path:
    """The folder of the shipped model ``name`` (native layout: ``vqvae.safetensors``, priors, card).

    Raises:
        CheckpointNotFound: the installation lacks the model's files (e.g. a checkout without them).
    """
    folder = Path(str(resources.files("jukebox_cli"))) / "data" / "models" / name
    if not (folder / VQVAE_FILE).is_file():
        raise CheckpointNotFound(
            f"The bundled {name!r} model is missing from this installation ({folder}); reinstall jukebox-cli, "
            "or rebuild it with scripts/train_demo.sh."
        )
    return folder
