"""Codebook behaviour: nearest code, EMA only in training, dead-code restarts, straight-through."""

from __future__ import annotations

import torch

from jukebox_cli.engine.models.bottleneck import BottleneckBlock


def _block(codebook_size: int = 16, width: int = 4) -> BottleneckBlock:
    block = BottleneckBlock(codebook_size, width, ema_decay=0.9)
    torch.manual_seed(0)
    block.k.copy_(torch.randn(codebook_size, width))
    block.initialised = True
    return block.eval()


def test_quantise_picks_the_nearest_code() -> None:
    block = _block()
    rows = torch.randn(200, 4)
    codes, fit = block.quantise(rows)
    expected = torch.cdist(rows, block.k).argmin(dim=-1)
    assert torch.equal(codes, expected)
    torch.testing.assert_close(fit, (rows - block.k[codes]).pow(2).sum(-1).mean(), rtol=1e-4, atol=1e-5)


def test_eval_mode_never_changes_the_codebook() -> None:
    block = _block()
    before = block.k.clone()
    block(torch.randn(2, 4, 50))
    assert torch.equal(block.k, before)


def test_training_updates_used_codes_by_ema() -> None:
    block = _block().train()
    block.k_sum.copy_(block.k)
    block.k_elem.fill_(5.0)  # every code counts as used, so none is restarted
    z = torch.randn(1, 4, 300)
    before = block.k.clone()
    out = block(z)
    rows = z[0].t()
    hit = out.codes[0].unique()
    for code in hit[:5]:
        members = rows[out.codes[0] == code]
        k_sum = 0.9 * before[code] + 0.1 * members.sum(0)
        k_elem = 0.9 * 5.0 + 0.1 * members.shape[0]
        torch.testing.assert_close(block.k[code], k_sum / k_elem)
    assert out.metrics["restarts"] == 0


def test_dead_codes_restart_at_batch_rows() -> None:
    block = _block(codebook_size=8).train()
    block.k_sum.copy_(block.k)
    block.k_elem.fill_(0.0)  # nothing used: every code must be replaced by (noisy) batch rows
    z = torch.randn(1, 4, 3) + 100.0  # far from every current code
    out = block(z)
    assert out.metrics["restarts"] > 0
    distances = torch.cdist(block.k, z[0].t()).min(dim=1).values
    assert distances.max() < 0.1, "restarted codes should sit next to batch rows"


def test_first_training_batch_initialises_the_codebook() -> None:
    block = BottleneckBlock(32, 4, ema_decay=0.99).train()
    assert not block.initialised
    z = torch.randn(2, 4, 40) * 3 + 7
    block(z)
    assert block.initialised
    assert block.k.mean() > 3, "codes come from the batch, not from zeros"


def test_straight_through_gradient_and_commit_loss() -> None:
    block = _block().train()
    block.k_sum.copy_(block.k)
    block.k_elem.fill_(5.0)
    z = torch.randn(1, 4, 20, requires_grad=True)
    out = block(z, update_codebook=False)
    (out.x_q * 2).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 2.0))
    expected = (block.dequantise(out.codes) - z.detach()).pow(2).mean()
    torch.testing.assert_close(out.commit_loss, expected)


def test_restore_k_seeds_ema_statistics() -> None:
    block = _block()
    block.restore_k(num_tokens=32, threshold=2.0)
    torch.testing.assert_close(block.k_elem, torch.full((16,), 2.0))
    torch.testing.assert_close(block.k_sum, block.k * 2.0)
    assert block.threshold == 2.0
