"""Models shipped inside the package: ``--model demo`` works offline right after ``pip install``.

The demo model (``data/models/demo/``) is a small VQ-VAE with a top prior and two upsamplers, trained on the
dev corpus by ``scripts/train_demo.sh``; its ``MODEL_CARD.md`` says how and how well.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE
from jukebox_cli.engine.errors import CheckpointNotFound
from jukebox_cli.engine.weights.cache import sha256_file

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


def verify_shipped(name: str) -> dict[str, str]:
    """Each file of a shipped model checked against the sha256 its ``card.json`` records: ``ok``,
    ``corrupt`` or ``missing`` (nothing is deleted: the package's own files are reinstalled, not fetched).

    Raises:
        CheckpointNotFound: the installation lacks the model, or its card.
    """
    folder = shipped_folder(name)
    try:
        files = json.loads((folder / "card.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointNotFound(f"The bundled {name!r} model has no readable card.json ({err}).") from err
    results = {}
    for file, expected in files.items():
        path = folder / file
        if not path.is_file():
            results[file] = "missing"
        else:
            results[file] = "ok" if sha256_file(path) == expected["sha256"] else "corrupt"
    return results
