"""Optimisation pieces of the training loop: the learning-rate schedule and the weight EMA."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from jukebox_cli.engine.errors import TrainingError

if TYPE_CHECKING:
    from jukebox_cli.engine.train.loop import TrainConfig


def lr_factor(step: int, config: TrainConfig) -> float:
    """The multiplier on ``config.lr`` for the optimizer step with index ``step`` (0-based).

    Linear warmup reaches the full LR at step ``warmup - 1`` (the original multiplies by ``step / warmup``,
    which makes its first step a no-op), then ``decay`` brings it to ``min_lr_ratio`` at ``steps``.

    Args:
        step: the index of the step about to be taken.
        config: the warmup, decay, min_lr_ratio and steps settings.

    Returns:
        The factor, in [0, 1].
    """
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.decay == "none":
        return 1.0
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    remaining = 0.5 * (1.0 + math.cos(math.pi * progress)) if config.decay == "cosine" else 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * remaining


class WeightEMA:
    """A float32 shadow of the trainable parameters, as the original keeps: ``ema = mu ema + (1 - mu) p``.

    Buffers are not averaged: they are used as they are (the VQ-VAE codebook is a buffer learnt by its own
    EMA in `models.bottleneck`). The shadow is what is evaluated, exported and saved next to the training
    weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    def _pairs(self, model: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for name, param in model.named_parameters():
            if name in self.shadow:
                yield self.shadow[name], param

    def decay_at(self, step: int | None) -> float:
        """The decay used after optimizer step ``step``: ``min(decay, (1 + step) / (10 + step))``.

        Without this warm-up, a 0.999 average of a short run is still mostly the random initialisation (after
        300 steps, 74 % of it), which made held-out metrics of early checkpoints meaningless.
        """
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """One EMA step towards ``model``'s current parameters (``step``: the optimizer step just taken)."""
        decay = self.decay_at(step)
        for shadow, param in self._pairs(model):
            shadow.mul_(decay).add_(param.detach().float(), alpha=1.0 - decay)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Put the EMA weights into ``model`` for the duration of the block, then restore the training ones."""
        pairs = list(self._pairs(model))
        with torch.no_grad():
            backup = [param.detach().clone() for _, param in pairs]
            for shadow, param in pairs:
                param.copy_(shadow)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (_, param), saved in zip(pairs, backup, strict=True):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise TrainingError("The checkpoint's EMA does not cover the same parameters as the model.")
        for name, value in state.items():
            self.shadow[name].copy_(value)
