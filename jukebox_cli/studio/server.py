"""Start the studio: the runs folder, the models it offers, the job queue, the page, and the web server.

Gradio keeps the files it serves in a cache and serves nothing outside its cache and ``allowed_paths``. Both
are pointed into the runs folder (the cache at ``<runs>/.studio/gradio``, set before gradio is imported, since
it reads the variable then), so the page can reach no file outside the runs folder: run names go through
``Workspace``, and its file route through gradio's own check against these two places.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from jukebox_cli.engine.devices import device_description, resolve_device
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.sampling.jobs import JobQueue
from jukebox_cli.engine.sampling.tasks import Models
from jukebox_cli.engine.sampling.workspace import Workspace
from jukebox_cli.engine.weights.registry import MODELS
from jukebox_cli.engine.weights.released import model_status
from jukebox_cli.engine.weights.shipped import DEMO
from jukebox_cli.studio.actions import Studio

#: Models every studio offers besides ``--model``: the shipped one and the random one tests use.
ALWAYS_OFFERED = (DEMO, "tiny-random")


def offered_models(model: str, cache_dir: str | Path | None) -> list[str]:
    """``model`` first, then the shipped ones, then every released model already in the cache."""
    cached = [name for name in MODELS if model_status(name, cache_dir=cache_dir).complete]
    return list(dict.fromkeys([model, *ALWAYS_OFFERED, *cached]))


def serve(
    *,
    model: str,
    runs: Path,
    host: str,
    port: int,
    device: str,
    cache_dir: Path | None,
    describe_error: Callable[[BaseException], str],
    ready: Callable[[str], None] = lambda url: None,
    stop: threading.Event | None = None,
) -> None:
    """Serve the studio until ``stop`` is set or the process is interrupted.

    Raises:
        ConfigError: a runs folder that is a file, a queue journal that cannot be read, a port in use.
        OutputInUse: another studio serves this runs folder.
    """
    workspace = Workspace(runs)
    cache = workspace.studio_dir / "gradio"
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(cache / "examples")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: a studio works offline

    from jukebox_cli.studio.page import (
        CSS,
        build_page,
    )  # lazy: gradio reads the variables above when imported

    models = Models(offered_models(model, cache_dir), cache_dir=cache_dir)
    torch_device = resolve_device(device)
    queue = JobQueue(workspace, models, device=str(torch_device), describe_error=describe_error)
    try:
        studio = Studio(queue)
        header = f"Runs in `{workspace.root}` · sampling on {device_description(torch_device)}"
        page = build_page(studio, default_model=model, header=header)
        page.queue(default_concurrency_limit=4)
        queue.start()
        _launch(page, workspace, host, port, CSS)
        ready(page.local_url or f"http://{host}:{port}/")
        (stop or threading.Event()).wait()
    finally:
        queue.close(timeout=1.0)


def _launch(page, workspace: Workspace, host: str, port: int, css: str) -> None:
    try:
        page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                    allowed_paths=[str(workspace.root)], share=False, show_error=True,
                    css=css)  # fmt: skip
    except OSError as err:
        raise ConfigError(
            f"Cannot serve on {host}:{port} ({type(err).__name__}): the port is taken or the address is not this machine's; choose another --port or --host."
        ) from None
