"""The sparse Transformer shared by every prior and by the 5b_lyrics lyric encoder.

Module names mirror the released checkpoints (``_attn_mods.{d}.attn.c_attn.w``, ``ln_0``, ``mlp.c_fc``), so the
original layout loads without renaming. Attention types (``attn_func``, the original's numbers):

    0 dense, 1 block ("row"), 2 transpose block ("column"), 3 previous block ("previous row"),
    6 cross attention to the lyric encoder, 7 "prime" attention to the first P positions (1b_lyrics lyrics).

Two forward paths compute the same function:

* full sequence (training, teacher forcing): block structure by reshaping, as the original does;
* incremental with a :class:`KVCache`: any number of new positions at a time (one while sampling, a chunk
  while priming the cache with known codes). The cache is preallocated per layer with the smallest capacity
  its attention type needs (the whole sequence for dense/transpose layers, three blocks for block and
  previous-block layers, P positions plus a scratch slot for prime layers), so no tensor is concatenated per
  step. Position p lives at slot p % capacity, a layout the fixed-shape decode step (``static_step.py``)
  reads too, so a cache primed here can be continued there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from jukebox_cli.engine.errors import ConfigError

DENSE, BLOCK, TRANSPOSE, PREVIOUS, CROSS, PRIME = 0, 1, 2, 3, 6, 7
ATTENTION_NAMES = {DENSE: "dense", BLOCK: "block", TRANSPOSE: "transpose", PREVIOUS: "previous", CROSS: "cross",
                   PRIME: "prime"}  # fmt: skip
_MASKED = -1e9  # the original masks with an additive -1e9 (not -inf), in float32
M = TypeVar("M", bound=nn.Module)


def attention_pattern(attn_order: int, depth: int) -> list[int]:
    """The ``attn_func`` of every layer for one of the released ``attn_order`` rules."""
    lyrics_79 = [1, 2, 3] * 3 + ([1, 2, 3] * 3 + [CROSS]) * 7
    rules = {
        0: lambda d: DENSE,
        2: lambda d: [BLOCK, TRANSPOSE, PREVIOUS][d % 3],
        8: lambda d: [1, 2, 3, 1, 2, 3, 1, 2, 3, CROSS][d % 10],
        10: lambda d: lyrics_79[d % 79],
        12: lambda d: [PRIME, PRIME, DENSE][d % 3] if d % 16 == 15 else [BLOCK, TRANSPOSE, PREVIOUS][d % 3],
    }
    if attn_order not in rules:
        raise ConfigError(f"attn_order {attn_order} is not supported; use one of {sorted(rules)}.")
    return [rules[attn_order](d) for d in range(depth)]


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x), the released priors' activation."""
    return x * torch.sigmoid(1.702 * x)


class Conv1D(nn.Module):
    """The original's dense layer: ``x @ w + b`` with ``w`` stored ``[n_in, n_out]`` (not ``nn.Linear``)."""

    def __init__(self, n_in: int, n_out: int, *, zero_out: bool = False, init_scale: float = 1.0) -> None:
        super().__init__()
        self.w = nn.Parameter(
            torch.zeros(n_in, n_out) if zero_out else torch.randn(n_in, n_out) * 0.02 * init_scale
        )
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Weights follow the activations' dtype (float32 weights run in half precision when sampling in fp16).
        # Sampling makes them resident in that dtype first (with_linear_dtype), so no copy is made per call.
        w = self.w if self.w.dtype == x.dtype else self.w.to(x.dtype)
        b = self.b if self.b.dtype == x.dtype else self.b.to(x.dtype)
        flat = torch.addmm(b, x.reshape(-1, x.shape[-1]), w)
        return flat.view(*x.shape[:-1], self.w.shape[1])


def linear_weight_keys(model: nn.Module) -> set[str]:
    """State-dict keys of every Conv1D weight (what the released 5B priors store in float16)."""
    return {f"{name}.w" for name, module in model.named_modules() if isinstance(module, Conv1D)}


