"""Batch sizes: ``auto`` fills free memory; a number is a cap; the plan reports what a run will use."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_prior, build_vqvae
from jukebox_cli.engine.models.presets import prior_config
from jukebox_cli.engine.sampling import plan as plan_module
from jukebox_cli.engine.sampling.batching import AUTO, batch_size, bytes_per_sample, parse_batch_size
from jukebox_cli.engine.sampling.plan import cache_bytes, plan_cascade
from jukebox_cli.engine.sampling.request import SampleMeta, build_request, per_level_batch
from jukebox_cli.engine.weights.bundle import Bundle

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
GIB = 2**30


@pytest.mark.parametrize("text", ["auto", " AUTO ", "3", 3, 3.0, "16"])
def test_parse_accepts_auto_and_whole_numbers(text) -> None:
    assert parse_batch_size(text) == (AUTO if str(text).strip().lower() == "auto" else int(float(text)))


@pytest.mark.parametrize("text", ["0", "-2", "1.5", "nan", "inf", "lots", None])
def test_parse_refuses_anything_else(text) -> None:
    with pytest.raises(ConfigError, match="--max-batch-size"):
        parse_batch_size(text)


def test_per_level_values() -> None:
    assert per_level_batch("auto", (2, 1, 0)) == {2: AUTO, 1: AUTO, 0: AUTO}
    assert per_level_batch("3,auto,16", (2, 1, 0)) == {2: 3, 1: AUTO, 0: 16}
    assert per_level_batch(4, (2, 1)) == {2: 4, 1: 4}
    with pytest.raises(ConfigError, match="one per sampled level"):
        per_level_batch("3,4", (2, 1, 0))


def test_a_number_caps_and_auto_fills_free_memory() -> None:
    assert batch_size(16, 3, per_sample=GIB, free_bytes=0, device=CPU) == 3
    assert batch_size(2, 5, per_sample=GIB, free_bytes=0, device=CPU) == 2
    # GPUs may take 80% of what is free, the CPU half of the available RAM.
    assert batch_size(AUTO, 64, per_sample=GIB, free_bytes=10 * GIB, device=CUDA) == 8
    assert batch_size(AUTO, 64, per_sample=GIB, free_bytes=10 * GIB, device=CPU) == 5
    assert batch_size(AUTO, 3, per_sample=GIB, free_bytes=100 * GIB, device=CUDA) == 3
    assert batch_size(AUTO, 3, per_sample=GIB, free_bytes=0, device=CUDA) == 1  # one always runs


def test_per_sample_memory_is_mostly_the_cache() -> None:
    config = prior_config("1b_lyrics")
    cache = cache_bytes(build_prior("1b_lyrics", "meta"), torch.bfloat16)
    need = bytes_per_sample(config, cache, torch.bfloat16, chunk_size=32)
    assert cache > 2**28  # 72 layers' keys and values, in bfloat16
    assert cache < need < 1.5 * cache


def test_plan_sizes_auto_batches_from_free_memory(monkeypatch) -> None:
    configs = {
        2: prior_config("5b"),
        1: prior_config("upsampler_level_1"),
        0: prior_config("upsampler_level_0"),
    }
    bundle = Bundle("5b", build_vqvae("jukebox", "meta"), configs, None, pretrained=True)
    request = build_request(
        bundle, model="5b", samples=[SampleMeta()] * 6, duration=20, max_batch_size="auto,auto,2"
    )
    monkeypatch.setattr(plan_module, "free_memory", lambda device: 0)
    assert [p.batch_size for p in plan_cascade(bundle, request, dtype=torch.bfloat16)] == [1, 1, 2]
    monkeypatch.setattr(plan_module, "free_memory", lambda device: 512 * GIB)
    assert [p.batch_size for p in plan_cascade(bundle, request, dtype=torch.bfloat16)] == [6, 6, 2]
