"""One process of the GPU suite: runs measurement tasks in order and reports each result as a JSON line.

    python3 bench/_gpu_worker.py TASKS.json --deadline EPOCH_SECONDS

``bench/gpu_suite.py`` starts it (and starts a fresh one after a crash or a hang, with the tasks left), so
that a CUDA error which poisons a process's context costs one measurement, not the rest of the run. Lines on
stdout that start with ``@@gpu-suite`` are the protocol: ``{"event": "start" | "row" | "done", "task": id,
...}``; anything else (the reference's prints) is ignored by the parent.

Timing: every number is wall time between two ``torch.cuda.synchronize()`` calls. A window's cost splits
into a fixed part (conditioning, cache set-up, priming the known codes, any per-call capture) and a part per
new token, so the time per decode step is taken as a difference, ``(T(K, n0 + n) - T(K, n0)) / n``, which
cancels the fixed part; the first call's excess over a warm call is reported as capture/compile time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PREFIX = "@@gpu-suite "
POISONED = 17  # exit status: the CUDA context broke; the parent goes on in a fresh worker


def emit(event: str, task: str, **fields) -> None:
    print(PREFIX + json.dumps({"event": event, "task": task, **fields}, default=str), flush=True)


class Unavailable(Exception):
    """The installed code does not offer a decode mode (recorded as such, not as a failure)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:2000]


# -- our sampler, one decode mode -----------------------------------------------------------------------------


CAPTURE_ONLY = "static-graph"  # the fixed-shape step captured as a CUDA graph, without torch.compile
DTYPE = torch.bfloat16  # our working dtype on the GPU (the CLI's choice there)


def make_decoder(prior, mode: str, batch: int, device: torch.device):
    """A decoder for ``mode`` that every window of a measurement reuses (compiled and captured once).

    ``eager`` without a decoder API is today's path (None); any other mode the installed code does not offer
    raises Unavailable. ``static-graph`` is ``StaticDecoder(compile=False, graph=True)``: the CUDA graph alone,
    no compile time.
    """
    import inspect

    from jukebox_cli.engine.sampling.level import sample_window

    if "decoder" not in inspect.signature(sample_window).parameters:
        if mode == "eager":
            return None
        raise Unavailable("sample_window takes no decoder in the installed code")
    from jukebox_cli.engine.errors import ConfigError
    from jukebox_cli.engine.sampling import decode

    try:
        if mode == CAPTURE_ONLY:
            return decode.StaticDecoder(prior, batch, dtype=DTYPE, device=device, compile=False, graph=True)
        return decode.make_decoder(prior, batch, dtype=DTYPE, device=device, mode=mode)
    except (ConfigError, TypeError, AttributeError) as err:  # not offered here, or another API
        raise Unavailable(_error_text(err)) from err


def _is_unavailable(err: BaseException, mode: str) -> bool:
    """A first-call failure that says the mode is not offered here (vs a bug, recorded as an error)."""
    from jukebox_cli.engine.errors import ConfigError, DeviceError

    return isinstance(err, ConfigError | DeviceError | NotImplementedError) and mode in str(err).lower()


class Runner:
    """Runs one sampler on fixed inputs: ``time(n_known, n_new)`` samples one window, synchronised."""

    def __init__(self, fn, device: torch.device) -> None:
        self.fn, self.device = fn, device

    def time(self, n_known: int, n_new: int) -> float:
        return _timed(lambda: self.fn(n_known, n_new), self.device)


def ours_runner(prior, mode: str, batch: int, device: torch.device, seed: int) -> Runner:
    from bench._gpu_models import make_inputs
    from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window

    decoder = make_decoder(prior, mode, batch, device)
    extra = {} if decoder is None else {"decoder": decoder}
    # The whole sampling path (filter and draw), as the reference's top_k=1 runs it; the decoder, not
    # settings.decode, sets the mode.
    settings = SamplingSettings(temperature=1.0, top_k=1)
    codes, labels, upper = make_inputs(prior.config, batch, device, seed=seed)

    def call(n_known: int, n_new: int) -> torch.Tensor:
        return sample_window(prior, codes[:, :n_known], n_new, labels, upper_codes=upper, settings=settings,
                             dtype=DTYPE, **extra)  # fmt: skip

    return Runner(call, device)


