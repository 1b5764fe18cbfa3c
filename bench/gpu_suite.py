"""The GPU suite: one script, run once on a borrowed H200, that measures what the fast decode path is for.

    python3 bench/gpu_suite.py --out OUT/gpu                        # the device run (about 8 minutes)
    python3 bench/gpu_suite.py --smoke --device cpu --out /tmp/gpu  # the same flow at tiny sizes, here

Sections, most important and cheapest first; each one's failure is recorded and the next one runs:

1. environment: versions and nvidia-smi here (no CUDA context in this process), then, first thing in the
   measuring worker, a device-to-device copy (the practical bandwidth ceiling) and a bf16 matmul;
2. ``pytest -m gpu tests/gpu`` in a subprocess (spread over the cores with xdist), with a time cap;
3. our decode speed at the released sizes (random weights: speed does not depend on the values), the
   upsampler and the 1b_lyrics top prior at batch 1, in the modes that compile nothing: eager, static, and
   static-graph (the fixed-shape step captured as a CUDA graph without torch.compile);
4. jukebox-infer (its fp16 sampling flag) at the same sizes, batch 1;
5. batch 16; 6. cascade rates: priming and decoding at batch 3; 7. the 5b top prior;
8. ``graph`` (torch.compile, then capture: what ``auto`` picks on CUDA) for each model and batch, as long as
   the time lasts, since its compile time is the big unknown; 9. the reference at batch 16; 10. ``compiled``.

The measurements run in a worker process (``bench/_gpu_worker.py``); a crash or a hang costs one task, and a
fresh worker takes the rest. ``results.json`` and ``results.md`` are rewritten after every measurement, so a
run cut short still leaves what it measured. From the measurements it derives the fraction of memory
bandwidth reached, ours/reference ratios, the cost of 16 samples against 1, an estimate of the full
cascade (60 s x 3 samples of 1b_lyrics, windows counted with ``plan_level``) and a table of targets.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._gpu_report import DATASHEET_BANDWIDTH, State, derive, write_reports  # noqa: E402

PREFIX = "@@gpu-suite "
POISONED = 17  # the worker's exit status when its CUDA context broke (bench/_gpu_worker.py)
CAPTURE_ONLY = "static-graph"  # the worker's name for the fixed-shape step captured without torch.compile
# Where one mode is enough (batch 16, batch 3), the first of these that works.
PREFERRED = (CAPTURE_ONLY, "static", "eager")
WORKER_START_CAP = 120.0  # seconds for a worker to import torch and start its first task
MAX_WORKERS = 6  # fresh workers after crashes, hangs or a broken CUDA context, at most


@dataclass
class Task:
    id: str
    section: str
    spec: dict
    cap_s: float  # longest this task may run before its worker is stopped
    min_s: float = 5.0  # not started with less time than this left


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and logs")
    p.add_argument("--budget", type=float, default=450.0, help="wall-time budget in seconds (default 450)")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu with --smoke")
    p.add_argument(
        "--smoke", action="store_true", help="tiny models, few tokens: checks the flow (CPU is fine)"
    )
    p.add_argument("--pytest-timeout", type=float, default=150.0,
                   help="cap on the compiling tests (pytest_compile), seconds; the others have 60")  # fmt: skip
    p.add_argument("--sections", default="all", help="comma-separated subset of: " + ", ".join(SECTIONS))
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per measurement (default 3, smoke 1)"
    )
    p.add_argument("--new-tokens", type=int, default=None, help="timed new tokens per window (default 64)")
    p.add_argument("--max-task-s", type=float, default=None,
                   help="lower every task's time cap to this (to try the watchdog)")  # fmt: skip
    p.add_argument("--ref-depth", type=int, default=None,
                   help="build jukebox-infer's priors with this many layers (default: released) and scale its "
                   "time per token by depth")  # fmt: skip
    return p.parse_args(argv)


SECTIONS = ("environment", "pytest", "ours_b1", "reference_b1", "ours_b16", "cascade", "5b", "graph_b1",
            "pytest_compile", "graph", "reference_b16", "compiled")  # fmt: skip
# pytest sections: the test files, and their time cap (None: --pytest-timeout). The tests that torch.compile
# (graph mode, and the CLI, whose auto mode compiles each level's prior) run after the main measurements.
PYTEST_SECTIONS = {
    "pytest": (("tests/gpu/test_fast_decode_cuda.py",), 60.0),
    "pytest_compile": (("tests/gpu/test_cli_cuda.py", "tests/gpu/test_compiled_cuda.py"), None),
}
UPS, ONE_B, FIVE_B = "upsampler_level_0", "1b_lyrics", "5b"


def big_batch(smoke: bool) -> int:
    """The large batch the suite compares with batch 1 (the CLI's default --max-batch-size)."""
    return 2 if smoke else 16


# -- plan ---------------------------------------------------------------------------------------------------


def plan_tasks(args: argparse.Namespace) -> list[Task]:
    """The measurement tasks, in the order they run (env's copy bandwidth first).

    Modes that compile nothing come first (eager, static, and static-graph: the fixed-shape step captured as a
    CUDA graph without torch.compile), so every target is measured early; ``graph`` (torch.compile, then
    capture), whose compile time on the device is the big unknown, follows with whatever time is left.
    """
    smoke = args.smoke
    repeats = args.repeats or (1 if smoke else 3)
    n_new = args.new_tokens or (16 if smoke else 64)
    # Each mode stops repeating once its windows have taken mode_budget_s (slow eager runs, slow captures).
    timing = dict(n_known=16 if smoke else 256, n_short=2 if smoke else 8, n_new=n_new, repeats=repeats,
                  mode_budget_s=20.0)  # fmt: skip
    big = big_batch(smoke)
    tasks = [Task("env", "environment", dict(kind="env", copy_bytes=2**24 if smoke else 2 * 2**30,
                                              matmul_n=256 if smoke else 8192), cap_s=60)]  # fmt: skip

    def ours(preset, batch, modes, section, cap=90.0, min_s=10.0, first_ok=False):
        spec = dict(kind="ours", preset=preset, batch=batch, modes=modes, first_ok=first_ok, **timing)
        return Task(f"ours:{preset}:b{batch}:{'+'.join(modes)}", section, spec, cap_s=cap, min_s=min_s)

    def reference(preset, batch, section):
        spec = dict(kind="reference", preset=preset, batch=batch, **timing)
        if args.ref_depth:
            spec["depth"] = args.ref_depth
        return Task(f"reference:{preset}:b{batch}", section, spec, cap_s=90, min_s=20)

    def cascade(preset, advance_fraction):
        from bench._gpu_models import config_for

        n_ctx = config_for(preset, smoke=smoke).n_ctx
        k_big = n_ctx - int(advance_fraction * n_ctx)  # the context of every window after the first
        spec = dict(kind="cascade", preset=preset, batch=3, modes=list(PREFERRED), k_small=timing["n_known"],
                    k_big=k_big, n_short=timing["n_short"], n_new=timing["n_new"], repeats=repeats,
                    mode_budget_s=15.0)  # fmt: skip
        return Task(f"cascade:{preset}:b3", "cascade", spec, cap_s=60, min_s=15)

    cheap = ["eager", "static", CAPTURE_ONLY]
    tasks += [ours(UPS, 1, cheap, "ours_b1"), ours(ONE_B, 1, cheap, "ours_b1")]
    tasks += [reference(UPS, 1, "reference_b1"), reference(ONE_B, 1, "reference_b1")]
    tasks += [ours(p, big, list(PREFERRED), "ours_b16", first_ok=True) for p in (UPS, ONE_B)]  # fallbacks
    tasks += [cascade(UPS, 0.5), cascade(ONE_B, 0.125)]
    tasks += [
        ours(FIVE_B, 1, ["eager", CAPTURE_ONLY], "5b"),
        ours(FIVE_B, big, list(PREFERRED), "5b", first_ok=True),
    ]
    tasks += [ours(preset, 1, ["graph"], "graph_b1", cap=150, min_s=45) for preset in (UPS, ONE_B)]
    tasks += [ours(FIVE_B, 1, ["graph"], "graph", cap=150, min_s=45)]
    tasks += [ours(preset, big, ["graph"], "graph", cap=150, min_s=45) for preset in (UPS, ONE_B, FIVE_B)]
    tasks += [reference(UPS, big, "reference_b16"), reference(ONE_B, big, "reference_b16")]
    tasks += [ours(UPS, 1, ["compiled"], "compiled", cap=150, min_s=45)]  # graph's compile cache helps here
    if args.max_task_s:
        for task in tasks:
            task.cap_s = min(task.cap_s, args.max_task_s)
    chosen = set(SECTIONS if args.sections == "all" else args.sections.split(","))
    return [t for t in tasks if t.section in chosen]


# -- running ------------------------------------------------------------------------------------------------


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.time()
        self.deadline = self.start + args.budget
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = State(meta=dict(started=time.strftime("%Y-%m-%d %H:%M:%S"), budget_s=args.budget,
                                     smoke=args.smoke, device=args.device, argv=sys.argv[1:],
                                     code=code_fingerprint(), datasheet_bandwidth=DATASHEET_BANDWIDTH,
                                     ref_depth=args.ref_depth, big_batch=big_batch(args.smoke)))  # fmt: skip
        self.children: list[subprocess.Popen] = []

    def remaining(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        self.state.meta["elapsed_s"] = round(time.time() - self.start, 1)
        derived = derive(self.state)
        write_reports(self.out, self.state, derived)

    def section(self, name: str, status: str, **fields) -> None:
        entry = self.state.sections.setdefault(name, {})
        entry.update(status=status, **fields)
        self.save()

    # - environment (no CUDA context here: the measuring worker may need the whole GPU) ----------------------

    def environment(self) -> None:
        env = dict(python=sys.version.split()[0], executable=sys.executable)
        try:
            import torch

            env.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
        except Exception as err:
            env["torch_error"] = repr(err)
        query = (
            "name,memory.total,driver_version,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw"
        )
        try:
            out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)  # fmt: skip
            env["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            env["nvidia_smi"] = f"unavailable: {err}"
        self.state.env.update(env)

    # - pytest -----------------------------------------------------------------------------------------------

    def pytest(self, name: str, files: tuple[str, ...], cap_s: float) -> None:
        """``pytest -m gpu FILES -x -q`` in a subprocess (its own log), stopped after ``cap_s`` seconds."""
        cap = min(cap_s, max(self.remaining() - 30, 0))
        if cap < 10:
            self.section(name, "skipped", reason="time budget")
            return
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *files, "-x", "-q", "-p", "no:cacheprovider"]
        if not self.args.smoke and importlib.util.find_spec("xdist"):
            # torch.compile and CUDA initialisation are CPU-bound: spread the tests over the machine's cores.
            cmd += ["-n", str(min(8, os.cpu_count() or 1))]
        log = self.out / f"{name}.log"
        start = time.time()
        self.say(f"{name}: pytest {' '.join(cmd[3:])} (cap {cap:.0f} s)")
        with open(log, "w") as handle:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                    env=child_env(), process_group=0)  # fmt: skip
            self.children.append(proc)
            try:
                code = proc.wait(timeout=cap)
                timed_out = False
            except subprocess.TimeoutExpired:
                kill_group(proc)
                code, timed_out = None, True
        text = log.read_text(errors="replace")
        summary = pytest_summary(text)
        status = "timeout" if timed_out else ("ok" if code == 0 else "failed")
        self.state.pytest[name] = dict(command=" ".join(cmd[1:]), exit_code=code, timed_out=timed_out, cap_s=cap,
                                       elapsed_s=round(time.time() - start, 1), summary=summary,
                                       log=log.name, tail=text[-2500:])  # fmt: skip
        self.section(name, status, elapsed_s=self.state.pytest[name]["elapsed_s"])
        self.say(f"{name}: {status}, exit code {code}, {summary}")

    # - measurement tasks in workers ------------------------------------------------------------------------

    def run_tasks(self, tasks: list[Task]) -> None:
        pending = list(tasks)
        attempt = 0
        while pending:
            runnable = []
            for task in pending:  # drop what can no longer fit; the rest go to one worker, in order
                if self.remaining() < task.min_s + 5:
                    self.task_status(task, "skipped", reason="time budget")
                else:
                    runnable.append(task)
            if not runnable:
                return
            attempt += 1
            pending = self.run_worker(runnable, attempt)

    def task_status(self, task: Task, status: str, **fields) -> None:
        self.state.tasks[task.id] = dict(section=task.section, status=status, **fields)
        if status != "ok":
            self.say(f"{task.id}: {status} {fields.get('reason') or fields.get('error') or ''}".rstrip())
        sec = self.state.sections.setdefault(task.section, {"status": "running", "tasks": []})
        if task.id not in sec.setdefault("tasks", []):
            sec["tasks"].append(task.id)
        statuses = [self.state.tasks[t]["status"] for t in sec["tasks"] if t in self.state.tasks]
        sec["status"] = "ok" if all(s == "ok" for s in statuses) else "/".join(sorted(set(statuses)))
        self.save()

    def run_worker(self, tasks: list[Task], attempt: int) -> list[Task]:
        """Run ``tasks`` in one worker; return those left after it died or hung on one (that one excluded)."""
        spec = dict(
            device=self.args.device,
            smoke=self.args.smoke,
            tasks=[dict(id=t.id, min_s=t.min_s, **t.spec) for t in tasks],
        )
        spec_file = self.out / "tasks.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        cmd = [sys.executable, str(ROOT / "bench" / "_gpu_worker.py"), str(spec_file), "--deadline",
               f"{self.deadline - 15:.1f}"]  # fmt: skip
        log = open(self.out / "worker.log", "a")  # noqa: SIM115 (the reader thread writes to it too)
        log.write(f"\n=== worker {attempt}: {len(tasks)} task(s), {time.strftime('%H:%M:%S')}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(),
                                process_group=0)  # fmt: skip
        self.children.append(proc)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines, log), daemon=True).start()
        by_id = {t.id: t for t in tasks}
        done: set[str] = set()
        current, started = None, time.time()
        culprit = None  # the task the worker died or hung on
        try:
            while True:
                cap = by_id[current].cap_s if current else WORKER_START_CAP
                limit = min(started + cap, self.deadline - 3)
                try:
                    line = lines.get(timeout=max(0.1, min(limit - time.time(), 5.0)))
                except queue.Empty:
                    line = ""
                if line is None:  # stdout closed: the worker exited
                    code = proc.wait()
                    if code != 0 or len(done) < len(tasks):
                        culprit = current
                        why = f"worker exited with code {code}"
                        if code == POISONED:
                            why += ": its CUDA context broke after a task; a fresh worker takes the rest"
                        elif current is None:
                            why += " between tasks (at start-up if none ran)"
                        self.state.sections.setdefault("measurements", {}).update(status="worker exited",
                                                                                  error=why)  # fmt: skip
                        if current is not None:
                            self.task_status(by_id[current], "crashed", exit_code=code, error=why + "; see worker.log",
                                             stderr_tail=tail(self.out / "worker.log"))  # fmt: skip
                    break
                if line:
                    current, started = self.handle(line, by_id, done, current, started)
                    continue
                if time.time() >= limit:
                    kill_group(proc)
                    culprit = current
                    over_budget = time.time() >= self.deadline - 4
                    if current is not None:
                        reason = (
                            "time budget" if over_budget else f"over its {by_id[current].cap_s:.0f} s cap"
                        )
                        self.task_status(by_id[current], "timeout", reason=reason,
                                         stderr_tail=tail(self.out / "worker.log"))  # fmt: skip
                    else:
                        self.section(
                            "measurements", "timeout", reason="the worker did not start a task in time"
                        )
                    break
        finally:
            kill_group(proc)
            log.close()
        left = [t for t in tasks if t.id not in done and t.id != culprit]
        progressed = bool(done) or culprit is not None  # a worker that dies before any task would again
        if left and progressed and self.remaining() > 20 and attempt < MAX_WORKERS:
            return left  # a fresh worker takes the rest
        reason = "time budget" if self.remaining() <= 20 else f"the worker failed ({attempt} started)"
        for task in left:
            self.task_status(task, "skipped", reason=reason)
        return []

    def handle(self, line: str, by_id: dict, done: set, current, started):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return current, started
        task_id = event.get("task")
        kind = event.get("event")
        if task_id not in by_id:
            return current, started
        if kind == "start":
            self.state.tasks[task_id] = dict(section=by_id[task_id].section, status="running")
            self.save()
            return task_id, time.time()
        if kind == "row":
            row = {k: v for k, v in event.items() if k != "event"}
            self.say(describe_row(row))
            if row.get("kind") in ("env", "copy", "matmul"):
                self.state.env.setdefault("measured", {})[row["kind"]] = row
            else:
                self.state.rows.append(row)
            self.save()
            return current, started
        if kind == "done":
            done.add(task_id)
            fields = {k: v for k, v in event.items() if k not in ("event", "task", "status")}
            self.task_status(by_id[task_id], event.get("status", "ok"), **fields)
            return None, time.time()
        return current, started

    def stop_children(self) -> None:
        for proc in self.children:
            kill_group(proc)

    def run(self) -> int:
        chosen = set(SECTIONS if self.args.sections == "all" else self.args.sections.split(","))
        tasks = plan_tasks(self.args)
        self.save()
        pending: list[Task] = []  # measurement tasks run in workers, between the pytest sections
        for name in SECTIONS:
            if name not in chosen:
                continue
            try:
                if name == "environment":
                    self.environment()
                    self.section("environment", "ok")
                if name in PYTEST_SECTIONS:
                    # No worker measures while pytest runs; the copy-bandwidth task alone waits for the next one.
                    if any(t.spec["kind"] != "env" for t in pending):
                        self.run_tasks(pending)
                        pending = []
                    files, cap = PYTEST_SECTIONS[name]
                    self.pytest(name, files, cap or self.args.pytest_timeout)
            except Exception as err:
                self.section(name, "error", error=repr(err))
            pending += [t for t in tasks if t.section == name]
        try:
            self.run_tasks(pending)
        except Exception as err:
            self.section("measurements", "error", error=repr(err))
        self.state.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        for path in self.out.glob("*.log"):
            trim(path)
        self.save()
        print((self.out / "results.md").read_text())
        print(summary(self.state), flush=True)  # last, so that the end of the output holds it
        return 0

    def say(self, text: str) -> None:
        """One progress line on stdout (the device tool returns the end of it even when the run is cut)."""
        print(f"[{time.time() - self.start:6.1f} s] {text}", flush=True)


