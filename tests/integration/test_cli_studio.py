"""``jukebox studio`` as a command: one line without the extra, a warning off loopback, its options passed on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def test_without_gradio_it_says_how_to_install_it(run_cli, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a)
    )
    result = run_cli("studio")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: jukebox studio needs Gradio, which is not installed: pip install 'jukebox-cli[studio]'"
        " (from a clone: pip install '.[studio]')"
    ]


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                              ("0.0.0.0", True), ("192.0.2.7", True)])  # fmt: skip
def test_a_host_off_loopback_is_warned_about(
    run_cli, monkeypatch, tmp_path: Path, host: str, warned: bool
) -> None:
    pytest.importorskip("gradio", reason="the studio extra is not installed")
    import jukebox_cli.studio.server as server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda **kwargs: seen.update(kwargs))
    result = run_cli("studio", "--host", host, "--port", "7999", "--runs", tmp_path, "--model", "tiny-random")
    assert result.exit_code == 0, result.stderr
    assert ("warning: --host" in result.stderr) == warned
    assert (seen["host"], seen["port"], seen["runs"], seen["model"]) == (host, 7999, tmp_path, "tiny-random")


def test_the_default_binds_to_loopback(run_cli, monkeypatch) -> None:
    pytest.importorskip("gradio", reason="the studio extra is not installed")
    import jukebox_cli.studio.server as server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda **kwargs: seen.update(kwargs))
    assert run_cli("studio").exit_code == 0
    assert (seen["host"], seen["port"], seen["runs"]) == ("127.0.0.1", 7860, Path("runs"))
