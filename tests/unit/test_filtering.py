"""Logit filters and the categorical draw: masks keep what they should, seeds reproduce, temperature works."""

from __future__ import annotations

import math

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.sampling.filtering import filter_logits, sample_logits


def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


def _logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs).log()


# ---- filter_logits -----------------------------------------------------------------------------------------


def test_no_filter_is_a_copy() -> None:
    logits = torch.randn(3, 7)
    out = filter_logits(logits)
    assert torch.equal(out, logits) and out is not logits


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([0.5, 3.0, -1.0, 2.0, 1.0])
    out = filter_logits(logits, top_k=2)
    assert _kept(out) == [1, 3]
    assert torch.equal(out[[1, 3]], logits[[1, 3]]), "kept logits are unchanged"
    assert (out[[0, 2, 4]] == -math.inf).all()


def test_top_k_keeps_ties_at_the_threshold_and_clamps_to_the_vocabulary() -> None:
    logits = torch.tensor([1.0, 2.0, 2.0, 0.0])
    assert _kept(filter_logits(logits, top_k=2)) == [1, 2]
    assert _kept(filter_logits(logits, top_k=1)) == [1, 2], "keeps logits >= the k-th largest"
    assert _kept(filter_logits(logits, top_k=100)) == [0, 1, 2, 3]


def test_top_k_works_per_row() -> None:
    logits = torch.tensor([[[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]])  # [1, 2, 3]
    out = filter_logits(logits, top_k=1)
    assert torch.isfinite(out).tolist() == [[[True, False, False], [False, False, True]]]


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = _logits_of([0.1, 0.5, 0.05, 0.3, 0.05])  # sorted: 0.5, 0.3, 0.1, 0.05, 0.05
    # Cumulative 0.5, 0.8, 0.9, ...: with p 0.7 the 0.3 token crosses p and is kept, the rest go.
    assert _kept(filter_logits(logits, top_p=0.7)) == [1, 3]
    assert _kept(filter_logits(logits, top_p=0.85)) == [0, 1, 3]
    assert _kept(filter_logits(logits, top_p=0.45)) == [1], "the best token alone exceeds p"
    assert _kept(filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3, 4]


def test_top_p_always_keeps_the_most_probable_token() -> None:
    logits = _logits_of([0.2, 0.7, 0.1])
    for p in (1e-6, 0.1, 0.69):
        assert _kept(filter_logits(logits, top_p=p)) == [1]
    rows = torch.randn(64, 50) * 5
    out = filter_logits(rows, top_p=1e-3)
    best = rows.argmax(dim=-1)
    assert torch.isfinite(out.gather(-1, best[:, None])).all()
    assert (torch.isfinite(out).sum(dim=-1) >= 1).all()


def test_top_p_per_row_and_in_half_precision() -> None:
    logits = torch.stack([_logits_of([0.6, 0.3, 0.1]), _logits_of([0.1, 0.3, 0.6])]).half()
    out = filter_logits(logits, top_p=0.5)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).tolist() == [[True, False, False], [False, False, True]]


@pytest.mark.parametrize(
    ("top_k", "top_p"), [(-1, 0.0), (0, -0.1), (0, 1.5), (0, float("nan")), (5, 0.9)], ids=str
)
def test_bad_filter_settings_are_config_errors(top_k: int, top_p: float) -> None:
    with pytest.raises(ConfigError):
        filter_logits(torch.zeros(4), top_k=top_k, top_p=top_p)


# ---- sample_logits -----------------------------------------------------------------------------------------


def test_same_seed_same_tokens() -> None:
    logits = torch.randn(4, 16, 2048)

    def draw(seed: int) -> torch.Tensor:
        return sample_logits(logits, temperature=0.99, generator=torch.Generator().manual_seed(seed))

    first = draw(1234)
    assert first.shape == (4, 16) and first.dtype == torch.int64
    assert torch.equal(first, draw(1234))
    assert not torch.equal(first, draw(4321))


def test_tokens_come_only_from_kept_logits() -> None:
    logits = torch.randn(256, 32)
    generator = torch.Generator().manual_seed(0)
    tokens = sample_logits(logits, temperature=1.0, top_k=3, generator=generator)
    kept = torch.isfinite(filter_logits(logits, top_k=3))
    assert kept.gather(-1, tokens[:, None]).all()
    tokens = sample_logits(logits, temperature=1.0, top_p=0.2, generator=generator)
    kept = torch.isfinite(filter_logits(logits, top_p=0.2))
    assert kept.gather(-1, tokens[:, None]).all()


def test_low_temperature_approaches_argmax() -> None:
    # Distinct logits 0.01 apart: at temperature 1e-4 the runner-up is exp(-100) as likely as the best.
    seeded = torch.Generator().manual_seed(3)
    logits = torch.stack([torch.randperm(100, generator=seeded) for _ in range(512)]).float() * 0.01
    tokens = sample_logits(logits, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, logits.argmax(dim=-1))


def test_temperature_sharpens_the_distribution() -> None:
    logits = _logits_of([0.6, 0.4]).expand(20_000, 2)
    generator = torch.Generator().manual_seed(0)
    hot = (sample_logits(logits, temperature=1.0, generator=generator) == 0).float().mean()
    cold = (sample_logits(logits, temperature=0.5, generator=generator) == 0).float().mean()
    assert abs(hot - 0.6) < 0.02
    assert abs(cold - 0.36 / 0.52) < 0.02, "p ** (1 / T), renormalised"


def test_half_logits_are_drawn_in_float32() -> None:
    logits = torch.randn(8, 64).half()
    a = sample_logits(logits, temperature=0.98, generator=torch.Generator().manual_seed(7))
    b = sample_logits(logits.float(), temperature=0.98, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_a_config_error(temperature: float) -> None:
    with pytest.raises(ConfigError, match="temperature"):
        sample_logits(torch.zeros(4), temperature=temperature)


def test_single_row_logits_give_a_scalar_token() -> None:
    token = sample_logits(
        torch.tensor([-math.inf, 0.0, -math.inf]), generator=torch.Generator().manual_seed(0)
    )
    assert token.shape == () and token.item() == 1
