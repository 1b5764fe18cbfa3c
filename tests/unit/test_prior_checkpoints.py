"""Prior weight layouts: the hub bundles key for key, fp16 files, and native model folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jukebox_cli.engine.checkpoints.layouts import export_state_dict, import_state_dict
from jukebox_cli.engine.models.builders import build_prior, build_vqvae
from jukebox_cli.engine.weights.bundle import save_bundle
from jukebox_cli.engine.weights.loading import load_bundle
from tests.conftest import manifest

HUB_BUNDLES = {
    "jukebox-1b-lyrics": {2: "1b_lyrics", 1: "upsampler_level_1", 0: "upsampler_level_0"},
    "jukebox-5b-lyrics": {2: "5b_lyrics", 1: "upsampler_level_1", 0: "upsampler_level_0"},
}


@pytest.mark.parametrize("repo", list(HUB_BUNDLES))
def test_hub_bundle_is_covered_exactly(repo: str) -> None:
    expected = {k: v for k, v in manifest(f"transformers/{repo}")["keys"].items()}
    exported = dict(export_state_dict(build_vqvae("jukebox", device="meta"), "hub"))
    for preset in HUB_BUNDLES[repo].values():
        part = export_state_dict(build_prior(preset, device="meta"), "hub")
        assert not set(part) & set(exported), "parts must not collide"
        exported.update(part)
    assert {k: list(v.shape) for k, v in exported.items()} == expected


@pytest.mark.parametrize("repo", list(HUB_BUNDLES))
def test_hub_bundle_imports_into_each_prior(repo: str) -> None:
    keys = manifest(f"transformers/{repo}")["keys"]
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    for preset in HUB_BUNDLES[repo].values():
        prior = build_prior(preset, device="meta")
        import_state_dict(prior, state, "hub")  # strict: raises on any missing/extra key or shape
        assert (prior.prior.x_out.weight is prior.prior.x_emb.weight) == (not prior.config.merged_decoder)


def test_half_precision_conv1d_weights_are_cast() -> None:
    source, target = build_prior("tiny_5b_lyrics", seed=1), build_prior("tiny_5b_lyrics", seed=2)
    state = {
        k: (v.half() if k.endswith(".w") else v) for k, v in export_state_dict(source, "original").items()
    }
    import_state_dict(target, state, "original")
    weight = target.state_dict()["prior.transformer._attn_mods.0.attn.c_attn.w"]
    assert weight.dtype == torch.float32
    assert torch.equal(
        weight, source.state_dict()["prior.transformer._attn_mods.0.attn.c_attn.w"].half().float()
    )


def test_released_5b_keeps_half_conv1d_weights() -> None:
    prior = build_prior("5b", device="meta")
    assert prior.prior.transformer._attn_mods[0].mlp.c_fc.w.dtype == torch.float16
    assert prior.prior.x_emb.weight.dtype == torch.float32


def test_native_model_folder_round_trip(tmp_path: Path, run_cli) -> None:
    bundle = load_bundle("tiny-random")
    folder = save_bundle(bundle, tmp_path / "my-model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "prior_level_0.safetensors", "prior_level_1.safetensors", "prior_level_2.safetensors", "vqvae.safetensors",
    ]  # fmt: skip
    loaded = load_bundle(folder)
    assert loaded.pretrained and loaded.priors[2].config == bundle.priors[2].config
    for level, prior in bundle.priors.items():
        for (name, a), b in zip(
            prior.state_dict().items(), loaded.priors[level].state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
    result = run_cli("generate", "--model", folder, "--levels", "2", "--duration", "1", "--device", "cpu",
                     "--quiet", "-o", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.stderr