def reference_runner(reference, config, batch: int, device: torch.device, seed: int) -> Runner:
    from bench._gpu_models import make_inputs
    from tests.oracle_priors import reference_sample

    codes, labels, upper = make_inputs(config, batch, device, seed=seed)
    fp16 = device.type == "cuda"  # its half-precision sampling flag; on a CPU (--smoke) it runs in fp32

    def call(n_known: int, n_new: int) -> torch.Tensor:
        return reference_sample(reference, codes[:, :n_known], n_new, labels, upper, chunk_size=32, fp16=fp16,
                                seed=seed)  # fmt: skip

    return Runner(call, device)


def decode_rate(runner: Runner, *, n_known: int, n_short: int, n_new: int, repeats: int, budget_s: float,
                deadline: float) -> dict:  # fmt: skip
    """Time per decode step by difference of a short and a long window; first-call and fixed costs aside.

    The first window is untimed warm-up (its time is reported: capture or compilation happens there); then
    up to ``repeats`` pairs of windows, fewer if the pairs would overrun ``budget_s`` or the deadline.
    """
    start = time.perf_counter()
    first = runner.time(n_known, n_short)
    shorts, longs = [runner.time(n_known, n_short)], []
    while True:
        longs.append(runner.time(n_known, n_short + n_new))
        pair = shorts[-1] + longs[-1]
        elapsed = time.perf_counter() - start
        if len(longs) >= repeats or elapsed + pair > budget_s or time.time() + pair > deadline:
            break
        shorts.append(runner.time(n_known, n_short))
    short, long = statistics.median(shorts), statistics.median(longs)
    steps = [(b - a) / n_new for a, b in zip(shorts, longs, strict=True)]
    per_step = (long - short) / n_new
    noisy = per_step <= 0
    if noisy:  # the longer window was not slower: noise swamps the difference; bound from above instead
        per_step = long / (n_short + n_new)
    return dict(first_call_s=first, second_call_s=shorts[0], short_call_s=short, long_call_s=long,
                per_step_s=per_step, steps_per_s=1.0 / per_step, fixed_s=max(short - n_short * per_step, 0.0),
                capture_s=max(first - short, 0.0), spread=(max(steps) - min(steps)) / abs(per_step), noisy=noisy,
                n_known=n_known, n_short=n_short, n_new=n_new, repeats=len(longs))  # fmt: skip


def priming_rate(runner: Runner, *, k_small: int, k_big: int) -> dict:
    """Known codes pushed through the cache per second, by difference of two windows with one new code
    (the decode measurement before it has warmed the runner up)."""
    small, big = runner.time(k_small, 1), runner.time(k_big, 1)
    noisy = big <= small
    # Noise swamping the difference: bound the rate from below by charging the whole window to priming.
    rate = k_big / big if noisy else (k_big - k_small) / (big - small)
    return dict(prime_codes_per_s=rate, window_fixed_s=max(small - k_small / rate, 0.0), k_small=k_small,
                k_big=k_big, t_small_s=small, t_big_s=big, priming_noisy=noisy)  # fmt: skip


# -- models, kept while tasks need them ----------------------------------------------------------------------


class Models:
    """Builds each model once and keeps the two most recent (the next task usually reuses one)."""

    def __init__(self, device: torch.device, smoke: bool) -> None:
        self.device, self.smoke = device, smoke
        self.cache: dict[tuple, tuple] = {}

    def get(self, side: str, preset: str, depth: int | None):
        from bench._gpu_models import build_ours, build_reference, config_for, count_parameters

        key = (side, preset, depth)
        if key in self.cache:
            self.cache[key] = self.cache.pop(key)  # most recent last
            return self.cache[key]
        while len(self.cache) >= 2:
            self.cache.pop(next(iter(self.cache)))
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        config = config_for(preset, smoke=self.smoke, depth=depth)
        start = time.perf_counter()
        if side == "ours":
            model = build_ours(config, self.device)
        else:
            model = build_reference(preset, config, self.device)
        _sync(self.device)
        entry = (model, config, time.perf_counter() - start, count_parameters(model))
        self.cache[key] = entry
        return entry


# -- tasks ------------------------------------------------------------------------------------------------------


