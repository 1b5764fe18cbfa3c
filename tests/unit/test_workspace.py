"""The runs folder as a sandbox: names resolve inside it or are refused; favourites are kept in the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.sampling.workspace import FAVOURITES_FILE, Workspace

SETTINGS = {"model": "tiny-random", "levels": [2], "samples": [{"artist": "a", "genre": "g", "lyrics": ""}] * 3,
            "sample_length": 1024}  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "runs")
    Run.create(ws.root / "takes", SETTINGS)
    return ws


@pytest.mark.parametrize(
    "name",
    ["..", "../outside", "takes/../../x", "/etc", "/etc/passwd", ".studio", "a/.hidden", "a\\..\\b", "a/b/c",
     "", " ", "take s", "x\x00y", "~", "~/x", "%2e%2e", "takes/"],
)  # fmt: skip
def test_names_that_are_not_plain_folders_are_refused(workspace: Workspace, name: str) -> None:
    with pytest.raises(ConfigError):
        workspace.path(name)


def test_plain_names_resolve_inside(workspace: Workspace) -> None:
    assert workspace.path("takes") == workspace.root / "takes"
    assert workspace.path("album/take-3.v2") == workspace.root / "album" / "take-3.v2"
    assert workspace.run("takes") == workspace.root / "takes"
    assert workspace.name_of(workspace.root / "album" / "x") == "album/x"
    with pytest.raises(ConfigError, match="no run named 'missing'"):
        workspace.run("missing")


def test_links_out_of_the_folder_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    Run.create(outside, SETTINGS)
    os.symlink(outside, workspace.root / "link")
    os.symlink(tmp_path, workspace.root / "group")
    for name in ("link", "group/outside"):
        with pytest.raises(ConfigError, match="link"):
            workspace.run(name)
    (workspace.root / "takes" / "level_2").mkdir()
    os.symlink(tmp_path / "secret.wav", workspace.root / "takes" / "level_2" / "item_0.wav")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    with pytest.raises(ConfigError, match="link"):
        workspace.audio("takes", 2, 0)


def test_new_names_avoid_folders_and_reserved_names(workspace: Workspace) -> None:
    assert workspace.new_name("takes") == "takes-2"
    assert workspace.new_name("takes", {"takes-2"}) == "takes-3"
    assert workspace.new_name("../../etc/passwd") == "etc-passwd"
    assert workspace.new_name("...") == "run"


def test_favourites_are_kept_in_the_run(workspace: Workspace) -> None:
    assert workspace.favourites("takes") == []
    assert workspace.set_favourite("takes", 2) == [2]
    assert workspace.set_favourite("takes", 0) == [0, 2]
    assert workspace.set_favourite("takes", 2, False) == [0]
    assert json.loads((workspace.root / "takes" / FAVOURITES_FILE).read_text()) == {"takes": [0]}
    with pytest.raises(ConfigError, match="takes 0..2; there is no take 3"):
        workspace.set_favourite("takes", 3)
    (workspace.root / "takes" / FAVOURITES_FILE).write_text("{not json")
    assert workspace.favourites("takes") == []  # a damaged file loses the choice, not the run


def test_a_file_is_not_a_runs_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        Workspace(tmp_path / "file")
