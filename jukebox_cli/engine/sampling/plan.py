"""The plan of a run before anything is sampled: per level, codes, windows, new tokens, batch and memory.

``--dry-run`` prints it; it needs only the priors' configs (a released model's plan needs no download of its
priors: their architecture is known from the registry).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jukebox_cli.engine.devices import free_memory
from jukebox_cli.engine.models.prior import Prior
from jukebox_cli.engine.sampling.batching import AUTO, batch_size, bytes_per_sample
from jukebox_cli.engine.sampling.request import CascadeRequest
from jukebox_cli.engine.sampling.windows import plan_level, window_advance
from jukebox_cli.engine.weights.bundle import Bundle


@dataclass(frozen=True)
class LevelPlan:
    """What sampling one level will do."""

    level: int
    total_codes: int
    existing_codes: int
    windows: int
    new_tokens: int
    cache_bytes_per_sample: int
    weight_bytes: int
    batch_size: int  # samples per prior call (``auto``: what free memory holds now, before the weights load)


def cache_bytes(prior: Prior, dtype: torch.dtype) -> int:
    """Bytes of one sample's key/value cache while sampling a window (measured on the meta device)."""
    cache = prior.prior.transformer.new_cache(1, dtype=dtype, device="meta")
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer is not None)


def plan_cascade(
    bundle: Bundle,
    request: CascadeRequest,
    existing: dict[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    processes: int = 1,
) -> list[LevelPlan]:
    """One :class:`LevelPlan` per requested level, top first.

    Args:
        bundle: the model (priors are built as meta-device skeletons: no weights are loaded).
        request: a validated request.
        existing: level -> codes already present (a prompt, or a run being resumed).
        dtype: the working dtype, which sizes the key/value cache.
        device: where the run will sample (its free memory sizes ``auto`` batches).
        processes: processes sharing the takes (torchrun); the batch is that of the largest share.
    """
    existing = existing or {}
    device = torch.device(device)
    free = free_memory(device) if AUTO in request.max_batch_size.values() else 0
    plans = []
    for level in request.levels:
        prior = bundle.skeleton(level)
        c = prior.config
        total = request.sample_length // c.hop_length
        windows = plan_level(
            total, existing.get(level, 0), c.n_ctx, window_advance(request.hop_fraction[level], c.n_ctx)
        )
        weights = sum(p.numel() * p.element_size() for p in prior.parameters())
        cache = cache_bytes(prior, dtype)
        batch = batch_size(request.max_batch_size[level], -(-len(request.samples) // processes), device=device,
                           per_sample=bytes_per_sample(c, cache, dtype, request.chunk_size),
                           free_bytes=max(free - weights, 0))  # fmt: skip
        plans.append(LevelPlan(level, total, existing.get(level, 0), len(windows),
                               sum(w.n_new for w in windows), cache, weights, batch))  # fmt: skip
    return plans
