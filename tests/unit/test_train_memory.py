"""The memory plan of a training run: hand-computed figures for a small known shape, the strategy choice, the
refusal and its advice, LoRA counts, and `jukebox train plan` on the released configs (meta device, no weights)."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError, NotEnoughMemory
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.train.memory import (
    GIB,
    LayerShape,
    ModelShape,
    check_fits,
    choose_strategy,
    lora_params,
    parse_memory,
    plan_memory,
    prior_shape,
)

# One layer of 8 positions, width 4, attention width 2, MLP width 4, one head, dense (8 keys); 16 classes.
SHAPE = ModelShape(
    total_params=1000,
    trainable_params=1000,
    largest_block_params=100,
    layers=(LayerShape(positions=8, width=4, n_state=2, hidden=4, heads=1, keys=8),),
    logits=8 * 16,
)


def parts(plan) -> dict[str, int]:
    return dict(plan.rows())


def test_one_process_fp32_by_hand() -> None:
    plan = plan_memory(SHAPE, strategy="none", precision="fp32", batch_size=2)
    # layer: 8 (6*4 + 4*2 + 2*4) * 4 = 1280, scores 1*8*8*(12 + 4) = 1024; logits 12 * 128 = 1536; x 2 samples
    assert parts(plan) == {"weights": 4000, "working copies": 0, "gradients": 4000, "optimizer (AdamW)": 8000,
                           "EMA": 4000, "activations": 2 * (1280 + 1024 + 1536)}  # fmt: skip
    assert plan.total == 20000 + 7680 and plan.fits  # no device memory given: nothing to check


def test_fsdp_bf16_checkpointed_by_hand() -> None:
    plan = plan_memory(SHAPE, strategy="fsdp", world=4, precision="bf16", checkpoint_activations=True)
    # kept input 8*4*2 = 64; one layer recomputed: 8*40*2 = 640 + 1*8*8*14 = 896; logits 1536
    assert parts(plan) == {"weights": 1000, "working copies": 2 * 2 * 100, "gradients": 1000,
                           "optimizer (AdamW)": 2000, "EMA": 1000, "activations": 64 + 640 + 896 + 1536}  # fmt: skip


def test_ddp_keeps_its_buckets_and_the_whole_state_per_device() -> None:
    plan = plan_memory(SHAPE, strategy="ddp", world=8, precision="bf16", ema=False)
    assert parts(plan)["gradients"] == 8000 and parts(plan)["optimizer (AdamW)"] == 8000
    assert parts(plan)["working copies"] == 2 * 1000 and parts(plan)["EMA"] == 0


def test_lora_counts_trainable_apart_from_the_frozen_bf16_base() -> None:
    plan = plan_memory(SHAPE, strategy="none", precision="bf16", trainable_params=100, frozen_dtype="bf16")
    assert parts(plan)["weights"] == 4 * 100 + 2 * 900
    assert parts(plan)["working copies"] == 2 * 100  # the bf16 base is used as stored
    assert (parts(plan)["gradients"], parts(plan)["optimizer (AdamW)"], parts(plan)["EMA"]) == (400, 800, 400)
    assert SHAPE.with_trainable(100).trainable_params == 100


def test_lora_params_of_a_tiny_prior() -> None:
    model = build_prior("tiny_5b", "meta")
    # 3 blocks of width 32, attention width 8: c_attn 32x24, c_proj 8x32, c_fc 32x32, mlp c_proj 32x32
    assert lora_params(model, 4) == 3 * 4 * ((32 + 24) + (8 + 32) + (32 + 32) + (32 + 32))
    with pytest.raises(ConfigError, match="rank must be at least 1"):
        lora_params(model, 0)


def test_prior_shape_from_a_config_without_weights() -> None:
    shape = prior_shape("5b_lyrics")
    assert shape.total_params == 5_640_506_800  # the released checkpoint's count (weights/registry.py)
    assert len(shape.layers) == 79 + 18  # the prior and its lyric encoder
    assert {layer.positions for layer in shape.layers} == {8192, 512}


def test_refusal_names_what_would_fit() -> None:
    options = {"world": 2, "precision": "fp32", "device_memory": 20000}
    plan = plan_memory(SHAPE, strategy="ddp", **options)
    assert not plan.fits and plan.usable == 18000
    with pytest.raises(
        NotEnoughMemory, match=r"more than the .* usable .*; it would fit with --strategy fsdp\.$"
    ):
        check_fits(SHAPE, plan)
    check_fits(SHAPE, plan_memory(SHAPE, strategy="fsdp", **options))  # fits: no error


def test_refusal_suggests_more_devices_when_nothing_else_fits() -> None:
    shape = prior_shape("5b_lyrics")
    plan = plan_memory(shape, strategy="none", precision="bf16", checkpoint_activations=True,
                       device_memory=parse_memory("80GB"))  # fmt: skip
    with pytest.raises(
        NotEnoughMemory, match=r"about 122\.7 GB per device .* fit with fsdp over 2 devices\.$"
    ):
        check_fits(shape, plan)


def test_auto_strategy() -> None:
    assert choose_strategy("auto", 1, fits_with_ddp=False) == "none"
    assert choose_strategy("auto", 4, fits_with_ddp=True) == "ddp"
    assert choose_strategy("auto", 4, fits_with_ddp=False) == "fsdp"
    with pytest.raises(ConfigError, match="needs several processes"):
        choose_strategy("fsdp", 1, fits_with_ddp=True)
    with pytest.raises(ConfigError, match="Unknown strategy 'zero3'"):
        choose_strategy("zero3", 2, fits_with_ddp=True)


def test_parse_memory() -> None:
    assert parse_memory("24GB") == parse_memory("24 GiB") == parse_memory("24g") == 24 * GIB
    assert parse_memory("512MB") == 512 * 1024**2
    with pytest.raises(ConfigError, match="like 24GB"):
        parse_memory("lots")


def test_cli_plan_prints_the_table_and_refuses_with_exit_5(run_cli) -> None:
    done = run_cli("train", "plan", "1b_lyrics", "--device-memory", "24GB", "--lora-rank", "16")
    assert done.exit_code == 0, done.stderr
    assert "LoRA rank 16 on 1b_lyrics" in done.stdout and "16,515,072 of 942,643,200" in done.stdout
    done = run_cli("train", "plan", "5b_lyrics", "--world-size", "8", "--device-memory", "24GB")
    assert done.exit_code == 5
    assert "fsdp on 8 device(s)" in done.stdout  # auto: ddp does not fit
    assert "it would fit with --checkpoint-acts." in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_training_refuses_to_start_when_the_plan_does_not_fit(tmp_path, monkeypatch) -> None:
    from jukebox_cli.engine.train import memory
    from jukebox_cli.engine.train.loop import TrainConfig, train
    from tests.unit.test_train_loop import ToyTask

    monkeypatch.setattr(memory, "device_memory", lambda device: 1000)  # bytes: less than the toy's AdamW
    with pytest.raises(NotEnoughMemory, match=r"more than the 0\.0 GB usable of 0\.0 GB"):
        train(ToyTask(), TrainConfig(steps=2, ema=None), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything is written
    assert train(ToyTask(), TrainConfig(steps=2, ema=None), tmp_path / "run", check_memory=False).step == 2


def test_the_plan_of_a_model_with_adapters_attached_counts_only_them_as_trained() -> None:
    from jukebox_cli.engine.models.lora import LoRAConfig, attach
    from jukebox_cli.engine.train.memory import training_plan

    model = attach(build_prior("tiny_5b", "cpu").to(torch.bfloat16), LoRAConfig(rank=4))
    plan, shape = training_plan(model, requested="auto", world=1, precision="bf16", checkpoint_activations=False,
                                batch_size=1, ema=False, device=torch.device("cpu"))  # fmt: skip
    assert shape.trainable_params == lora_params(build_prior("tiny_5b", "meta"), 4) == 2688
    assert (plan.frozen_dtype, plan.strategy) == ("bf16", "none")
    frozen = shape.total_params - 2688
    assert parts(plan)["weights"] == 4 * 2688 + 2 * frozen
