"""One decoding step with fixed shapes: the next position's logits from the key/value cache.

The incremental path of :class:`~jukebox_cli.engine.models.transformer.Transformer` reads and writes the cache at
Python-int positions, so its tensor shapes change from one token to the next (a block that grows, a column
that gets longer). Here every shape is fixed for a given prior, batch and dtype, and the position is a
one-element long *tensor* [1]: the new keys are written with ``index_copy_`` at a slot computed from it, and
each layer reads a fixed set of slots, masking the keys the position may not see yet. Nothing depends on a
host value that changes per token and nothing reads a value back to the host, so the step can be compiled
once and captured as a CUDA graph that is replayed for every token (``decode.py`` does both).

The cache layout is the incremental path's (position p at slot p % capacity), so the known codes of a
window are still pushed through that path in chunks and this step continues from the cache they filled.
With bc = block_ctx and t the position, a query reads:

    block      the current block: ring viewed as [3, bc] blocks, block (t // bc) % 3, masked to <= t
    previous   the previous block, (t // bc - 1) % 3, unmasked; the output is zeroed in block 0
    transpose  t's column: ring viewed as [n_ctx / bc, bc], column t % bc, masked to blocks <= t // bc
    dense      all n_ctx slots, masked to <= t
    prime      the first P slots, masked to <= t; positions >= P are written to the scratch slot P
    cross      the lyric encoder's keys and values, computed once per window

Masked slots may hold anything finite (a previous window's keys): the additive -1e9 mask gives them an
exactly zero probability. The logits equal the incremental path's up to float rounding (its softmax runs
over only the visible keys, so its sums are ordered differently).

Activations are [B, width] here (one position, no time axis), which keeps every matrix product a plain
[B, n_in] x [n_in, n_out] one. Conv1D weights are used in the activations' dtype as they are: a decoder
makes them resident in that dtype once (``transformer.with_linear_dtype``), which also decides their memory
layout (see :func:`linear`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from jukebox_cli.engine.models.prior import AutoregressiveCore
from jukebox_cli.engine.models.transformer import (
    _MASKED,
    BLOCK,
    CROSS,
    DENSE,
    PREVIOUS,
    PRIME,
    TRANSPOSE,
    Attention,
    Conv1D,
    LayerNorm,
    ResAttnBlock,
    quick_gelu,
)

Weights = Callable[[nn.Module, str], torch.Tensor]  # (module, parameter name) -> the tensor to use


def linear(conv: Conv1D, x: torch.Tensor, weights: Weights = getattr) -> torch.Tensor:
    """x [B, n_in] @ w + b -> [B, n_out], with Conv1D's weights as they are (already in x's dtype).

    ``weights`` reads a parameter: ``getattr`` (from the module), or a decoder's ``PackedWeights``.

    A compiled CPU step over half-precision weights stored output-major (``with_linear_dtype(...,
    out_major=True)``) computes one or two rows as dot products: Inductor turns them into a single loop that
    streams each weight once in half precision and accumulates in float32, about twice as fast as the
    library's half-precision matrix-vector product there (which is slower than its float32 one). Larger
    batches reuse each weight row often enough for the library product to win.
    """
    w, b = weights(conv, "w"), weights(conv, "b")
    if (
        torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype in (torch.bfloat16, torch.float16)
        and x.shape[0] <= 2
        and w.t().is_contiguous()
    ):
        dots = (x.float()[:, None, :] * w.t().float()[None]).sum(-1)  # (B, n_out)
        return (dots + b.float()).to(x.dtype)
    return torch.addmm(b, x, w)


def _norm(norm: LayerNorm, x: torch.Tensor, weights: Weights) -> torch.Tensor:
    """LayerNorm in float32, the result in x's dtype (as LayerNorm.forward, with ``weights``' tensors)."""
    weight, bias = weights(norm, "weight"), weights(norm, "bias")
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps).to(x.dtype)


def _attend_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, visible: torch.Tensor | None
) -> torch.Tensor:
    """One query per row: q [B, n_state], k/v [B, Lk, n_state], visible [Lk] bool or None -> [B, n_state].

    The same arithmetic as the incremental path's attention: scores in float32, the original's additive
    -1e9 mask, probabilities cast back to the working dtype.
    """
    batch, n_keys, n_state = k.shape
    head_dim = n_state // heads
    q = q.view(batch, heads, 1, head_dim)  # (B, heads, 1, head_dim)
    k = k.view(batch, n_keys, heads, head_dim).transpose(1, 2)  # (B, heads, Lk, head_dim)
    v = v.view(batch, n_keys, heads, head_dim).transpose(1, 2)  # (B, heads, Lk, head_dim)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() / math.sqrt(head_dim)  # (B, heads, 1, Lk)
    if visible is not None:
        mask = visible.to(scores.dtype)
        scores = scores * mask + _MASKED * (1 - mask)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v).reshape(batch, n_state)  # (B, n_state)


def _write(attn: Attention, ring: torch.Tensor, position: torch.Tensor, new: torch.Tensor) -> None:
    """Store one position's keys (or values) new [B, n_state] in its ring [B, capacity, n_state]."""
    # A prime layer sends positions >= P to its scratch slot P, which is never read.
    slot = position.clamp(max=attn.prime_keys) if attn.attn_func == PRIME else position % ring.shape[1]
    ring.index_copy_(1, slot, new.unsqueeze(1).to(ring.dtype))


