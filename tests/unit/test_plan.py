"""The plan of a run: levels top down, windows and tokens per level, memory; no weights needed."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_prior, build_vqvae
from jukebox_cli.engine.models.presets import prior_config
from jukebox_cli.engine.sampling.plan import cache_bytes, plan_cascade
from jukebox_cli.engine.sampling.request import SampleMeta, build_request
from jukebox_cli.engine.weights.bundle import Bundle


def _never(*args):  # a released model's plan must not load any prior
    raise AssertionError("the plan loaded a prior")


@pytest.fixture(scope="module")
def released_5b() -> Bundle:
    """The 5b model's architecture on the meta device: configs only, nothing downloaded or allocated."""
    configs = {
        0: prior_config("upsampler_level_0"),
        1: prior_config("upsampler_level_1"),
        2: prior_config("5b"),
    }
    return Bundle("5b", build_vqvae("jukebox", "meta"), configs, _never, pretrained=True)


def test_released_plan_lists_levels_top_down_without_weights(released_5b: Bundle) -> None:
    request = build_request(released_5b, model="5b", samples=[SampleMeta()], duration=20)
    plans = plan_cascade(released_5b, request)
    # 20 s at 44.1 kHz: 881,920 samples; the top level is one partial window of the 8192-code context.
    assert [(p.level, p.total_codes, p.windows, p.new_tokens) for p in plans] == [
        (2, 6890, 1, 6890),
        (1, 27_560, 6, 27_560),
        (0, 110_240, 26, 110_240),
    ]
    assert plans[0].weight_bytes > 9e9  # ~5B parameters, Conv1D weights in fp16 as released
    assert all(p.cache_bytes_per_sample > 0 for p in plans)


def test_upsampling_plans_only_the_lower_levels(released_5b: Bundle) -> None:
    request = build_request(released_5b, model="5b", samples=[SampleMeta()], duration=20, levels=(2, 1))
    assert [p.level for p in plan_cascade(released_5b, request)] == [2, 1]
    with pytest.raises(ConfigError, match="top level"):
        build_request(released_5b, model="5b", samples=[SampleMeta()], duration=20, levels=(1, 0))


def test_existing_codes_are_not_planned_again(released_5b: Bundle) -> None:
    request = build_request(released_5b, model="5b", samples=[SampleMeta()], duration=20, levels=(2,))
    (plan,) = plan_cascade(released_5b, request, existing={2: 1000})
    assert (plan.existing_codes, plan.new_tokens) == (1000, 5890)


def test_cache_size_follows_the_working_dtype() -> None:
    prior = build_prior("tiny_5b", "meta")
    assert cache_bytes(prior, torch.float32) == 2 * cache_bytes(prior, torch.bfloat16) > 0


def test_processes_sharing_the_takes_batch_their_largest_share(released_5b: Bundle) -> None:
    request = build_request(released_5b, model="5b", samples=[SampleMeta()] * 7, duration=20, levels=(2,),
                            max_batch_size=16)  # fmt: skip
    batches = [plan_cascade(released_5b, request, processes=n)[0].batch_size for n in (1, 2, 3, 7)]
    assert batches == [7, 4, 3, 1]
