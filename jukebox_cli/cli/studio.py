"""``jukebox studio``: serve the co-composition page (the ``studio`` extra: Gradio).

Gradio and the engine are imported inside the command (lazy), so ``jukebox --help`` stays quick and a
missing extra is one line that says how to install it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jukebox_cli.cli._errors import one_line
from jukebox_cli.cli._options import CacheDir, Device, Model

# The package is not on PyPI, so the extra is also spelled for an install from a clone.
INSTALL = "pip install 'jukebox-cli[studio]' (from a clone: pip install '.[studio]')"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def studio(
    *,
    model: Model = "demo",
    runs: Annotated[
        Path, typer.Option("--runs", help="The runs folder the page reads and writes (and nothing else).")
    ] = Path("runs"),
    host: Annotated[
        str, typer.Option(help="Address to serve on; 127.0.0.1 keeps the page to this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 7860,
    device: Device = "auto",
    cache_dir: CacheDir = None,
) -> None:
    """A local web page for co-composition: takes, favourites, extend, upsample, one job at a time.

    Generate many short top-level takes, listen to each with its chromagram, mark favourites, extend a take,
    and upsample the favourites. Every job writes an ordinary run folder in --runs, so `jukebox runs` and the
    page see the same runs; a job stopped by a restart resumes from its last window.

    Needs the studio extra: pip install 'jukebox-cli[studio]' (from a clone: pip install '.[studio]').

    Examples:

        jukebox studio

        jukebox studio --model 1b_lyrics --runs ~/songs --device cuda
    """
    from jukebox_cli.engine.errors import ConfigError

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError(f"jukebox studio needs Gradio, which is not installed: {INSTALL}")
    console = Console(stderr=True, soft_wrap=True)
    if not _is_loopback(host):
        console.print(
            f"[yellow]warning:[/] --host {host} serves the studio to every machine that can reach this one: "
            f"anyone there can generate on this device and read the runs in {runs}.",
            highlight=False,
        )
    from jukebox_cli.studio.server import serve

    def ready(url: str) -> None:
        console.print(f"studio on {url} (runs in {runs}); Ctrl-C stops it", highlight=False)

    serve(model=model, runs=runs, host=host, port=port, device=device, cache_dir=cache_dir,
          describe_error=one_line, ready=ready)  # fmt: skip
