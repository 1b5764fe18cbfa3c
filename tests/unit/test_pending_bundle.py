"""A released model that is not downloaded can be planned offline; running it downloads it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from jukebox_cli.engine.errors import NetworkError
from jukebox_cli.engine.sampling import plan
from jukebox_cli.engine.sampling.generation import prepare_generate
from jukebox_cli.engine.weights import released


@pytest.fixture
def offline(monkeypatch):
    calls = []

    def no_network(name, **kwargs):
        calls.append(name)
        raise NetworkError("the hub cannot be reached (simulated)")

    monkeypatch.setattr(released, "download_model", no_network)
    return calls


def test_a_released_plan_needs_no_download(offline, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(plan, "free_memory", lambda device: 2**40)
    job = prepare_generate(model="5b", genre="rock", artist="the beatles", duration=20, samples=2,
                           output=tmp_path / "run", cache_dir=tmp_path / "cache")  # fmt: skip
    assert job.bundle.pending and job.bundle.name == "5b"
    plans = job.plan("cpu")
    assert [(p.level, p.new_tokens) for p in plans] == [(2, 6890), (1, 27_560), (0, 110_240)]
    assert all(p.batch_size == 2 for p in plans)  # auto, with a terabyte free
    assert offline == []
    with pytest.raises(NetworkError):  # the weights are fetched when the job runs, before anything is written
        job.run(device="cpu")
    assert offline == ["5b"]
    assert not (tmp_path / "run").exists()


def test_unknown_labels_fail_before_any_download(offline, tmp_path: Path) -> None:
    from jukebox_cli.engine.errors import LabelError

    with pytest.raises(LabelError):
        prepare_generate(model="1b_lyrics", genre="no such genre", duration=20, output=tmp_path / "run",
                         cache_dir=tmp_path / "cache")  # fmt: skip
    assert offline == []
