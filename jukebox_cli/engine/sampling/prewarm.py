"""Compiling a later level's decode step in another process while the levels before it sample (CPU).

The first torch.compile of a small prior's step takes 10-25 s on a CPU with an empty Inductor cache: for
the demo model's bottom level, as long as sampling the whole level eagerly. Inductor caches the compiled
code on disk by what it computes (the graph, shapes, dtypes, thread count), not by the weights' values, so
a process that builds the same prior with random weights and runs one step fills that cache, and the
level's own compile then takes 2-3 s. Sampling a small prior keeps one core busy; on two or more cores the
compile runs beside it. The tokens do not depend on it: the level compiles exactly as it would have.

``python -m jukebox_cli.engine.sampling.prewarm JSON`` is the worker (JSON: the prior config, the batch
sizes, the dtype's name); `Prewarm` starts one worker per level and waits for it before that level.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import TracebackType

import torch

from jukebox_cli.engine.dtypes import DTYPES, dtype_name
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.prior import PriorConfig
from jukebox_cli.engine.progress import ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.sampling.decode import make_decoder, prepare
from jukebox_cli.engine.sampling.level import threads_for

#: The longest a level waits for its worker before compiling on its own (a cold compile of the largest
#: prior the CPU compiles takes about 40 s on a busy 2-core machine).
WAIT_SECONDS = 180.0


class Prewarm:
    """The compile workers of a run's later levels: ``start`` them, ``wait`` before a level, then close.

    A worker that fails or is too slow only costs the time it took: the level then compiles on its own.
    """

    def __init__(self, progress: ProgressCallback = noop) -> None:
        self._workers: dict[int, subprocess.Popen] = {}
        self._progress = progress

    def start(self, level: int, config: PriorConfig, batches: list[int], dtype: torch.dtype) -> None:
        """Compile ``config``'s step for each batch size in ``dtype``, in a new process."""
        if config.n_tokens:  # a lyrics prior's cross-attention needs the encoder's shapes: not prewarmed
            return
        spec = {"config": config.to_dict(), "batches": batches, "dtype": dtype_name(dtype)}
        self._workers[level] = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait(self, level: int) -> None:
        """Before ``level`` samples: let its worker finish (shown as a stage), so its compile finds the cache."""
        worker = self._workers.pop(level, None)
        if worker is None:
            return
        stage = f"level {level} compile"
        self._progress(StageStarted(stage, None, "step"))
        try:
            worker.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        self._progress(StageFinished(stage))

    def close(self) -> None:
        for worker in self._workers.values():
            worker.kill()
            worker.wait()
        self._workers.clear()

    def __enter__(self) -> Prewarm:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@torch.no_grad()  # as sample_level: grad mode is part of what is compiled
def compile_step(config: PriorConfig, batches: list[int], dtype: torch.dtype, mode: str = "compiled") -> None:
    """Build ``config``'s prior with random weights and run one step of its decoder per batch size, as
    `level.sample_level` would on the CPU (same preparation, same thread count)."""
    device = torch.device("cpu")
    prior = prepare(build_prior(config, device).eval(), dtype, device, mode)
    width = prior.prior.width
    with threads_for(prior, device):
        for batch in batches:
            decoder = make_decoder(prior, batch, dtype=dtype, device=device, mode=mode)
            decoder.start(torch.zeros(batch, 1, width), torch.zeros(batch, 1, width), None)
            decoder.prime(torch.zeros(batch, 0, dtype=torch.long), 1)
            decoder.step()


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    started = time.monotonic()
    compile_step(PriorConfig.from_dict(spec["config"]), spec["batches"], DTYPES[spec["dtype"]])
    print(f"compiled in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
