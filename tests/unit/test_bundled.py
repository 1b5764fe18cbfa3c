"""Resolving ``--model demo`` to the folder shipped in the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from jukebox_cli.engine import bundled
from jukebox_cli.engine.errors import CheckpointNotFound


def test_demo_resolves_to_the_package_folder() -> None:
    folder = bundled.resolve("demo")
    assert isinstance(folder, Path) and (folder / "vqvae.safetensors").is_file()
    assert sorted(p.name for p in folder.glob("prior_level_*.safetensors")) == [
        "prior_level_0.safetensors", "prior_level_1.safetensors", "prior_level_2.safetensors"
    ]  # fmt: skip


def test_a_local_folder_of_that_name_wins(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert bundled.resolve("demo") == "demo"
    assert bundled.resolve("runs/other") == "runs/other"


def test_missing_files_are_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bundled.resources, "files", lambda package: tmp_path)
    with pytest.raises(CheckpointNotFound, match="missing from this installation"):
        bundled.resolve("demo")


def test_reconstruct_and_generate_load_the_same_codec() -> None:
    from jukebox_cli.engine.bundle import load_bundle
    from jukebox_cli.engine.checkpoints import load_vqvae

    loaded = load_vqvae("demo")
    bundle = load_bundle("demo")
    assert loaded.source == "demo" and loaded.pretrained and bundle.name == "demo"
    a, b = loaded.model.state_dict(), bundle.vqvae.state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
