"""LoRA adapters: the adapted forward equals the merged weights, zero init is the base, state is adapters only."""

from __future__ import annotations

import copy

import pytest
import torch

from jukebox_cli.engine.errors import CheckpointNotFound, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models import lora
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.lora import LoRAConfig, LoRAConv1D
from jukebox_cli.engine.models.presets import prior_config
from jukebox_cli.engine.models.transformer import Conv1D, with_linear_dtype
from jukebox_cli.engine.weights.adapters import load_adapter, save_adapter, with_adapters
from jukebox_cli.engine.weights.loading import load_bundle


def _prior(seed: int = 0):
    return load_bundle("tiny-random").load_prior(2) if seed == 0 else build_prior(_config(), "cpu", seed)


def _config():
    return load_bundle("tiny-random").prior_configs[2]


def _inputs(prior, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    c = prior.config
    codes = torch.randint(0, c.codebook_size, (batch, c.n_ctx), generator=g)
    labeller = load_bundle("tiny-random").labellers[2]
    row = labeller.label_vector(
        0, [0], [], total_length=c.window_samples * 4, offset=0, length=c.window_samples
    )
    return codes, torch.tensor([row] * batch)


def _randomise_b(model, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRAConv1D):
                module.lora_b.copy_(torch.randn(module.lora_b.shape, generator=g) * 0.05)


def test_zero_b_leaves_the_model_untouched() -> None:
    base = _prior().eval()
    adapted = lora.attach(copy.deepcopy(base), LoRAConfig(rank=4, alpha=8)).eval()
    codes, labels = _inputs(base)
    with torch.no_grad():
        assert torch.equal(base(codes, labels).loss, adapted(codes, labels).loss)


def test_adapter_forward_equals_merged_weights() -> None:
    base = _prior().eval()
    config = LoRAConfig(rank=4, alpha=8)
    adapted = lora.attach(copy.deepcopy(base), config).eval()
    _randomise_b(adapted)
    merged = lora.merge_state(copy.deepcopy(base), lora.adapter_state(adapted), config)
    codes, labels = _inputs(base)
    with torch.no_grad():
        a, m, b = adapted(codes, labels), merged(codes, labels), base(codes, labels)
    torch.testing.assert_close(a.loss, m.loss, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a.loss, b.loss)  # the adapters do change the model
    # Layer by layer, on random inputs: x @ (w + scale a b) + bias.
    layer = next(m for m in adapted.modules() if isinstance(m, LoRAConv1D))
    x = torch.randn(3, 5, layer.base.w.shape[0])
    expected = x @ (layer.base.w + config.scale * layer.lora_a @ layer.lora_b) + layer.base.b
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_only_adapters_train_and_are_saved() -> None:
    config = LoRAConfig(rank=2, targets=("attn",))
    model = lora.attach(_prior(), config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    state = model.state_dict()
    assert set(state) == trainable
    assert not any(".c_fc." in n or "mlp" in n for n in state)  # attention only
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora.trainable_count(
        _prior(), config
    )
    # Strict loading of an adapters-only state (what a resume does), into a fresh adapted copy.
    other = lora.attach(_prior(), config, seed=9)
    assert not all(torch.equal(state[k], other.state_dict()[k]) for k in state)
    other.load_state_dict(state)
    assert all(torch.equal(state[k], other.state_dict()[k]) for k in state)
    with pytest.raises(RuntimeError, match="Missing"):
        other.load_state_dict({k: v for k, v in list(state.items())[1:]})


def test_every_attention_and_mlp_projection_is_adapted() -> None:
    model = lora.attach(_prior(), LoRAConfig(rank=2))
    names = [n for n, m in model.named_modules() if isinstance(m, LoRAConv1D)]
    assert any(n.endswith("attn.c_attn") for n in names) and any(n.endswith("attn.c_proj") for n in names)
    assert any(n.endswith("mlp.c_fc") for n in names) and any(n.endswith("mlp.c_proj") for n in names)
    left = [n for n, m in model.named_modules() if isinstance(m, Conv1D) and not n.endswith(".base")]
    assert all(".attn." not in n and ".mlp." not in n for n in left), left


def test_fingerprint_ignores_projection_dtype_and_tells_bases_apart() -> None:
    base = _prior()
    assert lora.fingerprint(base) == lora.fingerprint(with_linear_dtype(base, torch.bfloat16))
    assert lora.fingerprint(base) == lora.fingerprint(lora.attach(copy.deepcopy(base), LoRAConfig(rank=2)))
    assert lora.fingerprint(base) != lora.fingerprint(_prior(seed=7))


def test_adapter_file_round_trip_and_refusal_of_another_base(tmp_path) -> None:
    config = LoRAConfig(rank=4, alpha=2.0)
    base = _prior()
    adapted = lora.attach(copy.deepcopy(base), config)
    _randomise_b(adapted)
    path = save_adapter(adapted, tmp_path / "adapter.safetensors", lora=config, base="tiny-random",
                        base_fingerprint=lora.fingerprint(base))  # fmt: skip
    adapter = load_adapter(tmp_path)
    assert (adapter.lora, adapter.level, adapter.base) == (config, 2, "tiny-random")
    assert all(torch.equal(adapter.tensors[k], v) for k, v in lora.adapter_state(adapted).items())

    bundle = with_adapters(load_bundle("tiny-random"), [path])
    merged = bundle.load_prior(2)
    expected = lora.merge_state(copy.deepcopy(base), lora.adapter_state(adapted), config)
    got, want = merged.state_dict(), expected.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)

    with pytest.raises(IncompatibleCheckpoint, match="another base"):
        adapter.apply(_prior(seed=7))


@pytest.mark.parametrize(
    "kwargs",
    [{"rank": 0}, {"rank": 4, "alpha": 0.0}, {"rank": 4, "targets": ("ffn",)}, {"rank": 4, "targets": ()}],
)
def test_config_is_validated(kwargs) -> None:
    with pytest.raises(ConfigError):
        LoRAConfig(**kwargs)


def test_1b_lyrics_top_prior_counts_from_the_preset() -> None:
    skeleton = build_prior(prior_config("1b_lyrics"), "meta")
    for rank in (8, 16):
        count = lora.trainable_count(skeleton, LoRAConfig(rank=rank))
        by_hand = sum(rank * sum(m.w.shape) for _, m in lora.target_layers(skeleton))
        assert count == by_hand > 0


def test_an_adapted_model_value_names_its_base_and_adapters(tmp_path) -> None:
    from jukebox_cli.engine.weights.resolve import resolve, split_adapters, with_adapter_spec

    spec = with_adapter_spec("tiny-random", ["/a/run", "/b/adapter.safetensors"])
    assert split_adapters(spec) == ("tiny-random", ["/a/run", "/b/adapter.safetensors"])
    assert split_adapters("demo") == ("demo", [])
    assert resolve(spec).kind == "tiny-random"
    with pytest.raises(CheckpointNotFound):
        load_bundle(with_adapter_spec("tiny-random", [str(tmp_path / "missing")]))


def test_a_bf16_base_runs_in_bf16_and_keeps_no_float32_copy_for_backward() -> None:
    conv = Conv1D(16, 8)
    layer = LoRAConv1D(conv.to(torch.bfloat16).requires_grad_(False), rank=2, scale=1.0)
    saved = []
    x = torch.randn(4, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    assert out.dtype == torch.float32
    big = [t for t in saved if t.numel() == conv.w.numel()]
    assert big and all(t.dtype == torch.bfloat16 for t in big)  # the weight itself, not a float32 copy
    expected = (x.bfloat16() @ conv.w + conv.b).float() + x @ layer.lora_a @ layer.lora_b
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert layer.lora_b.grad is not None and conv.w.grad is None
