"""Reading a safetensors header without torch gives what safetensors itself reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jukebox_cli.engine.checkpoints.header import read_config_values, read_metadata
from jukebox_cli.engine.errors import CheckpointError
from jukebox_cli.engine.weights.resolve import resolve
from jukebox_cli.engine.weights.shipped import DEMO


def test_metadata_equals_safetensors_own(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(
        {"w": torch.ones(3)}, path, metadata={"config": json.dumps({"label_set": "v3"}), "kind": "prior"}
    )
    with safe_open(str(path), framework="pt") as handle:
        assert read_metadata(path) == handle.metadata()
    assert read_config_values(path) == {"label_set": "v3"}


def test_the_shipped_prior_config_reads_without_torch() -> None:
    prior = resolve(DEMO).path / "prior_level_2.safetensors"
    assert read_config_values(prior)["label_set"] == "custom"


@pytest.mark.parametrize("content", [b"", b"\xff" * 8, b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}"])
def test_unreadable_files_are_one_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_metadata(path)