def describe_row(row: dict) -> str:
    """One line for a measurement, for the progress output."""
    what = " ".join(str(row.get(k, "")) for k in ("kind", "preset", "mode") if row.get(k))
    if row.get("batch"):
        what += f" b{row['batch']}"
    if row.get("kind") == "copy":
        return f"copy bandwidth {row['bandwidth_best'] / 1e12:.2f} TB/s"
    if row.get("kind") == "matmul":
        return f"bf16 matmul {row['tflops']:.0f} TFLOP/s"
    if row.get("kind") == "env":
        return f"device {row.get('gpu', row.get('device'))}, torch {row.get('torch')}"
    if row.get("status") != "ok":
        return f"{what}: {row.get('status')} {str(row.get('reason') or row.get('error') or '')[:200]}"
    text = f"{what}: {1e3 * row['per_step_s']:.2f} ms/step"
    if row.get("tokens_per_s"):
        text += f", {row['tokens_per_s']:.1f} tok/s"
    text += f", first call {row.get('first_call_s', 0):.1f} s"
    if row.get("prime_codes_per_s"):
        text += f", priming {row['prime_codes_per_s']:.0f} codes/s"
    return text


def summary(state: State) -> str:
    """The targets and the fastest rate per model and batch, as plain text."""
    derived = derive(state)
    lines = [
        "",
        "== GPU suite summary ==",
        *(f"{t['status']:>12}  {t['target']}: {t['detail']}" for t in derived["targets"]),
    ]
    best_rows: dict[tuple, dict] = {}
    for row in derived["speed"]:
        if row.get("status") == "ok" and row.get("per_step_s"):
            key = (row["kind"], row["preset"], row["batch"])
            if key not in best_rows or row["per_step_s"] < best_rows[key]["per_step_s"]:
                best_rows[key] = row
    for (kind, preset, batch), row in sorted(best_rows.items()):
        frac = f", {100 * row['fraction_copy']:.0f}% of copy bandwidth" if row.get("fraction_copy") else ""
        lines.append(f"{kind:>12}  {preset} b{batch}: {row['tokens_per_s']:.1f} tok/s ({row['mode']}, "
                     f"{1e3 * row['per_step_s']:.2f} ms/step{frac})")  # fmt: skip
    cascade = derived["cascade"].get("minutes")
    lines.append(
        "cascade 60 s x 3 of 1b_lyrics: " + (f"{cascade:.1f} min" if cascade is not None else "not measured")
    )
    lines.append(f"elapsed {state.meta.get('elapsed_s')} s; full tables in results.md")
    return "\n".join(lines)


