"""How many samples go through a prior at once: a fixed ``--max-batch-size``, or ``auto``: as many as the
device's free memory holds.

A bigger batch costs little more per step than one sample (a decode step reads every weight once, whatever
the batch), so the fastest split of N samples is the fewest pieces that fit. The draws do not depend on the
split (each sample has its own random stream, ``noise.py``), so ``auto`` may pick another size on another
attempt without changing the result.
"""

from __future__ import annotations

import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.prior import PriorConfig
from jukebox_cli.engine.sampling.noise import BLOCK

AUTO = "auto"

# Shares of the free memory the batch may take. On a GPU the rest covers the allocator's fragmentation and
# kernels' workspaces; on the CPU, where running out means the process is killed, other programs too.
_GPU_SHARE = 0.8
_RAM_SHARE = 0.5


def parse_batch_size(value: int | str) -> int | str:
    """``auto`` or a positive whole number (from an option's text or a run's settings).

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")  # refused below
    if not (number >= 1 and number.is_integer()):
        raise ConfigError(f"--max-batch-size must be 'auto' or positive whole numbers; got {value!r}.")
    return int(number)


def bytes_per_sample(config: PriorConfig, cache_bytes: int, dtype: torch.dtype, chunk_size: int) -> int:
    """Memory one more sample in the batch takes while a window is sampled.

    Its key/value cache, the window's conditioning (kept in float32 and in the working dtype), and the
    largest transient of one layer while known codes are primed ``chunk_size`` at a time (float32 attention
    scores against the whole window, the MLP's hidden activations, the logits) plus its random race values.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    vocab = config.codebook_size + (config.n_vocab if config.single_enc_dec else 0)
    conditioning = config.n_ctx * config.width * (4 + itemsize)
    scores = chunk_size * config.n_ctx * config.heads * 4
    hidden = chunk_size * config.width * 8 * itemsize  # q, k, v, output and a 4x-wide MLP layer
    logits = (chunk_size + BLOCK) * vocab * 4
    return cache_bytes + conditioning + scores + hidden + logits


def batch_size(
    setting: int | str, n_samples: int, *, per_sample: int, free_bytes: int, device: torch.device
) -> int:
    """Samples per prior call: ``setting`` if it is a number (at most ``n_samples``), else as many as fit.

    Args:
        setting: ``--max-batch-size`` for this level (a number or ``auto``).
        n_samples: samples the level samples.
        per_sample: :func:`bytes_per_sample`.
        free_bytes: memory still free on ``device`` once the prior's weights are on it.
        device: where the level is sampled (GPUs may fill more of their free memory than RAM).
    """
    if setting != AUTO:
        return max(1, min(int(setting), n_samples))
    share = _GPU_SHARE if device.type == "cuda" else _RAM_SHARE
    return max(1, min(n_samples, int(free_bytes * share) // max(per_sample, 1)))
