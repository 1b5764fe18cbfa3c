"""Whether the cores a plan is timed on are shared with other work."""

from __future__ import annotations

import os

import pytest

from jukebox_cli.engine import devices


@pytest.mark.parametrize(("load", "busy"), [(0.3, False), (1.9, False), (2.0, True), (3.5, True)])
def test_busy_cpu_discounts_this_process(monkeypatch, load: float, busy: bool) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert devices.busy_cpu() == ((load, 2) if busy else None)


def test_busy_cpu_is_none_where_the_os_has_no_load_average(monkeypatch) -> None:
    monkeypatch.delattr(os, "getloadavg", raising=False)
    assert devices.busy_cpu() is None
