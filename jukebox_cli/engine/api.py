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


def build_prior(preset: str, device: str | torch.device = "cpu", seed: int | None = 0):
    """A prior with preset ``preset``'s architecture and freshly initialised weights.

    Presets: ``upsampler_level_0``, ``upsampler_level_1``, ``1b_lyrics``, ``5b``, ``5b_lyrics`` and their
    ``tiny_*`` variants. ``device="meta"`` builds shapes only (no memory), as needed for the 5B models.

    Raises:
        ConfigError: unknown preset.
    """
    from jukebox_cli.engine.presets import prior_config

    return build_prior_from_config(prior_config(preset), device, seed)


def build_prior_from_config(config, device: str | torch.device = "cpu", seed: int | None = 0):
    """A prior with ``config``'s architecture; ``device="meta"`` builds shapes only (no initialisation).

    Conv1D weights are half precision where the config says so (``fp16_params``, the released 5B priors).
    """
    from jukebox_cli.engine.prior import Prior
    from jukebox_cli.engine.transformer import linear_weight_keys

    device = torch.device(device)
    if device.type == "meta":
        with device:
            model = Prior(config)
    else:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = Prior(config)
        model = model.to(device)
    if config.fp16_params:
        weights = model.state_dict(keep_vars=True)
        for key in linear_weight_keys(model):
            weights[key].data = weights[key].data.half()
    return model.eval()
