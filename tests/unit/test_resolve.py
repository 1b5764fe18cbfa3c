"""Reading ``--model`` values: one resolver decides what each names, in a fixed order."""

from __future__ import annotations

from pathlib import Path

import pytest

from jukebox_cli.engine.errors import CheckpointNotFound, ConfigError
from jukebox_cli.engine.weights import shipped
from jukebox_cli.engine.weights.resolve import NAMES, VQVAE_PRESET_NAMES, label_tables, resolve


def test_demo_resolves_to_the_package_folder() -> None:
    source = resolve("demo")
    assert (source.kind, source.name) == ("shipped", "demo")
    assert (source.path / "vqvae.safetensors").is_file()
    assert sorted(p.name for p in source.path.glob("prior_level_*.safetensors")) == [
        "prior_level_0.safetensors", "prior_level_1.safetensors", "prior_level_2.safetensors"
    ]  # fmt: skip


def test_a_local_folder_or_file_of_that_name_wins(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "5b").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve("demo").kind == "folder" and resolve("5b").kind == "file"
    assert resolve("tiny-random").kind == "tiny-random"


@pytest.mark.parametrize(
    ("spec", "kind", "fields"),
    [
        ("1b_lyrics", "released", {"released": "1b_lyrics"}),
        (
            "openai/jukebox-1b-lyrics",
            "released",
            {"released": "1b_lyrics", "repo": "openai/jukebox-1b-lyrics"},
        ),
        (
            "openai/jukebox-1b-lyrics@abc123",
            "repo",
            {"repo": "openai/jukebox-1b-lyrics", "revision": "abc123"},
        ),
        ("someone/my-jukebox", "repo", {"repo": "someone/my-jukebox", "revision": None}),
        ("https://example.org/models/mine/", "url", {"url": "https://example.org/models/mine/"}),
        ("tiny", "preset", {}),
        ("jukebox", "preset", {}),
    ],
)
def test_each_kind_of_value(spec: str, kind: str, fields: dict) -> None:
    source = resolve(spec)
    assert source.kind == kind and source.spec == spec
    assert {k: getattr(source, k) for k in fields} == fields


def test_unknown_names_suggest_a_close_one() -> None:
    with pytest.raises(CheckpointNotFound, match="Did you mean 1b_lyrics"):
        resolve("1b-lyrics")


def test_missing_shipped_files_are_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shipped.resources, "files", lambda package: tmp_path)
    with pytest.raises(CheckpointNotFound, match="missing from this installation"):
        resolve("demo")


def test_preset_names_match_the_presets() -> None:
    from jukebox_cli.engine.models.presets import VQVAE_PRESETS

    assert set(VQVAE_PRESET_NAMES) == set(VQVAE_PRESETS)


def test_every_name_resolves_and_the_model_help_lists_it() -> None:
    from jukebox_cli.cli._options import MODEL_HELP

    for name in NAMES:
        assert resolve(name).kind in ("shipped", "tiny-random", "released", "preset")
        assert name in MODEL_HELP, name  # the help text is static (no engine import at start-up)


def test_label_tables_of_names_and_folders() -> None:
    assert label_tables("1b_lyrics")[0] == "v3" and label_tables("openai/jukebox-5b-lyrics")[0] == "v2"
    name, tables = label_tables("demo")  # read from the shipped top prior's file header
    assert name == "custom" and "rock" in tables.genres
    with pytest.raises(ConfigError, match="unknown model"):
        label_tables("someone/my-jukebox")


def test_reconstruct_and_generate_load_the_same_codec() -> None:
    from jukebox_cli.engine.weights.loading import load_bundle, load_vqvae

    loaded = load_vqvae("demo")
    bundle = load_bundle("demo")
    assert loaded.source == "demo" and loaded.pretrained and bundle.name == "demo" and bundle.spec == "demo"
    a, b = loaded.model.state_dict(), bundle.vqvae.state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_whole_model_commands_refuse_a_vqvae_alone(tiny_vqvae, tmp_path: Path) -> None:
    from jukebox_cli.engine.checkpoints.native import save_native
    from jukebox_cli.engine.weights.loading import load_bundle

    file = save_native(tiny_vqvae, tmp_path / "vqvae.safetensors")
    with pytest.raises(CheckpointNotFound, match="not a whole model"):
        load_bundle(file)
    with pytest.raises(CheckpointNotFound, match="not a whole model"):
        load_bundle("tiny")


def test_model_identity_ignores_spelling_not_the_model(tmp_path: Path, monkeypatch) -> None:
    from jukebox_cli.engine.weights.resolve import model_identity

    folder = tmp_path / "model"
    folder.mkdir()
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert model_identity("model") == model_identity(folder) == model_identity(f"{tmp_path}/./model/")
    assert model_identity("demo") != model_identity("tiny-random")
    # A released model's own hub repository is that model.
    assert model_identity("openai/jukebox-1b-lyrics") == model_identity("1b_lyrics")
    # An adapter given as its run folder or its file, relative or absolute.
    assert model_identity("demo+adapter=lora") == model_identity(
        f"demo+adapter={lora / 'adapter.safetensors'}"
    )
    assert model_identity("demo+adapter=lora") != model_identity("demo")
