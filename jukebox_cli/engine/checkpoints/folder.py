"""The files of a model folder in the native layout: the one place their names are spelled.

A model folder holds ``vqvae.safetensors`` and one ``prior_level_{L}.safetensors`` per level it has a prior
for (``native.py`` reads and writes each file). This module needs no torch: naming a model's files is cheap.
"""

from __future__ import annotations

from pathlib import Path

from jukebox_cli.engine.errors import CheckpointNotFound

VQVAE_FILE = "vqvae.safetensors"
PRIOR_FILE_PATTERN = "prior_level_*.safetensors"
#: Levels a model folder may hold priors for (the released models have three).
MAX_LEVELS = 8


def prior_file(level: int) -> str:
    """The file name of the level-``level`` prior in a model folder."""
    return f"prior_level_{level}.safetensors"


def folder_files(folder: str | Path) -> tuple[Path, dict[int, Path]]:
    """(VQ-VAE file, level -> prior file) of a model folder in the native layout.

    Raises:
        CheckpointNotFound: no prior files, or no VQ-VAE file, in the folder.
    """
    folder = Path(folder)
    priors = {lv: folder / prior_file(lv) for lv in range(MAX_LEVELS) if (folder / prior_file(lv)).is_file()}
    if not priors:
        raise CheckpointNotFound(f"{folder} holds no {PRIOR_FILE_PATTERN.replace('*', 'N')} files.")
    if not (folder / VQVAE_FILE).is_file():
        raise CheckpointNotFound(f"{folder} is a folder without a {VQVAE_FILE} file.")
    return folder / VQVAE_FILE, priors
