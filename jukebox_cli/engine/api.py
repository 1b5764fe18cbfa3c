"""Top-level constructors (the names other code relies on)."""

from __future__ import annotations

import torch

from jukebox_cli.engine.checkpoints import build_vqvae_from_config
from jukebox_cli.engine.presets import vqvae_config
from jukebox_cli.engine.vqvae import VQVAE


def build_vqvae(preset: str = "jukebox", device: str | torch.device = "cpu", seed: int | None = 0) -> VQVAE:
    """A VQ-VAE with preset ``preset``'s architecture and freshly initialised weights.

    Args:
        preset: a name from ``presets.VQVAE_PRESETS`` (``"jukebox"`` is the released architecture).
        device: where to build it; ``"meta"`` builds shapes only (no memory, no initialisation).
        seed: initialisation seed (None: use the global RNG).

    Raises:
        ConfigError: unknown preset.
    """
    return build_vqvae_from_config(vqvae_config(preset), device, seed)
