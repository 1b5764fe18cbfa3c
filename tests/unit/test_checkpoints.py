"""Weight layouts: strict conformance with the released manifests, round trips, and safe loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from jukebox_cli.engine import build_vqvae
from jukebox_cli.engine.checkpoints.keymaps import vqvae_key_to_hub
from jukebox_cli.engine.checkpoints.layouts import export_state_dict, import_state_dict
from jukebox_cli.engine.checkpoints.native import save_native
from jukebox_cli.engine.errors import CheckpointError, CheckpointNotFound, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.weights.loading import load_vqvae
from jukebox_cli.engine.weights.resolve import NAMES
from tests.conftest import manifest


def _meta_state(keys: dict[str, list[int]], dtypes: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    dtypes = dtypes or {}
    return {
        k: torch.empty(shape, device="meta", dtype=getattr(torch, dtypes.get(k, "float32")))
        for k, shape in keys.items()
    }


def _hub_vqvae_keys() -> dict[str, list[int]]:
    keys = manifest("transformers/jukebox-1b-lyrics")["keys"]
    return {k: v for k, v in keys.items() if k.startswith("vqvae.")}


def test_original_layout_matches_the_released_manifest_exactly() -> None:
    expected = manifest("original/vqvae")["keys"]
    exported = export_state_dict(build_vqvae("jukebox", device="meta"), "original")
    assert list(exported) == list(expected), "same keys in the same order as checkpoint['model']"
    assert {k: list(v.shape) for k, v in exported.items()} == expected


@pytest.mark.parametrize("repo", ["jukebox-1b-lyrics", "jukebox-5b-lyrics"])
def test_hub_layout_matches_the_hub_manifest_exactly(repo: str) -> None:
    keys = manifest(f"transformers/{repo}")["keys"]
    expected = {k: v for k, v in keys.items() if k.startswith("vqvae.")}
    exported = export_state_dict(build_vqvae("jukebox", device="meta"), "hub")
    assert {k: list(v.shape) for k, v in exported.items()} == expected


def test_hub_renames_agree_with_the_explicit_map() -> None:
    explicit = manifest("original_to_transformers_explicit")["maps"]["vqvae"]
    assert len(explicit) == 669
    for original, hub in explicit.items():
        assert vqvae_key_to_hub(original) == hub


@pytest.mark.parametrize("layout", ["original", "hub"])
def test_released_manifests_import_strictly(layout: str) -> None:
    if layout == "original":
        state = {"model": _meta_state(manifest("original/vqvae")["keys"]), "step": 0}
    else:  # a whole hub bundle: the VQ-VAE part is picked out, the priors ignored
        state = _meta_state(manifest("transformers/jukebox-1b-lyrics")["keys"])
    model = build_vqvae("jukebox", device="meta")
    import_state_dict(model, state, layout)
    assert all(block.initialised for block in model.bottleneck.level_blocks)


@pytest.mark.parametrize("layout", ["original", "hub", "native"])
def test_round_trip_is_bit_identical(layout: str) -> None:
    source, target = build_vqvae("tiny", seed=1), build_vqvae("tiny", seed=2)
    import_state_dict(target, export_state_dict(source, layout), layout)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_half_precision_and_ddp_prefix_are_handled() -> None:
    source, target = build_vqvae("tiny", seed=1), build_vqvae("tiny", seed=2)
    state = {f"module.{k}": v.half() for k, v in export_state_dict(source, "original").items()}
    import_state_dict(target, {"model": state}, "original")
    weight = target.state_dict()["decoders.0.out.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, source.state_dict()["decoders.0.out.weight"].half().float())


def test_prior_checkpoint_is_refused_with_a_reason() -> None:
    state = _meta_state(manifest("original/prior_level_0")["keys"])
    with pytest.raises(IncompatibleCheckpoint, match="looks like a prior"):
        import_state_dict(build_vqvae("jukebox", device="meta"), state, "original")


def test_shape_mismatch_names_the_key() -> None:
    state = export_state_dict(build_vqvae("tiny"), "original")
    state["decoders.0.out.weight"] = torch.zeros(1, 3, 3)
    with pytest.raises(IncompatibleCheckpoint, match=r"1 wrong shape: decoders\.0\.out\.weight"):
        import_state_dict(build_vqvae("tiny"), state, "original")
    with pytest.raises(IncompatibleCheckpoint, match="missing"):
        import_state_dict(build_vqvae("jukebox", device="meta"), state, "original")
    with pytest.raises(ConfigError):
        import_state_dict(build_vqvae("tiny"), state, "zip")


def test_native_file_round_trip(tmp_path: Path) -> None:
    model = build_vqvae("tiny", seed=5)
    path = save_native(model, tmp_path / "m" / "vqvae.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["vqvae.safetensors"], "no temp files left behind"
    for spec in (path, path.parent):
        loaded = load_vqvae(spec)
        assert loaded.pretrained and loaded.model.config == model.config
        x = 0.1 * torch.randn(1, 4096)
        assert torch.equal(
            loaded.model.decode(model.encode_level(x, 2), 2), model.decode(model.encode_level(x, 2), 2)
        )


def test_native_file_of_another_kind_or_version(tmp_path: Path) -> None:
    path = tmp_path / "prior.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "jukebox-cli", "kind": "prior"})
    with pytest.raises(IncompatibleCheckpoint, match="holds a prior model, not a VQ-VAE"):
        load_vqvae(path)
    save_file(
        {"x": torch.zeros(1)},
        str(path),
        metadata={"format": "jukebox-cli", "kind": "vqvae", "format_version": "99"},
    )
    with pytest.raises(IncompatibleCheckpoint, match="newer jukebox-cli"):
        load_vqvae(path)


def test_original_file_with_hps_builds_its_own_config(tmp_path: Path) -> None:
    model = build_vqvae("tiny", seed=7)
    hps = {"sr": 22050, "emb_width": 16, "l_bins": 64, "width": 8, "depth": 2, "levels": 3}
    path = tmp_path / "vqvae.pth.tar"
    torch.save({"hps": hps, "model": export_state_dict(model, "original"), "step": 10}, path)
    loaded = load_vqvae(path)
    assert loaded.model.config.codebook_size == 64 and loaded.model.sample_rate == 22050
    assert torch.equal(loaded.model.bottleneck[1].k, model.bottleneck[1].k)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the point of the test: a foreign pickle
def test_pickle_with_code_execution_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    with path.open("wb") as handle:
        pickle.dump({"model": _Payload(marker)}, handle)
    with pytest.raises(CheckpointError, match="can run any code it carries"):
        load_vqvae(path)
    assert not marker.exists()
    torch.save({"model": {"x": _Payload(marker)}}, path)
    with pytest.raises(CheckpointError, match="can run any code it carries"):
        load_vqvae(path)
    assert not marker.exists()


def test_presets_and_missing_paths() -> None:
    with pytest.raises(CheckpointNotFound, match="VQ-VAE is not downloaded"):
        load_vqvae("jukebox")
    with pytest.raises(CheckpointNotFound) as refused:
        load_vqvae("nonexistent.safetensors")
    listed = str(refused.value).split("(Names: ")[1]
    assert all(name in listed for name in NAMES) and "demo" in listed  # every name load_vqvae accepts
    loaded = load_vqvae("tiny")
    assert not loaded.pretrained


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "vqvae.pth.tar"
    torch.save({"model": export_state_dict(build_vqvae("tiny"), "original")}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_vqvae(path)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_take_the_umask_like_any_new_file(tmp_path: Path, umask: int) -> None:
    from jukebox_cli.engine.files import atomic_write

    old = os.umask(umask)
    try:
        native = save_native(build_vqvae("tiny"), tmp_path / "vqvae.safetensors")
        plain = atomic_write(tmp_path / "codes.safetensors", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    for path in (native, plain):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
