"""Building models from a preset name or a config: the one place each kind of model is constructed.

``device="meta"`` builds shapes only (no memory, no initialisation), which is how checkpoints are loaded
(tensors are assigned into a meta skeleton) and how plans size a 5B prior without holding it.
"""

from __future__ import annotations

import torch
from torch import nn

from jukebox_cli.engine.models.presets import prior_config, vqvae_config
from jukebox_cli.engine.models.prior import Prior, PriorConfig
from jukebox_cli.engine.models.transformer import linear_weight_keys
from jukebox_cli.engine.models.vqvae import VQVAE, VQVAEConfig


def build_vqvae(
    preset: str | VQVAEConfig = "jukebox", device: str | torch.device = "cpu", seed: int | None = 0
) -> VQVAE:
    """A VQ-VAE with a preset's (or a config's) architecture and freshly initialised weights.

    Untrained codebooks are seeded from the encoders' outputs on noise (see :func:`_seed_codebooks`).

    Args:
        preset: a name from ``presets.VQVAE_PRESETS`` (``"jukebox"`` is the released architecture) or a config.
        device: where to build it; ``"meta"`` builds shapes only.
        seed: initialisation seed (None: use the global RNG).

    Raises:
        ConfigError: unknown preset.
    """
    config = vqvae_config(preset) if isinstance(preset, str) else preset
    device = torch.device(device)
    if device.type == "meta":
        with device:
            return VQVAE(config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = VQVAE(config).eval()
        _seed_codebooks(model)
    return model.to(device).eval()


def build_prior(preset: str | PriorConfig, device: str | torch.device = "cpu", seed: int | None = 0) -> Prior:
    """A prior with a preset's (or a config's) architecture and freshly initialised weights.

    Presets: ``upsampler_level_0``, ``upsampler_level_1``, ``1b_lyrics``, ``5b``, ``5b_lyrics`` and their
    ``tiny_*`` variants. Conv1D weights are half precision where the config says so (``fp16_params``: the
    released 5B priors were trained and stored that way).

    Raises:
        ConfigError: unknown preset.
    """
    config = prior_config(preset) if isinstance(preset, str) else preset
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


def build_model(config: VQVAEConfig | PriorConfig, device: str | torch.device = "meta") -> nn.Module:
    """The model a config describes (a VQ-VAE or a prior), by default as a meta-device skeleton."""
    if isinstance(config, VQVAEConfig):
        return build_vqvae(config, device)
    return build_prior(config, device)


@torch.no_grad()
def _seed_codebooks(model: VQVAE, n_samples: int = 2**15) -> None:
    """Seed untrained codebooks from encoder outputs on noise, like the original's data-driven init.

    An all-zero codebook maps every latent to code 0, so an untrained model would not exercise its codes.
    The blocks stay marked uninitialised, so training still re-initialises them from real data.
    """
    noise = 0.1 * torch.randn(1, 1, max(n_samples, model.hop_lengths[-1] * 8))
    for level, block in enumerate(model.bottleneck.level_blocks):
        latent = model.encoders[level](noise)
        block.init_codebook(latent.permute(0, 2, 1).reshape(-1, latent.shape[1]))
        block.initialised = False
