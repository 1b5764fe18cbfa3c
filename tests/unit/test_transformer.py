"""Transformer invariants: attention layouts, cache == full forward, causality, Conv1D layout."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.models.transformer import (
    BLOCK,
    CROSS,
    DENSE,
    PREVIOUS,
    PRIME,
    TRANSPOSE,
    Conv1D,
    LayerNorm,
    Transformer,
    attention_pattern,
    with_linear_dtype,
)

LAYOUTS = {
    "row/column/previous": dict(pattern=[BLOCK, TRANSPOSE, PREVIOUS] * 2, length=64, blocks=8, prime=None),
    "1b (prime + dense, block_ctx 17)": dict(
        pattern=[1, 2, 3, PRIME, PRIME, DENSE], length=102, blocks=6, prime=20
    ),
    "dense": dict(pattern=[DENSE, DENSE], length=40, blocks=None, prime=None),
}


def test_released_layer_maps() -> None:
    five_b_lyrics = attention_pattern(10, 79)
    assert [d for d, f in enumerate(five_b_lyrics) if f == CROSS] == [18, 28, 38, 48, 58, 68, 78]
    assert [five_b_lyrics.count(f) for f in (BLOCK, TRANSPOSE, PREVIOUS)] == [24, 24, 24]
    one_b = attention_pattern(12, 72)
    assert [d for d, f in enumerate(one_b) if f == PRIME] == [15, 31, 63]
    assert [d for d, f in enumerate(one_b) if f == DENSE] == [47]
    assert attention_pattern(2, 72)[:6] == [1, 2, 3, 1, 2, 3]


def _transformer(layout: dict, width: int = 32) -> Transformer:
    torch.manual_seed(0)
    return Transformer(
        width, layout["length"], len(layout["pattern"]), 2, layout["pattern"], blocks=layout["blocks"],
        prime_len=layout["prime"],
    ).eval()  # fmt: skip


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("chunk", [1, 5, 13, 1000])
def test_cached_equals_full_forward(name: str, chunk: int) -> None:
    layout = LAYOUTS[name]
    model = _transformer(layout)
    x = torch.randn(2, layout["length"], 32)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, dtype=torch.float32, device="cpu")
        pieces = [model(x[:, i : i + chunk], cache=cache) for i in range(0, layout["length"], chunk)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-6, rtol=0)
    assert cache.length == layout["length"]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_causal_by_gradient(name: str) -> None:
    layout = LAYOUTS[name]
    model = _transformer(layout)
    x = torch.randn(1, layout["length"], 32, requires_grad=True)
    t = layout["length"] // 2
    model(x)[0, t].sum().backward()
    assert x.grad[0, t + 1 :].abs().max() == 0, "output t must not depend on inputs after t"
    assert x.grad[0, : t + 1].abs().sum() > 0


def test_prime_attention_reads_only_the_first_keys() -> None:
    layout = LAYOUTS["1b (prime + dense, block_ctx 17)"]
    model = Transformer(16, 102, 1, 1, [PRIME], blocks=6, prime_len=20).eval()
    assert model._attn_mods[0].attn.prime_keys == 24  # (20 // 6 + 1) * 6, like 448 for 1b_lyrics
    x = torch.randn(1, layout["length"], 16, requires_grad=True)
    model(x)[0, -1].sum().backward()
    assert x.grad[0, 24:-1].abs().max() == 0 and x.grad[0, :24].abs().sum() > 0


def test_cache_memory_follows_the_attention_type() -> None:
    model = _transformer(LAYOUTS["1b (prime + dense, block_ctx 17)"])
    cache = model.new_cache(1, dtype=torch.float16, device="cpu")
    capacities = [layer.capacity for layer in cache.layers]
    # block/previous: 3 blocks; transpose/dense: all; prime: P and a scratch slot for later positions
    assert capacities == [51, 102, 51, 25, 25, 102]


def test_conv1d_layout_and_dtype_following() -> None:
    layer = Conv1D(3, 5)
    assert tuple(layer.w.shape) == (3, 5)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(layer(x), x @ layer.w + layer.b)
    assert layer(x.double()).dtype == torch.float64
    norm = LayerNorm(5)
    assert norm(torch.randn(2, 5).half()).dtype == torch.float16


def test_linear_weights_made_resident_in_a_copy() -> None:
    model = _transformer(LAYOUTS["row/column/previous"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert with_linear_dtype(model, torch.float32) is model, "already resident: no copy"
    half = with_linear_dtype(model, torch.bfloat16)
    assert half is not model
    for name, tensor in half.state_dict().items():
        linear = name.endswith((".w", ".b")) and "ln_" not in name
        assert tensor.dtype == (torch.bfloat16 if linear else torch.float32), name
        if not linear:  # LayerNorms and the like are shared, not copied
            assert tensor.data_ptr() == model.state_dict()[name].data_ptr(), name
    for name, tensor in model.state_dict().items():  # the caller's float32 model is untouched
        assert tensor.dtype == torch.float32 and torch.equal(tensor, before[name]), name
    assert with_linear_dtype(half, torch.bfloat16) is half
    x = torch.randn(2, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(half(x.bfloat16()).float(), model(x), atol=0.1, rtol=0.05)