def trim(path: Path, keep: int = 4 * 2**20) -> None:
    """Keep the last ``keep`` bytes of a log (the device tool returns files up to 16 MiB)."""
    try:
        if path.stat().st_size > 2 * keep:
            with open(path, "rb") as handle:
                handle.seek(-keep, os.SEEK_END)
                tail_bytes = handle.read()
            path.write_bytes(b"[... trimmed ...]\n" + tail_bytes)
    except OSError:
        pass


def _pump(stream, lines: queue.Queue, log) -> None:
    """Protocol lines into the queue, everything else into the worker log; None when the stream closes."""
    for raw in stream:
        if raw.startswith(PREFIX):
            lines.put(raw[len(PREFIX) :])
        else:
            log.write(raw)
            log.flush()
    lines.put(None)


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def child_env() -> dict:
    """This process's environment with the repo root importable and output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.append(str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def pytest_summary(text: str) -> dict:
    """Counts from pytest's closing line ("3 passed, 1 skipped in 2.1s")."""
    counts = {}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", text):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return counts


def code_fingerprint() -> str:
    """A short hash of the engine's and the bench's sources (the device copy has no git history)."""
    digest = hashlib.sha256()
    for path in sorted(
        [*ROOT.glob("jukebox_cli/engine/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/gpu/*.py")]
    ):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cpu") and not args.smoke:
        print("--device cpu is only for --smoke runs", file=sys.stderr)
        return 2
    suite = Suite(args)

    def on_term(signum, frame):  # the device tool's time limit: leave results, stop the workers
        suite.stop_children()
        suite.state.meta["interrupted"] = signal.Signals(signum).name
        suite.save()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        return suite.run()
    finally:
        suite.stop_children()


if __name__ == "__main__":
    raise SystemExit(main())
