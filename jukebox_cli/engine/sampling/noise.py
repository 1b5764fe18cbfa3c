"""Where a sampled token's randomness comes from: one random stream per sample, not per batch.

A token is drawn as ``argmax(p / q)`` with ``q ~ Exp(1)`` per vocabulary entry (the exponential race,
:func:`filtering.draw`). Each sample (row) reads its race values from its own generator, seeded by (run seed,
level, window, sample index). So a sample's tokens do not depend on which other samples share its batch:
``--max-batch-size`` (and how much memory happens to be free when it is ``auto``), the number of samples
asked for, and a resume from any finished window all give the same draws. Only the logits can still differ
in the last bit between batch sizes (kernels may sum in another order), which flips a draw only at a near
tie.

The values are drawn in blocks of :data:`BLOCK` tokens, one call per sample per block, so the per-token
cost is one slice of a buffer that already sits on the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

BLOCK = 32  # tokens of race values drawn per generator call (fixed: the draws depend on it)


def stream_seed(seed: int, level: int, window: int, sample: int) -> int:
    """A 63-bit seed for one sample's draws in one window, independent of batching and of earlier windows."""
    digest = hashlib.sha256(f"{seed}:{level}:{window}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class RaceNoise:
    """Exp(1) race values for the next tokens of each row, each row from its own seeded generator.

    Args:
        seeds: one seed per row (see :func:`stream_seed`).
        device: where the values are drawn and kept (the logits' device).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.device = torch.device(device)
        self._buffer: torch.Tensor | None = None  # [rows, BLOCK, V]
        self._next = BLOCK

    @classmethod
    def from_global(cls, rows: int, device: torch.device | str) -> RaceNoise:
        """Rows seeded from torch's global generator (for callers that seed with ``torch.manual_seed``)."""
        return cls(torch.randint(0, 2**62, (rows,)).tolist(), device)

    def take(self, vocab: int) -> torch.Tensor:
        """The race values [rows, vocab] of every row's next token."""
        if self._buffer is None or self._buffer.shape[-1] != vocab:
            self._buffer = torch.empty(len(self.generators), BLOCK, vocab, device=self.device)
            self._next = BLOCK
        if self._next == BLOCK:
            for row, generator in enumerate(self.generators):
                self._buffer[row].exponential_(1, generator=generator)
            self._next = 0
        values = self._buffer[:, self._next]
        self._next += 1
        return values