def _copy_times(size: int, device: torch.device, repeats: int) -> list[float]:
    """Seconds per device-to-device copy of ``size`` bytes (random bf16 values; 2 untimed copies first)."""
    src = torch.empty(size // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    return [_timed(lambda: dst.copy_(src), device) for _ in range(repeats)]


def task_env(task: dict, device: torch.device) -> None:
    info = dict(torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
                device=str(device), cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None)  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, memory_gib=props.total_memory / 2**30, sms=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}")  # fmt: skip
    emit("row", task["id"], kind="env", **info)
    size = task.get("copy_bytes", 2 * 2**30)
    times = _copy_times(size, device, task.get("repeats", 8))
    best, median = min(times), statistics.median(times)
    emit("row", task["id"], kind="copy", bytes_moved=2 * size, best_s=best, median_s=median,
         bandwidth_best=2 * size / best, bandwidth_median=2 * size / median)  # fmt: skip
    n = task.get("matmul_n", 8192)
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    a @ b
    times = [_timed(lambda: a @ b, device) for _ in range(task.get("matmul_repeats", 5))]
    emit("row", task["id"], kind="matmul", n=n, best_s=min(times), tflops=2 * n**3 / min(times) / 1e12)


def task_ours(task: dict, device: torch.device, models: Models, deadline: float) -> None:
    prior, config, build_s, params = models.get("ours", task["preset"], task.get("depth"))
    common = dict(kind="ours", preset=task["preset"], batch=task["batch"], depth=config.depth,
                  width=config.width, params=params, build_s=build_s)  # fmt: skip
    for mode in task["modes"]:
        if time.time() > deadline:
            emit("row", task["id"], mode=mode, status="skipped", reason="time budget", **common)
            continue
        try:
            row = _measure_ours(prior, mode, task, device, deadline)
        except Unavailable as err:
            row = dict(status="unavailable", reason=str(err))
        except Exception as err:
            row = dict(status="error", error=_error_text(err), trace=traceback.format_exc()[-3000:])
        _recover(device)  # the decoder (its graph and cache) is gone with _measure_ours's frame
        emit("row", task["id"], mode=mode, **row, **common)
        if task.get("first_ok") and row["status"] == "ok":  # the modes were fallbacks for one another
            break


def _measure_ours(prior, mode: str, task: dict, device: torch.device, deadline: float) -> dict:
    from bench._gpu_models import kv_bytes_per_step, weight_bytes_per_step

    runner = ours_runner(prior, mode, task["batch"], device, task.get("seed", 0))
    try:
        stats = decode_rate(runner, n_known=task["n_known"], n_short=task["n_short"], n_new=task["n_new"],
                            repeats=task["repeats"], budget_s=task["mode_budget_s"], deadline=deadline)  # fmt: skip
    except Exception as err:
        if _is_unavailable(err, mode):
            raise Unavailable(_error_text(err)) from err
        raise
    c = prior.config
    position = (
        (c.n_tokens if c.single_enc_dec else 0) + task["n_known"] + task["n_short"] + task["n_new"] // 2
    )
    weights = weight_bytes_per_step(prior)
    kv = kv_bytes_per_step(prior, position, task["batch"], DTYPE.itemsize)
    return dict(status="ok", tokens_per_s=stats["steps_per_s"] * task["batch"], weight_bytes=weights, kv_bytes=kv,
                bytes_per_step=weights + kv, position=position, **stats)  # fmt: skip


def task_cascade(task: dict, device: torch.device, models: Models, deadline: float) -> None:
    """Decode and priming rates at the cascade's batch; priming up to the context its windows really have."""
    prior, _, _, _ = models.get("ours", task["preset"], task.get("depth"))
    tried = []
    for mode in task["modes"]:  # preferred first; the first that works is used
        try:
            row = _measure_cascade(prior, mode, task, device, deadline)
        except Exception as err:
            tried.append(f"{mode}: {_error_text(err)}")
            _recover(device)
            continue
        _recover(device)
        emit("row", task["id"], kind="cascade", preset=task["preset"], batch=task["batch"], mode=mode, tried=tried,
             **row)  # fmt: skip
        return
    emit("row", task["id"], kind="cascade", preset=task["preset"], batch=task["batch"], status="error",
         error="; ".join(tried))  # fmt: skip


