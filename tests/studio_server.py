"""A ``jukebox studio`` server for tests: a subprocess on a free loopback port, and a client for it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``jukebox studio`` in a subprocess on a free loopback port."""

    def __init__(self, runs: Path, model: str = "tiny-random") -> None:
        self.runs = runs
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jukebox_cli", "studio", "--model", model, "--device", "cpu",
             "--runs", str(runs), "--port", str(self.port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the studio exited: {self.process.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise AssertionError("the studio did not start within 180 s") from None
                time.sleep(0.5)
        import gradio_client  # the tests that start a server skip without it

        self.client = gradio_client.Client(self.url, verbose=False)

    def call(self, endpoint: str, *args):
        return self.client.predict(*args, api_name=f"/{endpoint}")

    def wait(self, run: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while (status := self.call("job_status", run))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"{run} did not finish: {status}"
            time.sleep(0.5)
        assert status["state"] == "done", status
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
