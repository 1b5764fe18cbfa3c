"""Priors: released architectures on the meta device, conditioning, cache == teacher forcing."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window
from jukebox_cli.engine.sampling.noise import RaceNoise
from tests.conftest import manifest

RELEASED = {
    "upsampler_level_0": ("prior_level_0", 981_298_176),
    "upsampler_level_1": ("prior_level_1", 981_298_176),
    "1b_lyrics": ("1b_lyrics_prior_level_2", 942_643_200),
    "5b": ("5b_prior_level_2", 5_060_452_800),
    "5b_lyrics": ("5b_lyrics_prior_level_2", 5_640_506_800),
}
TINY = ["tiny_upsampler_level_0", "tiny_upsampler_level_1", "tiny_1b_lyrics", "tiny_5b", "tiny_5b_lyrics"]


@pytest.mark.parametrize("preset", list(RELEASED))
def test_released_prior_matches_its_manifest(preset: str) -> None:
    name, n_params = RELEASED[preset]
    expected = manifest(f"original/{name}")
    model = build_prior(preset, device="meta")
    state = model.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected["keys"]
    assert list(state) == list(expected["keys"])
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()} == expected["dtypes"]
    assert sum(p.numel() for p in model.parameters()) == n_params
    tied = model.prior.x_out.weight is model.prior.x_emb.weight
    assert tied == (not model.config.merged_decoder)


def test_derived_quantities() -> None:
    one_b = build_prior("1b_lyrics", device="meta").config
    assert (one_b.sequence_length, one_b.label_length, one_b.window_samples) == (6528, 389, 786_432)
    assert build_prior("5b_lyrics", device="meta").config.label_length == 521
    assert build_prior("upsampler_level_0", device="meta").config.label_length == 9
    attn = build_prior("1b_lyrics", device="meta").prior.transformer._attn_mods
    assert attn[0].attn.block_ctx == 102 and attn[15].attn.prime_keys == 448


def _labels(prior, batch: int, offset: int = 0) -> torch.Tensor:
    c = prior.config
    labels = torch.full((batch, c.label_length), -1, dtype=torch.long)
    labels[:, 0], labels[:, 1], labels[:, 2] = 22050 * 30, offset, c.window_samples
    labels[:, 3] = torch.arange(batch) % c.n_artists
    labels[:, 4] = 1
    if c.n_tokens:
        labels[:, 4 + c.max_genres :] = torch.randint(1, c.n_vocab, (batch, c.n_tokens))
    return labels


def _inputs(prior, batch: int = 2):
    c = prior.config
    codes = torch.randint(0, c.codebook_size, (batch, c.n_ctx))
    upper = torch.randint(0, c.codebook_size, (batch, c.n_ctx // 4)) if c.is_upsampler else None
    return codes, _labels(prior, batch), upper


@pytest.mark.parametrize("preset", TINY)
def test_greedy_continuation_matches_teacher_forcing(preset: str) -> None:
    """Greedy sampling with the cache must pick the argmax of the full teacher-forced pass at every step."""
    torch.manual_seed(0)
    prior = build_prior(preset, seed=4)
    codes, labels, upper = _inputs(prior)
    context = codes[:, :40]
    with torch.no_grad():
        sampled = sample_window(prior, context, 20, labels, upper_codes=upper,
                                settings=SamplingSettings(greedy=True, chunk_size=16))  # fmt: skip
        window = torch.cat([sampled, codes[:, 60:]], dim=1)
        logits = prior.logits(window, labels, upper)
    offset = prior.config.n_tokens if prior.config.single_enc_dec else 0
    shift = prior.config.n_vocab if prior.config.single_enc_dec else 0
    assert torch.equal(sampled[:, :40], context), "the context is kept verbatim"
    predicted = (logits[:, offset + 40 : offset + 60].argmax(-1) - shift).clamp(min=0)
    assert torch.equal(predicted, sampled[:, 40:60])


@pytest.mark.parametrize("preset", TINY)
def test_training_losses_are_finite_and_differentiable(preset: str) -> None:
    prior = build_prior(preset).train()
    codes, labels, upper = _inputs(prior)
    out = prior(codes, labels, upper)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.gen_loss > 0
    assert (out.prime_loss > 0) == (prior.config.prime_loss_fraction > 0)
    assert prior.prior.x_emb.weight.grad is not None


def test_labels_are_checked() -> None:
    prior = build_prior("tiny_5b")
    codes, labels, _ = _inputs(prior)
    with pytest.raises(ConfigError, match="label entries"):
        prior.logits(codes, labels[:, :-1])
    labels[:, 0] = 100  # shorter than the model's minimum duration
    with pytest.raises(ConfigError, match="total length"):
        prior.logits(codes, labels)


def test_same_seed_same_tokens() -> None:
    prior = build_prior("tiny_5b")
    _, labels, _ = _inputs(prior)
    draws = []
    for _ in range(2):
        draws.append(sample_window(prior, labels.new_zeros(2, 0), 30, labels, noise=RaceNoise([7, 9], "cpu")))
    assert torch.equal(draws[0], draws[1])
    other = sample_window(prior, labels.new_zeros(2, 0), 30, labels, noise=RaceNoise([8, 9], "cpu"))
    assert not torch.equal(draws[0][0], other[0])
    assert torch.equal(draws[0][1], other[1])  # each row reads only its own stream