def _measure_cascade(prior, mode: str, task: dict, device: torch.device, deadline: float) -> dict:
    runner = ours_runner(prior, mode, task["batch"], device, task.get("seed", 0))
    row = dict(status="ok", **decode_rate(runner, n_known=task["k_small"], n_short=task["n_short"],
                                          n_new=task["n_new"], repeats=task["repeats"],
                                          budget_s=task["mode_budget_s"], deadline=deadline))  # fmt: skip
    if time.time() < deadline:
        try:  # priming runs the same chunked path in every mode
            row.update(priming_rate(runner, k_small=task["k_small"], k_big=task["k_big"]))
        except Exception as err:
            row["priming_error"] = _error_text(err)
    return row


def task_reference(task: dict, device: torch.device, models: Models, deadline: float) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # its torch.jit.script decorators
    reference, config, build_s, params = models.get("reference", task["preset"], task.get("depth"))
    common = dict(kind="reference", preset=task["preset"], batch=task["batch"], depth=config.depth,
                  width=config.width, params=params, build_s=build_s, mode="fp16" if device.type == "cuda" else "fp32")  # fmt: skip
    try:
        runner = reference_runner(reference, config, task["batch"], device, task.get("seed", 0))
        stats = decode_rate(runner, n_known=task["n_known"], n_short=task["n_short"], n_new=task["n_new"],
                            repeats=task["repeats"], budget_s=task["mode_budget_s"], deadline=deadline)  # fmt: skip
    except Exception as err:
        emit("row", task["id"], status="error", error=_error_text(err), trace=traceback.format_exc()[-3000:],
             **common)  # fmt: skip
        _recover(device)
        return
    emit("row", task["id"], status="ok", tokens_per_s=stats["steps_per_s"] * task["batch"], **stats, **common)


def _recover(device: torch.device) -> None:
    """After a measurement: release what it held (graphs, caches)."""
    gc.collect()
    with contextlib.suppress(Exception):
        _sync(device)
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()


def healthy(device: torch.device) -> bool:
    """Whether the device still runs work: after an illegal address or a failed capture the CUDA context can
    be poisoned for good, and every later measurement in this process would fail too."""
    if device.type != "cuda":
        return True
    try:
        x = torch.ones(4, device=device)
        ok = float((x + x).sum().item()) == 8.0
        torch.cuda.synchronize(device)
        return ok
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks", type=Path, help="JSON list of tasks")
    p.add_argument(
        "--deadline", type=float, required=True, help="epoch seconds after which modes are skipped"
    )
    args = p.parse_args(argv)
    spec = json.loads(args.tasks.read_text())
    device = torch.device(spec["device"])
    models = Models(device, spec.get("smoke", False))
    fault = os.environ.get("JUKEBOX_GPU_SUITE_FAULT", "")  # watchdog tests: crash:ID, hang:ID, poison:ID
    for task in spec["tasks"]:
        emit("start", task["id"])
        start = time.perf_counter()
        if fault == f"crash:{task['id']}":
            os._exit(3)
        if fault == f"hang:{task['id']}":
            time.sleep(3600)
        if time.time() + task.get("min_s", 0.0) > args.deadline:
            emit("done", task["id"], status="skipped", reason="time budget", elapsed_s=0.0)
            continue
        try:
            if task["kind"] == "env":
                task_env(task, device)
            elif task["kind"] == "ours":
                task_ours(task, device, models, args.deadline)
            elif task["kind"] == "cascade":
                task_cascade(task, device, models, args.deadline)
            elif task["kind"] == "reference":
                task_reference(task, device, models, args.deadline)
            else:
                raise ValueError(f"unknown task kind {task['kind']!r}")
        except Exception as err:
            emit("done", task["id"], status="error", error=_error_text(err), trace=traceback.format_exc()[-3000:],
                 elapsed_s=time.perf_counter() - start)  # fmt: skip
            _recover(device)
        else:
            emit("done", task["id"], status="ok", elapsed_s=time.perf_counter() - start)
        if not healthy(device) or fault == f"poison:{task['id']}":  # the parent starts a fresh worker
            print(
                "CUDA context unusable after this task; exiting for a fresh worker",
                file=sys.stderr,
                flush=True,
            )
            os._exit(POISONED)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
