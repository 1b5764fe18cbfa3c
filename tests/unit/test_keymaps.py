"""Key renaming original -> Hugging Face hub, checked key by key against the released manifests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial

import pytest

from jukebox_cli.engine.checkpoints.keymaps import (
    HUB_PRIOR_PREFIX,
    HUB_VQVAE_PREFIX,
    hub_key_map,
    prior_key_to_hub,
    vqvae_key_to_hub,
)
from tests.conftest import manifest

# original manifest -> renamer (the level decides the hub prefix)
RENAMERS: dict[str, Callable[[str], str]] = {
    "vqvae": vqvae_key_to_hub,
    "prior_level_0": partial(prior_key_to_hub, level=0),
    "prior_level_1": partial(prior_key_to_hub, level=1),
    "1b_lyrics_prior_level_2": partial(prior_key_to_hub, level=2),
    "5b_prior_level_2": partial(prior_key_to_hub, level=2),
    "5b_lyrics_prior_level_2": partial(prior_key_to_hub, level=2),
}
# hub repo -> the original files that make up its bundle
BUNDLES = {
    "jukebox-1b-lyrics": ["vqvae", "prior_level_0", "prior_level_1", "1b_lyrics_prior_level_2"],
    "jukebox-5b-lyrics": ["vqvae", "prior_level_0", "prior_level_1", "5b_lyrics_prior_level_2"],
}


@pytest.fixture(scope="module")
def explicit() -> dict[str, dict[str, str]]:
    return manifest("original_to_transformers_explicit")["maps"]


@pytest.mark.parametrize("name", list(RENAMERS))
def test_every_original_key_maps_as_the_explicit_map_says(name: str, explicit) -> None:
    keys = manifest(f"original/{name}")["keys"]
    expected = explicit[name]
    assert set(keys) == set(expected), "the explicit map covers exactly the manifest's keys"
    rename = RENAMERS[name]
    wrong = {k: (rename(k), expected[k]) for k in keys if rename(k) != expected[k]}
    assert not wrong, f"{len(wrong)} keys differ, e.g. {next(iter(wrong.items()))}"


@pytest.mark.parametrize("name", list(RENAMERS))
def test_the_map_is_injective_and_inverts(name: str) -> None:
    keys = list(manifest(f"original/{name}")["keys"])
    inverse = hub_key_map(keys, RENAMERS[name])
    assert len(inverse) == len(keys)
    assert all(RENAMERS[name](original) == hub for hub, original in inverse.items())


@pytest.mark.parametrize("repo", list(BUNDLES))
def test_every_hub_key_is_reached_exactly_once_with_equal_shape(repo: str) -> None:
    hub = manifest(f"transformers/{repo}")["keys"]
    reached: Counter[str] = Counter()
    for name in BUNDLES[repo]:
        for key, shape in manifest(f"original/{name}")["keys"].items():
            target = RENAMERS[name](key)
            assert target in hub, f"{name}: {key} -> {target} is not a hub key"
            assert hub[target] == shape, f"{name}: {key} {shape} != {target} {hub[target]}"
            reached[target] += 1
    assert set(reached) == set(hub), f"unreached: {sorted(set(hub) - set(reached))[:5]}"
    assert max(reached.values()) == 1, f"reached twice: {[k for k, n in reached.items() if n > 1][:5]}"


def test_prefixes_number_priors_top_down() -> None:
    assert HUB_PRIOR_PREFIX == {2: "priors.0.", 1: "priors.1.", 0: "priors.2."}
    assert prior_key_to_hub("prior.x_emb.weight", 2) == "priors.0.prior.embed_tokens.weight"
    assert prior_key_to_hub("prior.x_emb.weight", 0) == "priors.2.prior.embed_tokens.weight"
    assert vqvae_key_to_hub("bottleneck.level_blocks.2.k").startswith(HUB_VQVAE_PREFIX)


@pytest.mark.parametrize(
    ("key", "hub"),
    [
        ("conditioner_blocks.0.x_emb.weight", "conditioner_blocks.embed_tokens.weight"),
        ("conditioner_blocks.0.cond.model.0.bias", "conditioner_blocks.upsampler.proj_in.bias"),
        (
            "conditioner_blocks.0.cond.model.2.0.blocks.7.model.3.weight",
            "conditioner_blocks.upsampler.upsample_block.2.resnet_block.7.conv1d_2.weight",
        ),
        (
            "conditioner_blocks.0.cond.model.2.1.weight",
            "conditioner_blocks.upsampler.upsample_block.3.weight",
        ),
        ("conditioner_blocks.0.ln.weight", "conditioner_blocks.layer_norm.weight"),
        ("y_emb.artist_emb.emb.weight", "metadata_embedding.artist_emb.weight"),
        ("y_emb.relative_pos_emb.emb.weight", "metadata_embedding.relative_pos_emb.emb.weight"),
        ("prior.x_out.weight", "prior.fc_proj_out.weight"),
        ("prior.pos_emb.pos_emb", "prior.pos_emb.pos_emb"),
        ("prior.transformer._attn_mods.3.attn.c_attn.w", "prior.transformer._attn_mods.3.attn.c_attn.weight"),
        ("prior.transformer._attn_mods.3.mlp.c_proj.b", "prior.transformer._attn_mods.3.mlp.c_proj.bias"),
        ("prior.transformer._attn_mods.3.ln_1.bias", "prior.transformer._attn_mods.3.layer_norm_1.bias"),
        ("prime_prior.start_token", "encoder.start_token"),
        ("prime_prior.x_emb.weight", "encoder.embed_tokens.weight"),
        ("prime_state_proj.w", "encoder.proj_in.weight"),
        ("prime_state_ln.bias", "encoder.final_layer_norm.bias"),
        ("prime_x_out.weight", "encoder.lm_head.weight"),
    ],
)
def test_rule_examples(key: str, hub: str) -> None:
    assert prior_key_to_hub(key, 2) == "priors.0." + hub


@pytest.mark.parametrize(
    "key",
    [
        "encoders.0.level_blocks.0.model.0.0.weight",  # a VQ-VAE key
        "bottleneck.level_blocks.0.k",
        "priors.0.prior.embed_tokens.weight",  # already a hub key
        "module.prior.x_emb.weight",  # DDP prefix not stripped
        "conditioner_blocks.1.x_emb.weight",
        "conditioner_blocks.0.cond.model.0.0.blocks.0.model.1.weight",
        "y_emb.artist_emb.weight",
        "prior.start_token",
        "prime_prior.x_out.weight",
        "prior.transformer._attn_mods.0.attn.c_attn.weight",
        "prior.transformer._attn_mods.0.ln_2.weight",
        "prime_state_proj.weight",
        "",
    ],
)
def test_non_prior_keys_raise_key_error(key: str) -> None:
    with pytest.raises(KeyError):
        prior_key_to_hub(key, 2)


def test_unknown_level_raises_key_error() -> None:
    with pytest.raises(KeyError):
        prior_key_to_hub("prior.x_emb.weight", 3)


def test_hub_key_map_rejects_collisions() -> None:
    with pytest.raises(ValueError, match="both map"):
        hub_key_map(["a.x", "b.x"], lambda key: key.split(".")[1])
    assert hub_key_map(["a", "b"], str.upper) == {"A": "a", "B": "b"}