def with_linear_dtype(model: M, dtype: torch.dtype, *, out_major: bool = False) -> M:
    """``model`` with every Conv1D weight and bias resident in ``dtype`` (the Transformer's working dtype).

    Returns ``model`` itself when they already are. Otherwise returns a copy whose Conv1D tensors are cast once
    and whose other tensors (embeddings, LayerNorms, convolutions, which stay float32) are shared with
    ``model``: a caller's float32 model, e.g. one kept in memory between runs, is left as it was. The copy is
    for inference; its cast tensors do not require gradients.

    With ``out_major`` each weight is stored [n_out, n_in] in memory and exposed as the usual [n_in, n_out]
    through a transposed view (Conv1D's matrix product takes either), so that one output's weights are
    contiguous: a compiled decode step then streams them as dot products (see ``static_step.linear``).
    """
    convs = [m for m in model.modules() if isinstance(m, Conv1D)]

    def resident(m: Conv1D) -> bool:
        return m.w.dtype == dtype and m.b.dtype == dtype and (not out_major or m.w.t().is_contiguous())

    if all(resident(m) for m in convs):
        return model
    # deepcopy consults the memo before copying an object: pre-seeding it shares or replaces every tensor, so
    # only the module objects themselves are duplicated.
    memo: dict[int, object] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    for m in convs:
        w = m.w.detach().to(dtype)
        if out_major:
            w = w.t().contiguous().t()  # (n_in, n_out) view of (n_out, n_in) storage
        memo[id(m.w)] = nn.Parameter(w, requires_grad=False)
        memo[id(m.b)] = nn.Parameter(m.b.detach().to(dtype), requires_grad=False)
    return copy.deepcopy(model, memo)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, as the original does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, *, init_scale: float, zero_out: bool) -> None:
        super().__init__()
        self.c_fc = Conv1D(width, hidden, init_scale=init_scale)
        self.c_proj = Conv1D(hidden, width, init_scale=init_scale, zero_out=zero_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))


# -- the key/value cache -----------------------------------------------------------------------------


@dataclass
class LayerCache:
    """Keys and values of one layer: a ring of ``capacity`` positions (position p lives at p % capacity)."""

    keys: torch.Tensor  # (B, capacity, n_state)
    values: torch.Tensor  # (B, capacity, n_state)

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    def write(self, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        index = torch.arange(start, start + keys.shape[1], device=keys.device) % self.capacity
        self.keys[:, index] = keys.to(self.keys.dtype)
        self.values[:, index] = values.to(self.values.dtype)

    def read(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of positions [lo, hi) (all still held by the ring)."""
        if hi - lo <= self.capacity and lo // self.capacity == (hi - 1) // self.capacity:
            a, b = lo % self.capacity, (hi - 1) % self.capacity + 1
            return self.keys[:, a:b], self.values[:, a:b]  # contiguous: a view, no copy
        index = torch.arange(lo, hi, device=self.keys.device) % self.capacity
        return self.keys[:, index], self.values[:, index]


class KVCache:
    """Preallocated per-layer key/value storage and the number of positions processed so far (``length``).

    Create it with :meth:`Transformer.new_cache`; clear it (``reset``) between windows.
    """

    def __init__(self, layers: list[LayerCache | None]) -> None:
        self.layers = layers
        self.length = 0
        self.encoder_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(layers)

    def reset(self) -> None:
        self.length = 0
        self.encoder_kv = [None] * len(self.layers)


# -- attention ---------------------------------------------------------------------------------------


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, n_state = x.shape
    return x.view(batch, length, heads, n_state // heads).transpose(1, 2)  # (B, heads, L, head_dim)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)  # (B, L, n_state)


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None,
    keep: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v per head; scores masked and normalised in float32.

    q [N, Lq, n_state], k/v [N, Lk, n_state], mask [Lq, Lk] or [N, Lq, Lk] (1 = may attend) or None.
    ``keep`` receives the probabilities [N, heads, Lq, Lk] (lyric alignment reads them).
    """
    q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])  # (N, heads, Lq, Lk)
    if mask is not None:
        mask = mask.to(scores.dtype)
        mask = mask.unsqueeze(-3) if mask.dim() == 3 else mask  # (N, 1, Lq, Lk) or (Lq, Lk)
        scores = scores * mask + _MASKED * (1 - mask)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    if keep is not None:
        keep.append(probs)
    return _merge_heads(torch.matmul(probs, v))


