"""The registry of released models, the cache's notion of "done", conversion, and loading one part at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jukebox_cli.engine.checkpoints.layouts import export_state_dict, source_key_plan
from jukebox_cli.engine.checkpoints.native import load_native
from jukebox_cli.engine.errors import CheckpointNotFound, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models.transformer import Conv1D
from jukebox_cli.engine.weights import registry
from jukebox_cli.engine.weights.cache import ModelCache, cache_root
from jukebox_cli.engine.weights.convert import convert_part, native_size, skeleton
from jukebox_cli.engine.weights.released import download_model, model_status, part_files
from tests.conftest import manifest
from tests.fake_models import tiny_parts, use_tiny_presets

MANIFEST_OF = {
    "vqvae": "vqvae",
    "upsampler_level_0": "prior_level_0",
    "upsampler_level_1": "prior_level_1",
    "1b_lyrics_top": "1b_lyrics_prior_level_2",
    "5b_top": "5b_prior_level_2",
    "5b_lyrics_top": "5b_lyrics_prior_level_2",
}


@pytest.mark.parametrize("part_id", list(registry.PARTS))
def test_each_part_loads_its_released_file(part_id: str) -> None:
    """Keys, shapes and dtypes of the architecture a part loads into are those of its released file."""
    part = registry.PARTS[part_id]
    expected = manifest(f"original/{MANIFEST_OF[part_id]}")
    model = skeleton(part)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected["keys"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in model.state_dict().items()} == expected[
        "dtypes"
    ]
    assert sum(p.numel() for p in model.parameters()) == part.params
    assert f"released file jukebox/models/{part.original_file};" in expected["source"]
    state = {k: torch.empty(s, device="meta") for k, s in expected["keys"].items()}
    source_key_plan(model, {"model": state}, "original")  # strict


@pytest.mark.parametrize("name", ["1b_lyrics", "5b_lyrics"])
def test_hub_models_are_exactly_their_repositories(name: str) -> None:
    entry = registry.get_model(name)
    keys = manifest(f"transformers/{entry.hub_repo.split('/')[1]}")["keys"]
    state = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    covered = set()
    for part in entry.part_list():
        model = skeleton(part)
        _, plan = source_key_plan(model, state, "hub")
        assert all(k.startswith(part.hub_prefix) for k in plan.values())
        covered |= set(plan.values())
    assert covered == set(keys)


def test_every_model_has_a_vqvae_and_three_levels() -> None:
    for entry in registry.MODELS.values():
        parts = entry.part_list()
        assert [p.kind for p in parts] == ["vqvae", "prior", "prior", "prior"]
        assert sorted(p.level for p in parts[1:]) == [0, 1, 2]
        assert entry.default_source == ("hub" if entry.hub_repo else "openai")
    assert registry.MODELS["5b"].sources == ("openai",)


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(CheckpointNotFound, match="Did you mean 5b_lyrics"):
        registry.get_model("5b-lyrics")
    with pytest.raises(CheckpointNotFound, match="released models: 1b_lyrics, 5b_lyrics, 5b"):
        registry.get_model("gpt2")


def test_mirrors_and_cache_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JUKEBOX_MIRRORS", raising=False)
    assert registry.openai_mirrors()[0] == "https://openaipublic.azureedge.net/jukebox/models/"
    monkeypatch.setenv("JUKEBOX_MIRRORS", "http://a/x, http://b/y/")
    assert registry.openai_mirrors() == ["http://a/x/", "http://b/y/"]

    monkeypatch.setenv("JUKEBOX_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("JUKEBOX_CACHE")
    assert cache_root().name == "jukebox-cli"


def test_sizes_of_converted_parts() -> None:
    top = registry.PARTS["1b_lyrics_top"]
    # The released 1B prior: 942.6 M weights, the tied head stored once; Conv1D weights in float16 as released.
    assert native_size(top, torch.float32) == 942_643_200 * 4
    assert native_size(top, torch.bfloat16) == 942_643_200 * 2
    assert 1.9e9 < native_size(top) < 1.96e9, "about the released file's 1.96 GB"
    assert native_size(registry.PARTS["vqvae"], torch.float16) == 1_878_979 * 4, "the VQ-VAE stays float32"
    five = registry.PARTS["5b_top"]
    assert 10e9 < native_size(five) < 10.5e9, "Conv1D weights in float16, as released"


def _convert(cache: ModelCache, part_id: str, model, dtype=None) -> dict:
    state = {"model": dict(export_state_dict(model, "original")), "step": 0}
    return convert_part(
        cache, registry.PARTS[part_id], state, "original", source={"kind": "test"}, dtype=dtype
    )


def test_conversion_and_the_cache_record(monkeypatch, tmp_path: Path) -> None:
    use_tiny_presets(monkeypatch)
    cache = ModelCache(tmp_path)
    parts = tiny_parts()
    record = _convert(cache, "1b_lyrics_top", parts["1b_lyrics_top"])
    assert (
        cache.has_part("1b_lyrics_top") and record["size"] == cache.part_file("1b_lyrics_top").stat().st_size
    )
    loaded = load_native(cache.part_file("1b_lyrics_top"))
    assert loaded.prior.x_out.weight is loaded.prior.x_emb.weight, "tied again after loading"
    for (key, a), b in zip(
        parts["1b_lyrics_top"].state_dict().items(), loaded.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key

    # A file of the wrong size (a torn copy), or a missing record, never counts as present.
    path = cache.part_file("1b_lyrics_top")
    path.write_bytes(path.read_bytes()[:-1])
    assert not cache.has_part("1b_lyrics_top")
    cache.record_file("1b_lyrics_top").unlink()
    assert cache.record("1b_lyrics_top") is None


def test_storage_dtype_and_loading_dtype(monkeypatch, tmp_path: Path) -> None:
    use_tiny_presets(monkeypatch)
    cache = ModelCache(tmp_path)
    parts = tiny_parts()
    _convert(cache, "upsampler_level_0", parts["upsampler_level_0"], dtype=torch.bfloat16)
    _convert(cache, "vqvae", parts["vqvae"], dtype=torch.bfloat16)
    from safetensors import safe_open

    with safe_open(str(cache.part_file("upsampler_level_0")), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    with safe_open(str(cache.part_file("vqvae")), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # noqa: SIM118
    assert json.loads(cache.record_file("upsampler_level_0").read_text())["dtype"] == "bf16"

    prior = load_native(cache.part_file("upsampler_level_0"))
    assert prior.prior.x_emb.weight.dtype == torch.float32, "loaded in the architecture's dtype"
    source = parts["upsampler_level_0"].state_dict()["prior.x_emb.weight"]
    assert torch.allclose(prior.prior.x_emb.weight, source.bfloat16().float())
    half = load_native(cache.part_file("upsampler_level_0"), linear_dtype=torch.float16)
    dtypes = {type(m): m.w.dtype for m in half.modules() if isinstance(m, Conv1D)}
    assert dtypes == {Conv1D: torch.float16} and half.prior.x_emb.weight.dtype == torch.float32


def test_wrong_architecture_names_the_difference(monkeypatch, tmp_path: Path) -> None:
    use_tiny_presets(monkeypatch)
    with pytest.raises(IncompatibleCheckpoint, match="does not match this architecture: .*missing"):
        _convert(ModelCache(tmp_path), "1b_lyrics_top", tiny_parts("5b_top")["5b_top"])
    assert not ModelCache(tmp_path).has_part("1b_lyrics_top")


def test_status_and_missing_models(tmp_path: Path) -> None:
    status = model_status("1b_lyrics", cache_dir=tmp_path)
    assert status.state == "no" and not status.complete and status.disk_used == 0
    with pytest.raises(CheckpointNotFound, match="jukebox models download 1b_lyrics"):
        part_files("1b_lyrics", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="from openai, not 'hub'"):
        download_model("5b", cache_dir=tmp_path, source="hub")
    with pytest.raises(ConfigError, match="storage dtype"):
        download_model("5b", cache_dir=tmp_path, dtype="int8")


def test_priors_load_one_level_at_a_time(monkeypatch, tmp_path: Path) -> None:
    from jukebox_cli.engine.weights import bundle as bundles
    from jukebox_cli.engine.weights.loading import load_bundle

    folder = bundles.save_bundle(load_bundle("tiny-random"), tmp_path / "model")
    loads = []
    original = bundles.load_native
    monkeypatch.setattr(
        bundles, "load_native", lambda path, **kw: loads.append(Path(path).name) or original(path, **kw)
    )
    bundle = load_bundle(folder)
    assert loads == ["vqvae.safetensors"], "priors are not read until a level needs them"
    assert sorted(bundle.prior_configs) == [0, 1, 2] and bundle.skeleton(2).prior.x_emb.weight.is_meta
    prior = bundle.load_prior(1)
    assert loads[-1] == "prior_level_1.safetensors" and prior.config.level == 1


def test_conv1d_weights_stay_half_only_when_that_is_lossless(monkeypatch, tmp_path: Path) -> None:
    from safetensors import safe_open

    use_tiny_presets(monkeypatch)
    cache = ModelCache(tmp_path)
    exact, inexact = tiny_parts()["upsampler_level_1"], tiny_parts(seed=3)["upsampler_level_1"]
    with torch.no_grad():  # as released: float16 values, held by a float32 model (the hub's copies)
        for module in exact.modules():
            if isinstance(module, Conv1D):
                module.w.copy_(module.w.half().float())
    for name, model in (("exact", exact), ("inexact", inexact)):
        state = {"model": dict(export_state_dict(model, "original"))}
        part = registry.PARTS["upsampler_level_1"]
        convert_part(cache, part, state, "original", source={}, record_id=name)
        with safe_open(str(cache.part_file(name)), "pt") as f:
            key = "prior.transformer._attn_mods.0.mlp.c_fc.w"
            assert f.get_slice(key).get_dtype() == ("F16" if name == "exact" else "F32")
            assert f.get_slice("prior.x_emb.weight").get_dtype() == "F32"
        loaded = load_native(cache.part_file(name))
        for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b), (name, key)