def _read(
    attn: Attention, ring: torch.Tensor, position: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the keys a query at ``position`` reads [B, Lk, n_state], which of them it may see [Lk] or None).

    Lk is fixed per layer. Block and column reads select whole rows of the ring viewed as a grid, so the
    gather is one index per block or column rather than one per key.
    """
    batch, capacity, n_state = ring.shape
    bc, f = attn.block_ctx, attn.attn_func
    if f in (BLOCK, PREVIOUS):
        blocks = ring.view(batch, capacity // bc, bc, n_state)  # (B, 3, bc, n_state)
        block = position // bc - (1 if f == PREVIOUS else 0)
        keys = blocks.index_select(1, block % (capacity // bc)).view(batch, bc, n_state)
        if f == PREVIOUS:
            return keys, None  # the whole previous block (block 0 is zeroed by the caller)
        return keys, torch.arange(bc, device=ring.device) <= position % bc
    if f == TRANSPOSE:
        grid = ring.view(batch, capacity // bc, bc, n_state)  # (B, n_ctx / bc, bc, n_state)
        keys = grid.index_select(2, position % bc).view(batch, capacity // bc, n_state)
        return keys, torch.arange(capacity // bc, device=ring.device) <= position // bc
    if f == PRIME:
        return ring[:, : attn.prime_keys], torch.arange(attn.prime_keys, device=ring.device) <= position
    if f == DENSE:
        return ring, torch.arange(capacity, device=ring.device) <= position
    raise ValueError(f"attention type {f} keeps no key cache")


def attention_step(
    attn: Attention,
    x: torch.Tensor,
    position: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    weights: Weights = getattr,
) -> torch.Tensor:
    """One position through one attention layer: x [B, width] (normalised) -> [B, width].

    Args:
        attn: the layer.
        x: the normalised input of this position.
        position: [1] long, the position being decoded.
        keys, values: this layer's ring [B, capacity, n_state], written in place; for a cross-attention
            layer, the encoder's keys and values [B, n_tokens, n_state] instead (read only).
        weights: reads the layer's parameters (see :func:`linear`).
    """
    if attn.attn_func == CROSS:
        q = linear(attn.c_attn, x, weights)
        return linear(attn.c_proj, _attend_one(q, keys, values, attn.heads, None), weights)
    q, k, v = linear(attn.c_attn, x, weights).chunk(3, dim=-1)  # (B, n_state) each
    _write(attn, keys, position, k)
    _write(attn, values, position, v)
    k_seen, visible = _read(attn, keys, position)
    v_seen, _ = _read(attn, values, position)
    out = _attend_one(q, k_seen, v_seen, attn.heads, visible)
    if attn.attn_func == PREVIOUS:
        # Block 0 attends to zero vectors, whose output is exactly 0 (the layer adds only c_proj's bias).
        out = out * (position >= attn.block_ctx).to(out.dtype)
    return linear(attn.c_proj, out, weights)


def block_step(
    block: ResAttnBlock,
    x: torch.Tensor,
    position: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    weights: Weights = getattr,
) -> torch.Tensor:
    """One position through one residual block: x [B, width] -> [B, width] (arguments as above)."""
    a = attention_step(block.attn, _norm(block.ln_0, x, weights), position, keys, values, weights)
    mlp = block.mlp
    hidden = quick_gelu(linear(mlp.c_fc, _norm(block.ln_1, x + a, weights), weights))
    return x + a + linear(mlp.c_proj, hidden, weights)


def embed_step(
    core: AutoregressiveCore,
    token: torch.Tensor,
    position: torch.Tensor,
    x_cond: torch.Tensor,
    first: torch.Tensor,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the Transformer input of ``position`` [B, width] in ``dtype``, its conditioning row [B, width]).

    Args:
        core: the prior's autoregressive core.
        token: [B] the token at position - 1 (ignored at position 0).
        position: [1] long.
        x_cond: [B, L, width] the window's conditioning (float32), or [B, 1, width] for all positions.
        first: [B, width] the start vector that replaces the token embedding at position 0.
        dtype: the Transformer's working dtype.
    """
    h = core.x_emb(token)  # (B, W)
    h = torch.where(position == 0, first.to(h.dtype), h)  # no host branch on the position
    row = (x_cond.index_select(1, position) if x_cond.shape[1] > 1 else x_cond)[:, 0]  # (B, W)
    h = h + core.pos_emb().index_select(0, position) + row
    return h.to(dtype), row


def head_step(
    core: AutoregressiveCore, h: torch.Tensor, row: torch.Tensor, head_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Transformer output h [B, width] -> float32 logits [B, bins].

    ``head_weight`` [width, bins] is the output projection laid out for ``h @ w`` (a contiguous transposed
    copy of ``x_out.weight``); None uses ``x_out`` itself.
    """
    h = h.float()
    if core.add_cond_after_transformer:
        h = h + row
    return core.x_out(h) if head_weight is None else h @ head_weight


def decode_step(
    core: AutoregressiveCore,
    token: torch.Tensor,
    position: torch.Tensor,
    x_cond: torch.Tensor,
    first: torch.Tensor,
    caches: list[tuple[torch.Tensor, torch.Tensor]],
    dtype: torch.dtype,
    head_weight: torch.Tensor | None = None,
    weights: Weights = getattr,
) -> torch.Tensor:
    """Logits [B, bins] (float32) of ``position``, writing its keys and values into ``caches``.

    ``caches`` holds, per layer, the (keys, values) ring or, for a cross-attention layer, the encoder's keys
    and values; ``weights`` reads the Transformer's parameters (see :func:`linear`); the other arguments are
    :func:`embed_step`'s and :func:`head_step`'s. The layers run in a Python loop, which tracing unrolls, so
    a compiled or captured step contains all of them.
    """
    h, row = embed_step(core, token, position, x_cond, first, dtype)
    for block, (keys, values) in zip(core.transformer._attn_mods, caches, strict=True):
        h = block_step(block, h, position, keys, values, weights)
    return head_step(core, h, row, head_weight)
