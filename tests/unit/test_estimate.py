"""The time estimate of a plan: a probe of a slice of each prior, scaled to its depth; no weights needed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jukebox_cli.engine.models.builders import build_vqvae
from jukebox_cli.engine.models.presets import prior_config
from jukebox_cli.engine.sampling.estimate import estimate_cascade, probe, probe_config
from jukebox_cli.engine.sampling.plan import plan_cascade
from jukebox_cli.engine.sampling.request import SampleMeta, build_request
from jukebox_cli.engine.weights.bundle import Bundle
from jukebox_cli.engine.weights.loading import tiny_random

CPU = torch.device("cpu")


def test_the_slice_keeps_one_block_per_attention_type() -> None:
    for name in ("1b_lyrics", "5b_lyrics", "upsampler_level_0"):
        config = prior_config(name)
        sliced = probe_config(config)
        assert sliced.attn_funcs() == list(dict.fromkeys(config.attn_funcs()))
        assert (sliced.width, sliced.n_ctx, sliced.n_tokens) == (config.width, config.n_ctx, config.n_tokens)


def test_a_deeper_prior_takes_longer_per_step() -> None:
    config = prior_config("tiny_upsampler_level_0")
    shallow = probe(config, batch=1, dtype=torch.float32, device=CPU, mode="eager")
    deep = probe(dataclasses.replace(config, depth=config.depth * 8), batch=1, dtype=torch.float32,
                     device=CPU, mode="eager")  # fmt: skip
    assert deep.step > 3 * shallow.step > 0


def test_estimates_follow_the_plan() -> None:
    bundle = tiny_random()
    request = build_request(bundle, model="tiny-random", samples=[SampleMeta()] * 2, duration=2)
    plans = plan_cascade(bundle, request)
    estimates = estimate_cascade(bundle, request, plans, device=CPU, decode="eager", dtype=torch.float32)
    assert [e.level for e in estimates] == [2, 1, 0] and all(e.mode == "eager" for e in estimates)
    assert all(e.sampling_seconds > 0 and e.one_off_seconds == 0 for e in estimates)
    # Level 0 samples 16x the codes of level 2 with a similar prior: it must be the longest.
    assert estimates[-1].sampling_seconds > estimates[0].sampling_seconds


def _never(*args):
    raise AssertionError("the estimate loaded a prior's weights")


def test_a_released_upsampler_is_estimated_without_its_weights() -> None:
    configs = {
        0: prior_config("upsampler_level_0"),
        1: prior_config("upsampler_level_1"),
        2: prior_config("5b"),
    }
    bundle = Bundle("5b", build_vqvae("jukebox", "meta"), configs, _never, pretrained=True)
    request = build_request(bundle, model="5b", samples=[SampleMeta()], duration=10, levels=(2, 1))
    request = dataclasses.replace(request, levels=(1,))
    plans = plan_cascade(bundle, request)
    (estimate,) = estimate_cascade(bundle, request, plans, device=CPU, decode="compiled", dtype=torch.float32)
    assert estimate.mode == "compiled" and "compiled/eager ratio" in estimate.probed
    assert estimate.step_seconds > 0 and estimate.one_off_seconds > 0
    assert estimate.window_seconds > 0  # the conditioner's conv stack runs once per window


def test_graph_mode_needs_cuda() -> None:
    from jukebox_cli.engine.errors import ConfigError

    with pytest.raises(ConfigError, match="CUDA"):
        probe(prior_config("tiny_5b"), batch=1, dtype=torch.float32, device=CPU, mode="graph")