def _causal(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Query i (the last q_len of k_len positions) sees keys <= its own position."""
    return torch.ones(q_len, k_len, device=device).tril(k_len - q_len)


class Attention(nn.Module):
    """One factored attention layer (``attn_func`` picks the pattern)."""

    def __init__(
        self,
        width: int,
        n_state: int,
        heads: int,
        attn_func: int,
        n_ctx: int,
        blocks: int | None,
        *,
        prime_len: int | None = None,
        init_scale: float = 1.0,
        zero_out: bool = False,
    ) -> None:
        super().__init__()
        if n_state % heads:
            raise ConfigError(f"Attention width {n_state} is not divisible by {heads} heads.")
        if attn_func in (BLOCK, TRANSPOSE, PREVIOUS) and (not blocks or n_ctx % blocks):
            raise ConfigError(f"Sequence length {n_ctx} is not divisible into {blocks} blocks.")
        self.attn_func, self.heads, self.n_ctx, self.n_state = attn_func, heads, n_ctx, n_state
        self.block_ctx = n_ctx // blocks if blocks else n_ctx
        # Prime attention reads the first P positions: the lyrics, rounded up past a multiple of `blocks`.
        self.prime_keys = (prime_len // blocks + 1) * blocks if attn_func == PRIME else 0
        if attn_func == CROSS:
            self.c_attn = Conv1D(width, n_state, init_scale=init_scale)
            self.c_enc_kv = Conv1D(width, 2 * n_state, init_scale=init_scale)
        else:
            self.c_attn = Conv1D(width, 3 * n_state, init_scale=init_scale)
        self.c_proj = Conv1D(n_state, width, init_scale=init_scale, zero_out=zero_out)
        # A list while someone records this layer's lyric attention (full passes of PRIME and CROSS only).
        self.recorded: list[torch.Tensor] | None = None

    # - full sequence ---------------------------------------------------------------------------------

    def _full(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, length, d = q.shape
        bc, f = self.block_ctx, self.attn_func
        if f == DENSE:
            return _attend(q, k, v, self.heads, _causal(length, length, q.device))
        if f == PRIME:
            keys = min(self.prime_keys, length)
            prime_mask = torch.ones(length, keys, device=q.device).tril(0)  # query i sees keys j <= i, j < P
            return _attend(q, k[:, :keys], v[:, :keys], self.heads, prime_mask, self.recorded)
        if length % bc:
            raise ConfigError(f"Full-sequence attention needs a multiple of {bc} positions, got {length}.")
        n_blocks = length // bc
        if f == BLOCK:  # fold blocks into the batch: (B * blocks, bc, d)
            q, k, v = (t.reshape(batch * n_blocks, bc, d) for t in (q, k, v))
            return _attend(q, k, v, self.heads, _causal(bc, bc, q.device)).view(batch, length, d)
        if f == TRANSPOSE:  # fold columns into the batch: (B * bc, blocks, d)
            q, k, v = (t.reshape(batch, n_blocks, bc, d).transpose(1, 2).reshape(batch * bc, n_blocks, d)
                       for t in (q, k, v))  # fmt: skip
            out = _attend(q, k, v, self.heads, _causal(n_blocks, n_blocks, q.device))
            return out.view(batch, bc, n_blocks, d).transpose(1, 2).reshape(batch, length, d)
        # PREVIOUS: each block attends to all of the block before it; block 0 to zero vectors.
        k, v = (F.pad(t.reshape(batch, n_blocks, bc, d)[:, :-1], (0, 0, 0, 0, 1, 0)).reshape(batch * n_blocks, bc, d)
                for t in (k, v))  # fmt: skip
        out = _attend(q.reshape(batch * n_blocks, bc, d), k, v, self.heads, None)
        return out.view(batch, length, d)

    # - incremental -----------------------------------------------------------------------------------

    def cache_capacity(self) -> int:
        """Positions this layer must remember while decoding (0: none)."""
        if self.attn_func in (BLOCK, PREVIOUS):
            return 3 * self.block_ctx  # current + previous block, plus room for a chunk crossing a boundary
        if self.attn_func == PRIME:
            # One more than the P keys it reads: the fixed-shape decode step writes every position and sends
            # those at or after P to this scratch slot, which nothing reads, instead of branching on the host.
            return self.prime_keys + 1
        if self.attn_func == CROSS:
            return 0
        return self.n_ctx

    def _key_range(self, start: int, end: int) -> tuple[int, int]:
        """Smallest [lo, hi) of key positions that queries [start, end) may see."""
        bc, f = self.block_ctx, self.attn_func
        if f == BLOCK:
            return start // bc * bc, end
        if f == PREVIOUS:
            return max(0, (start // bc - 1) * bc), min(end, (end - 1) // bc * bc)
        if f == PRIME:
            return 0, min(end, self.prime_keys)
        return 0, end

    def _mask(self, start: int, end: int, lo: int, hi: int, device: torch.device) -> torch.Tensor:
        i = torch.arange(start, end, device=device).unsqueeze(1)
        j = torch.arange(lo, hi, device=device).unsqueeze(0)
        bc, f = self.block_ctx, self.attn_func
        if f == BLOCK:
            allowed = (j <= i) & (j // bc == i // bc)
        elif f == TRANSPOSE:
            allowed = (j <= i) & (j % bc == i % bc)
        elif f == PREVIOUS:
            allowed = j // bc == i // bc - 1
        else:  # DENSE, PRIME (the prime range is already cut to P keys)
            allowed = j <= i
        return allowed

    def _incremental(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: LayerCache | None, start: int
    ) -> torch.Tensor:
        end = start + q.shape[1]
        if self.attn_func == PRIME and start < self.prime_keys:
            keep = min(end, self.prime_keys) - start  # no query reads keys past P: never stored
            layer.write(start, k[:, :keep], v[:, :keep])
        elif self.attn_func != PRIME:
            layer.write(start, k, v)
        lo, hi = self._key_range(start, end)
        if self.attn_func == PREVIOUS and end <= self.block_ctx:
            return torch.zeros_like(q)  # every query is in block 0: it attends to zero vectors
        keys, values = layer.read(lo, hi)
        if q.shape[1] == 1 and self.attn_func == TRANSPOSE:
            # One query sees only its own column: a strided view instead of a masked scan.
            keys, values = (
                keys[:, start % self.block_ctx :: self.block_ctx],
                values[:, start % self.block_ctx :: self.block_ctx],
            )
            return _attend(q, keys, values, self.heads, None)
        if q.shape[1] == 1 and self.attn_func != PREVIOUS:
            return _attend(q, keys, values, self.heads, None)
        mask = self._mask(start, end, lo, hi, q.device)
        out = _attend(q, keys, values, self.heads, mask)
        if self.attn_func == PREVIOUS:  # queries of block 0 see zero vectors: their output is exactly 0
            out = (
                out
                * (torch.arange(start, end, device=q.device) >= self.block_ctx).to(out.dtype)[None, :, None]
            )
        return out

    def forward(
        self,
        x: torch.Tensor,
        *,
        encoder_kv: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer_index: int = 0,
    ) -> torch.Tensor:
        """x [B, L, width] -> [B, L, width]; with ``cache``, x holds the positions after ``cache.length``."""
        if self.attn_func == CROSS:
            q = self.c_attn(x)
            if cache is not None and cache.encoder_kv[layer_index] is not None:
                k, v = cache.encoder_kv[layer_index]
            else:
                if encoder_kv is None:
                    raise ConfigError(
                        "A cross-attention layer needs the lyric encoder's output (encoder_kv)."
                    )
                k, v = self.c_enc_kv(encoder_kv.to(x.dtype)).chunk(2, dim=-1)
                if cache is not None:
                    cache.encoder_kv[layer_index] = (k, v)
            return self.c_proj(_attend(q, k, v, self.heads, None, self.recorded if cache is None else None))
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        if cache is None:
            out = self._full(q, k, v)
        else:
            out = self._incremental(q, k, v, cache.layers[layer_index], cache.length)
        return self.c_proj(out)


class ResAttnBlock(nn.Module):
    """Pre-LN block: a = attn(ln_0(x)); m = mlp(ln_1(x + a)); x + a + m."""

    def __init__(
        self, width: int, attention: Attention, *, m_mlp: float, init_scale: float, zero_out: bool
    ) -> None:
        super().__init__()
        self.attn = attention
        self.ln_0 = LayerNorm(width)
        self.mlp = MLP(width, int(m_mlp * width), init_scale=init_scale, zero_out=zero_out)
        self.ln_1 = LayerNorm(width)

    def forward(self, x: torch.Tensor, **attn_kwargs) -> torch.Tensor:
        a = self.attn(self.ln_0(x), **attn_kwargs)
        m = self.mlp(self.ln_1(x + a))
        return x + a + m


class Transformer(nn.Module):
    """``depth`` attention blocks, the pattern given per layer (no final LayerNorm: the original has none)."""

    def __init__(
        self,
        width: int,
        n_ctx: int,
        depth: int,
        heads: int,
        attn_funcs: Sequence[int],
        *,
        blocks: int | None,
        m_attn: float = 0.25,
        m_mlp: float = 1.0,
        init_scale: float = 1.0,
        prime_len: int | None = None,
    ) -> None:
        super().__init__()
        n_state = int(m_attn * width)
        self.n_ctx = n_ctx
        self._attn_mods = nn.ModuleList()
        for func in attn_funcs[:depth]:
            zero_out = func == CROSS  # cross-attention layers start as the identity, as in the original
            attention = Attention(
                width, n_state, heads, func, n_ctx, blocks, prime_len=prime_len, init_scale=init_scale,
                zero_out=zero_out,
            )  # fmt: skip
            self._attn_mods.append(
                ResAttnBlock(width, attention, m_mlp=m_mlp, init_scale=init_scale, zero_out=zero_out)
            )

    @property
    def attn_funcs(self) -> list[int]:
        return [block.attn.attn_func for block in self._attn_mods]

    def attention(self, layer: int) -> Attention:
        """The attention module of one layer."""
        return self._attn_mods[layer].attn

    def new_cache(self, batch: int, *, dtype: torch.dtype, device: torch.device | str) -> KVCache:
        """A cache sized for one window of ``batch`` sequences."""
        layers: list[LayerCache | None] = []
        for block in self._attn_mods:
            capacity = block.attn.cache_capacity()
            if capacity == 0:
                layers.append(None)
                continue
            shape = (batch, capacity, block.attn.n_state)
            layers.append(LayerCache(torch.zeros(shape, dtype=dtype, device=device),
                                     torch.zeros(shape, dtype=dtype, device=device)))  # fmt: skip
        return KVCache(layers)

    def max_chunk(self) -> int:
        """Largest chunk the ring caches accept in one step (a block, so a chunk spans at most two)."""
        return min((b.attn.block_ctx for b in self._attn_mods if b.attn.attn_func in (BLOCK, PREVIOUS)),
                   default=self.n_ctx)  # fmt: skip

    def forward(
        self,
        x: torch.Tensor,
        *,
        encoder_kv: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x [B, L, width] -> [B, L, width]. With ``cache``: the next L positions, and the cache advances."""
        if cache is None:
            for block in self._attn_mods:
                x = block(x, encoder_kv=encoder_kv)
            return x
        if cache.length + x.shape[1] > self.n_ctx:
            raise ConfigError(
                f"The cache holds {self.n_ctx} positions; {cache.length} + {x.shape[1]} exceed it."
            )
        step = self.max_chunk()
        outputs = []
        for piece in x.split(step, dim=1):
            for index, block in enumerate(self._attn_mods):
                piece = block(piece, encoder_kv=encoder_kv, cache=cache, layer_index=index)
            outputs.append(piece)
            cache.length += piece.shape[1]
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
