"""One process at a time per output folder; the lock dies with its process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jukebox_cli.engine.errors import OutputInUse
from jukebox_cli.engine.locks import LOCK_FILE, hold_folder
from tests.conftest import held_by_another_process


def test_a_folder_held_elsewhere_is_refused_until_that_process_dies(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    expected = r"the run folder is in use by another jukebox process \(pid {}\)"
    with held_by_another_process(folder) as other:
        try:
            with hold_folder(folder, "run folder"):
                pytest.fail("the lock was taken twice")
        except OutputInUse as err:
            assert re.search(expected.format(other.pid), str(err)), err
    # killed with SIGKILL: nothing released it, yet the folder is free
    with hold_folder(folder):
        assert (folder / LOCK_FILE).is_file()
    assert not (folder / LOCK_FILE).exists()


def test_the_lock_is_reentrant_and_leaves_no_trace(tmp_path: Path) -> None:
    folder = tmp_path / "new"
    with hold_folder(folder):
        with hold_folder(folder):  # a caller holding it around a library call that takes it too
            pass
        assert (folder / LOCK_FILE).is_file(), "the inner release keeps the outer hold"
    assert not folder.exists(), "a folder made only for the lock goes with it"
