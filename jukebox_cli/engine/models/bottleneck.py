"""Vector quantiser of the VQ-VAE: one EMA codebook per level, as in the original.

The codebook ``k`` is a *buffer* (it is learnt by exponential moving averages, not by gradients), saved in
checkpoints as ``bottleneck.level_blocks.{L}.k``. ``k_sum``/``k_elem`` are the EMA statistics; like the
original, they are not saved and are re-seeded with :meth:`BottleneckBlock.restore_k` when training resumes
from a released model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass
class QuantizeOutput:
    """Result of quantising one level.

    Attributes:
        codes: ``[B, T]`` code indices.
        x_q: ``[B, D, T]`` quantised latent (straight-through in training mode).
        commit_loss: scalar, ``||x_q - x||^2 / numel(x)``.
        metrics: training statistics (``fit``, ``pn``, and in training mode ``entropy``, ``used_curr``,
            ``usage``, ``dk``, ``restarts``).
    """

    codes: torch.Tensor
    x_q: torch.Tensor
    commit_loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class BottleneckBlock(nn.Module):
    """One level's codebook: nearest-neighbour quantisation, EMA update and dead-code restarts."""

    def __init__(self, codebook_size: int, emb_width: int, ema_decay: float, threshold: float = 1.0) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.emb_width = emb_width
        self.ema_decay = ema_decay
        self.threshold = threshold
        self.register_buffer("k", torch.zeros(codebook_size, emb_width))
        self.register_buffer("k_sum", torch.zeros(codebook_size, emb_width), persistent=False)
        self.register_buffer("k_elem", torch.zeros(codebook_size), persistent=False)
        # False until the codebook holds real vectors: set by the first training batch or by loading weights.
        self.initialised = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, D401
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "k" in state_dict:
            self.initialised = True

    # -- training-time codebook maintenance ------------------------------------------------------------

    def _random_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``codebook_size`` random rows of ``x`` [N, D], tiled with small noise when N is too small."""
        n_rows, width = x.shape
        if n_rows < self.codebook_size:
            n_repeats = math.ceil(self.codebook_size / n_rows)
            # The noise keeps repeated rows distinct, so restarted codes do not collapse onto one vector.
            x = x.repeat(n_repeats, 1) + torch.randn(n_rows * n_repeats, width, device=x.device) * (
                0.01 / math.sqrt(width)
            )
        rows = x[torch.randperm(x.shape[0], device=x.device)][: self.codebook_size]
        if _distributed():
            dist.broadcast(rows, 0)  # every rank must restart codes with the same vectors
        return rows

    @torch.no_grad()
    def init_codebook(self, x: torch.Tensor) -> None:
        """Initialise ``k`` from random rows of a batch of latents ``x`` [N, D]."""
        rows = self._random_rows(x)
        self.k.copy_(rows)
        self.k_sum.copy_(rows)
        self.k_elem.fill_(1.0)
        self.initialised = True

    @torch.no_grad()
    def restore_k(self, num_tokens: int, threshold: float = 1.0) -> None:
        """Re-seed the EMA statistics of a trained codebook before further training.

        Args:
            num_tokens: ``(sample_length // hop) * world_size``; each code is credited an equal share.
            threshold: the dead-code threshold to use from now on (``revival_threshold``).
        """
        share = num_tokens / self.codebook_size
        self.k_sum.copy_(self.k * share)
        self.k_elem.fill_(share)
        self.threshold = threshold
        self.initialised = True

    @torch.no_grad()
    def _update_codebook(self, x: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        one_hot = torch.zeros(self.codebook_size, x.shape[0], device=x.device)
        one_hot.scatter_(0, codes.view(1, -1), 1)
        sums = one_hot @ x  # (codebook_size, D)
        counts = one_hot.sum(dim=-1)  # (codebook_size,)
        rows = self._random_rows(x)
        if _distributed():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        k_old = self.k.clone()
        mu = self.ema_decay
        self.k_sum.mul_(mu).add_(sums, alpha=1 - mu)
        self.k_elem.mul_(mu).add_(counts, alpha=1 - mu)
        used = (self.k_elem >= self.threshold).float().unsqueeze(1)
        # Dead codes (EMA count below threshold) restart at random encoder outputs (Jukebox paper, section 3).
        self.k.copy_(used * (self.k_sum / self.k_elem.clamp_min(1e-12).unsqueeze(1)) + (1 - used) * rows)
        probs = counts / counts.sum().clamp_min(1)
        return {
            "entropy": -(probs * torch.log(probs + 1e-8)).sum(),
            "used_curr": (counts >= self.threshold).sum().float(),
            "usage": used.sum(),
            "dk": torch.linalg.vector_norm(self.k - k_old) / math.sqrt(self.k.numel()),
            "restarts": (1 - used).sum(),
        }

    # -- quantisation --------------------------------------------------------------------------------

    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest code of every row of ``x`` [N, D]; returns (codes [N], mean squared distance)."""
        # ||x||^2 - 2 x.k + ||k||^2, minimised with torch.min (first index on ties), as the original does.
        k_t = self.k.t()
        distance = x.pow(2).sum(dim=-1, keepdim=True) - 2 * (x @ k_t) + k_t.pow(2).sum(dim=0, keepdim=True)
        min_distance, codes = torch.min(distance, dim=-1)
        return codes, min_distance.mean()

    def dequantise(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> latent [B, D, T]."""
        return nn.functional.embedding(codes, self.k).permute(0, 2, 1)  # (B, D, T)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, D, T] -> codes [B, T]."""
        batch, width, length = z.shape
        rows = z.permute(0, 2, 1).reshape(-1, width)  # (B*T, D)
        codes, _ = self.quantise(rows)
        return codes.view(batch, length)

    def forward(self, z: torch.Tensor, update_codebook: bool = True) -> QuantizeOutput:
        """Quantise a latent [B, D, T]; in training mode also update the codebook (EMA + restarts)."""
        batch, width, length = z.shape
        rows = z.permute(0, 2, 1).reshape(-1, width)  # (B*T, D)
        metrics: dict[str, torch.Tensor] = {
            "pn": torch.linalg.vector_norm(rows - rows.mean()) / math.sqrt(rows.numel())
        }
        if self.training and not self.initialised:
            self.init_codebook(rows.detach())
        codes, fit = self.quantise(rows.detach())
        metrics["fit"] = fit
        # Dequantise with the codebook as it was when the codes were chosen, then update it (the original's
        # order); using the freshly updated (or restarted) vectors would skew the commit loss.
        x_q = self.dequantise(codes.view(batch, length))
        if self.training and update_codebook:
            metrics.update(self._update_codebook(rows.detach(), codes))
        codes = codes.view(batch, length)
        commit_loss = torch.linalg.vector_norm(x_q.detach() - z) ** 2 / z.numel()
        # Straight-through estimator: the decoder's gradient flows to the encoder as if quantisation were
        # the identity (van den Oord et al. 2017).
        x_q = z + (x_q - z).detach() if self.training else x_q.detach()
        return QuantizeOutput(codes=codes, x_q=x_q, commit_loss=commit_loss, metrics=metrics)


class Bottleneck(nn.Module):
    """The per-level codebooks (``level_blocks.{L}``), level 0 first."""

    def __init__(
        self, levels: int, codebook_size: int, emb_width: int, ema_decay: float, threshold: float = 1.0
    ) -> None:
        super().__init__()
        self.level_blocks = nn.ModuleList(
            BottleneckBlock(codebook_size, emb_width, ema_decay, threshold) for _ in range(levels)
        )

    def __getitem__(self, level: int) -> BottleneckBlock:
        return self.level_blocks[level]
