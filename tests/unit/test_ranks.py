"""Where a process stands among several sampling one run (``engine/ranks.py``), without starting any."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.ranks import SINGLE, Ranks, from_environment


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n_samples", [5, 6, 7, 12])
def test_shares_cover_the_samples_in_order(world: int, n_samples: int) -> None:
    shares = [Ranks(rank=r, world=world).share(n_samples) for r in range(world)]
    rows = [i for s in shares for i in range(n_samples)[s]]
    assert rows == list(range(n_samples))
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_one_process_exchanges_nothing() -> None:
    assert SINGLE.exchange({"a": 1}) == [{"a": 1}] and SINGLE.from_main(3) == 3
    with pytest.raises(ConfigError, match="x"), SINGLE.together():
        raise ConfigError("x")


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_environment_without_torchrun_is_one_process(no_torchrun: pytest.MonkeyPatch) -> None:
    assert from_environment("cpu") == Ranks(device=torch.device("cpu"))


def test_inconsistent_environment_is_refused(no_torchrun: pytest.MonkeyPatch) -> None:
    no_torchrun.setenv("WORLD_SIZE", "2")
    no_torchrun.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT not set"):
        from_environment("cpu")
    no_torchrun.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="RANK=2 is outside WORLD_SIZE=2"):
        from_environment("cpu")
    no_torchrun.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="RANK='one' is not a whole number"):
        from_environment("cpu")
