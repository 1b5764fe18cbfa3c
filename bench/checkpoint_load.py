"""Time and measure the peak memory of converting and loading a released-size checkpoint, vs the naive way.

Writes a part (default the 1b_lyrics top prior, 942 M parameters) with seeded filler weights the way OpenAI
released it (a legacy, non-zip ``torch.save`` of ``{"model": state, "step": 0}`` with every Conv1D ``.w``
in float16 and the rest in float32), plus a zip-format copy, then runs each phase in a fresh subprocess so
that its peak RSS is its own:

- ``make``: write the two source files (setup, reported but not a result);
- ``convert-legacy`` / ``convert-zip``: ``convert_part`` from the legacy file (read whole) / the zip copy
  (memory-mapped) into a cache folder, as ``jukebox models download`` does;
- ``load-native``: ``load_native`` of the converted file, once after evicting it from the page cache and
  once warm;
- ``naive``: ``torch.load(weights_only=True)`` of the legacy file, ``build_prior(preset)`` with its random
  initialisation, ``load_state_dict``.

    python bench/checkpoint_load.py --part 1b_lyrics_top --threads 2
    python bench/checkpoint_load.py --part 1b_lyrics_top,upsampler_level_0 --threads 2

Nothing is downloaded. Big files go under ``--workdir`` (default: a fresh folder under /tmp, deleted at the
end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("make", "convert-legacy", "convert-zip", "load-native", "naive")
GIB = 1024**3
GB = 1e9
RESULT_TAG = "BENCH-RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        default="1b_lyrics_top",
        help="registry part id(s), comma-separated (priors only; default 1b_lyrics_top)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the big files go (default: /tmp/...)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the files written under --workdir")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each phase")
    parser.add_argument(
        "--dtype", default="auto", help="stored dtype of the conversion: auto (default), fp32, fp16, bf16"
    )
    parser.add_argument(
        "--no-evict",
        action="store_true",
        help="do not evict input files from the page cache before the cold phases",
    )
    parser.add_argument("--seed", type=int, default=0, help="filler-weight seed")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per phase")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in args.phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    args.parts = [p.strip() for p in args.part.split(",") if p.strip()]
    return args


# -- files ------------------------------------------------------------------------------------------------


def legacy_path(workdir: Path, part: str) -> Path:
    return workdir / f"{part}.legacy.pth.tar"


def zip_path(workdir: Path, part: str) -> Path:
    return workdir / f"{part}.zip.pth.tar"


def cache_dir(workdir: Path, part: str, source: str) -> Path:
    return workdir / f"cache-{part}-{source}"


def native_path(workdir: Path, part: str, source: str) -> Path:
    return cache_dir(workdir, part, source) / "parts" / f"{part}.safetensors"


def resident_bytes(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache (util-linux ``fincore``), None when unknown."""
    try:
        out = subprocess.run(
            ["fincore", "-b", "-n", "-o", "RES", str(path)], capture_output=True, text=True, check=True
        )
        return int(out.stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def evict(path: Path) -> bool:
    """Drop ``path``'s pages from the page cache (no root needed for clean pages); False when not possible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


# -- in the child process -----------------------------------------------------------------------------------


def _status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return out


class MemorySampler:
    """Polls /proc/self/status to split the peak into anonymous memory and mapped file pages (approximate)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            now = _status_kib()
        except OSError:
            return
        for key in self.peak:
            self.peak[key] = max(self.peak[key], now.get(key, 0))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def maxrss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def _fill(shape, dtype, pools: dict, offset: int):
    """A tensor of ``shape`` filled from a random pool (cheap; finite, not all equal, differs by offset)."""
    import torch

    out = torch.empty(shape, dtype=dtype)
    if not out.is_floating_point():
        return out.zero_()
    pool = pools[dtype] if dtype in pools else pools[torch.float32].to(dtype)
    flat, n, size = out.view(-1), out.numel(), pool.numel()
    start, i = (offset * 7919) % size, 0
    while i < n:
        k = min(size - start, n - i)
        flat[i : i + k] = pool[start : start + k]
        i, start = i + k, 0
    return out


def phase_make(args, part, workdir: Path, timings: dict) -> dict:
    import torch

    from jukebox_cli.engine.checkpoints.layouts import TIED_INPUT_KEY, TIED_OUTPUT_KEY, export_state_dict
    from jukebox_cli.engine.models.builders import build_prior

    t0 = time.perf_counter()
    skeleton = build_prior(part.preset, device="meta")
    shapes = export_state_dict(skeleton, "original")
    tied = skeleton.prior.x_out.weight is skeleton.prior.x_emb.weight
    gen = torch.Generator().manual_seed(args.seed)
    pool32 = torch.randn((1 << 22) + 17, generator=gen) * 0.02
    pools = {torch.float32: pool32, torch.float16: pool32.half()}
    state = {}
    for index, (key, like) in enumerate(shapes.items()):
        if tied and key == TIED_OUTPUT_KEY:
            continue
        # Released priors store Conv1D weights in float16; the rest stays float32.
        dtype = torch.float16 if key.endswith(".w") and like.is_floating_point() else like.dtype
        state[key] = _fill(like.shape, dtype, pools, index)
    if tied:
        state[TIED_OUTPUT_KEY] = state[TIED_INPUT_KEY]  # one storage in the file, as a tied model saves
    del skeleton, shapes
    timings["fill"] = time.perf_counter() - t0
    nbytes = sum(
        t.numel() * t.element_size() for k, t in state.items() if not (tied and k == TIED_OUTPUT_KEY)
    )
    checkpoint = {"model": state, "step": 0}

    legacy = legacy_path(workdir, part.id)
    t0 = time.perf_counter()
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    timings["save legacy"] = time.perf_counter() - t0

    zipped = zip_path(workdir, part.id)
    # Room for the zip copy and two converted files (fp32: about twice the source).
    needed = nbytes + 2 * 2 * nbytes + 1 * GIB
    free = shutil.disk_usage(workdir).free
    notes = [f"{len(state)} tensors, {nbytes / GB:.2f} GB of tensor data"]
    if free >= needed:
        t0 = time.perf_counter()
        torch.save(checkpoint, zipped, _use_new_zipfile_serialization=True)
        timings["save zip"] = time.perf_counter() - t0
    else:
        notes.append(f"zip copy skipped: {free / GB:.1f} GB free, {needed / GB:.1f} GB needed")
    sizes = {"legacy": legacy.stat().st_size}
    if zipped.exists():
        sizes["zip"] = zipped.stat().st_size
    # Check the legacy file really is the non-mmap-able format.
    try:
        torch.load(legacy, map_location="cpu", weights_only=True, mmap=True)
        notes.append("WARNING: the legacy file could be memory-mapped")
    except RuntimeError:
        pass
    return {"file_bytes": sizes["legacy"], "sizes": sizes, "notes": notes}


def phase_convert(args, part, workdir: Path, timings: dict, source: str) -> dict:
    from jukebox_cli.engine.progress import StageFinished, StageStarted
    from jukebox_cli.engine.weights.cache import ModelCache
    from jukebox_cli.engine.weights.convert import convert_part, load_source, stored_dtype

    path = legacy_path(workdir, part.id) if source == "legacy" else zip_path(workdir, part.id)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (run the make phase)")
    cache = ModelCache(cache_dir(workdir, part.id, source))
    started: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def progress(event) -> None:
        if isinstance(event, StageStarted):
            started[event.name.split()[0]] = time.perf_counter()
        elif isinstance(event, StageFinished):
            name = event.name.split()[0]
            timings[{"convert": "rename+cast+write", "hash": "sha256"}.get(name, name)] = (
                time.perf_counter() - started[name]
            )
            peaks[name] = maxrss_gib()

    t0 = time.perf_counter()
    state = load_source(path)
    timings["load_source"] = time.perf_counter() - t0
    peak_after_load = maxrss_gib()
    record = convert_part(
        cache,
        part,
        state,
        "original",
        source={"kind": "bench", "file": str(path)},
        dtype=stored_dtype(args.dtype),
        progress=progress,
    )
    left = len(state.get("model", state))
    del state
    notes = [
        f"peak after load_source {peak_after_load:.2f} GiB, after write {peaks.get('convert', 0):.2f} GiB",
        f"stored dtype {record['dtype']}; {left} source tensors left unconverted",
    ]
    return {"file_bytes": record["size"], "notes": notes}


def phase_load_native(args, part, workdir: Path, timings: dict, sampler: MemorySampler) -> dict:
    import torch

    from jukebox_cli.engine.checkpoints.native import load_native

    path = next(
        (p for p in (native_path(workdir, part.id, s) for s in ("legacy", "zip")) if p.exists()), None
    )
    if path is None:
        raise FileNotFoundError("no converted file (run convert-legacy or convert-zip)")
    t0 = time.perf_counter()
    model = load_native(path, kind="prior", device="cpu")
    seconds = time.perf_counter() - t0
    timings["load_native"] = seconds
    sampler.sample()
    at_load = {"peak_gib": maxrss_gib(), **{k: v / 2**20 for k, v in sampler.peak.items()}}
    now = _status_kib()
    # Read every weight once: a lazy (memory-mapped) load pays for its reads here.
    t0 = time.perf_counter()
    with torch.no_grad():
        total = sum(float(p.float().sum()) for p in model.parameters())
    timings["read every weight"] = time.perf_counter() - t0
    sampler.sample()
    n = sum(p.numel() for p in model.parameters())
    notes = [
        f"{n / 1e6:.0f} M params; right after load_native: RSS {now['VmRSS'] / 2**20:.2f} GiB "
        f"(anon {now['RssAnon'] / 2**20:.2f}, file {now['RssFile'] / 2**20:.2f}); sum of weights finite: "
        f"{total == total and abs(total) != float('inf')}",
    ]
    touched = {
        "phase": "  + read every weight",
        "ok": True,
        "seconds": seconds + timings["read every weight"],
        "peak_gib": maxrss_gib(),
        "peak_anon_gib": sampler.peak["RssAnon"] / 2**20,
        "peak_file_gib": sampler.peak["RssFile"] / 2**20,
        "file_bytes": path.stat().st_size,
    }
    return {
        "file_bytes": path.stat().st_size,
        "notes": notes,
        "seconds": seconds,
        "peak_gib": at_load["peak_gib"],
        "peak_anon_gib": at_load["RssAnon"],
        "peak_file_gib": at_load["RssFile"],
        "extra_rows": [touched],
    }


def phase_naive(args, part, workdir: Path, timings: dict) -> dict:
    import torch

    from jukebox_cli.engine.models.builders import build_prior

    path = legacy_path(workdir, part.id)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (run the make phase)")
    t0 = time.perf_counter()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    timings["torch.load"] = time.perf_counter() - t0
    peak_load = maxrss_gib()
    t0 = time.perf_counter()
    model = build_prior(part.preset)
    timings["build_prior (random init)"] = time.perf_counter() - t0
    peak_build = maxrss_gib()
    t0 = time.perf_counter()
    model.load_state_dict(checkpoint["model"])
    timings["load_state_dict"] = time.perf_counter() - t0
    notes = [f"peak after torch.load {peak_load:.2f} GiB, after build_prior {peak_build:.2f} GiB"]
    return {"file_bytes": path.stat().st_size, "notes": notes}


def run_child(args) -> int:
    """One phase, in this (fresh) process; prints one JSON line tagged ``RESULT_TAG``."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    baseline = maxrss_gib()
    sys.path.insert(0, str(ROOT))
    from jukebox_cli.engine.weights.registry import PARTS

    part = PARTS[args.child_part]
    workdir = args.workdir
    phase = args.child.split(" ")[0]  # "load-native (warm)" runs load-native
    timings: dict[str, float] = {}
    result: dict = {"phase": args.child, "part": part.id, "baseline_gib": baseline}
    try:
        with MemorySampler() as sampler:
            t0 = time.perf_counter()
            if phase == "make":
                extra = phase_make(args, part, workdir, timings)
            elif phase == "convert-legacy":
                extra = phase_convert(args, part, workdir, timings, "legacy")
            elif phase == "convert-zip":
                extra = phase_convert(args, part, workdir, timings, "zip")
            elif phase == "load-native":
                extra = phase_load_native(args, part, workdir, timings, sampler)
            elif phase == "naive":
                extra = phase_naive(args, part, workdir, timings)
            else:
                raise ValueError(f"unknown phase {phase}")
            seconds = time.perf_counter() - t0
            peak = maxrss_gib()
        result.update(
            ok=True,
            seconds=seconds,
            peak_gib=peak,
            peak_anon_gib=sampler.peak["RssAnon"] / 2**20,
            peak_file_gib=sampler.peak["RssFile"] / 2**20,
            timings=timings,
            process_seconds=time.perf_counter() - t_start,
        )
        result.update(extra)  # a phase may report its own seconds / peaks (load-native: before reading)
    except BaseException as err:  # MemoryError, missing files, engine errors: reported, not fatal
        result.update(
            ok=False,
            error=f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}",
            timings=timings,
        )
        result["peak_gib"] = maxrss_gib()
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# -- in the parent ----------------------------------------------------------------------------------------


def run_phase(args, part_id: str, phase: str, label: str | None = None, reads: Path | None = None) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        label or phase,
        "--child-part",
        part_id,
        "--workdir",
        str(args.workdir),
        "--threads",
        str(args.threads),
        "--dtype",
        args.dtype,
        "--seed",
        str(args.seed),
    ]
    print(f"[{part_id}] {label or phase} ...", file=sys.stderr, flush=True)
    cached = resident_bytes(reads) if reads is not None and reads.exists() else None
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"phase": label or phase, "ok": False, "error": f"timed out after {args.timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG) :])
            result["wall_with_startup"] = wall
            if cached is not None:
                size = reads.stat().st_size
                result.setdefault("notes", []).append(
                    f"{reads.name}: {cached / max(size, 1):.0%} in the page cache when the phase started"
                )
            return result
    why = (
        f"killed by signal {-proc.returncode} (9: probably the OOM killer)"
        if proc.returncode < 0
        else f"exit status {proc.returncode}, no result"
    )
    return {"phase": label or phase, "ok": False, "error": why}


def print_table(part_id: str, results: list[dict], model_gib: float) -> None:
    print()
    print(f"== {part_id} (model in memory, fp32 as built: {model_gib:.2f} GiB) ==")
    header = f"{'phase':<22} {'seconds':>8} {'peak RSS GiB':>13} {'x model':>8} {'anon/file GiB':>14} {'file GB':>8}"
    print(header)
    print("-" * len(header))
    rows = [row for r in results for row in (r, *r.get("extra_rows", []))]
    for r in rows:
        name = r["phase"] + (" (setup)" if r["phase"] == "make" else "")
        if not r.get("ok"):
            print(f"{name:<22} FAILED: {r.get('error')}")
            continue
        split = f"{r['peak_anon_gib']:.2f}/{r['peak_file_gib']:.2f}"
        print(
            f"{name:<22} {r['seconds']:>8.1f} {r['peak_gib']:>13.2f} {r['peak_gib'] / model_gib:>8.2f} "
            f"{split:>14} {r['file_bytes'] / GB:>8.2f}"
        )
    print()
    baseline = next((r["baseline_gib"] for r in results if "baseline_gib" in r), None)
    if baseline is not None:
        print(f"RSS right after `import torch`: {baseline:.2f} GiB (included in every peak).")
    print("anon/file: sampled peaks of RssAnon / RssFile (mapped file pages, reclaimable page cache).")
    for r in results:
        if not r.get("ok"):
            continue
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in r.get("timings", {}).items())
        print(f"  {r['phase']}: {steps}")
        for note in r.get("notes", []):
            print(f"      {note}")


def summary(part_id: str, results: list[dict], model_gib: float) -> str:
    by = {r["phase"]: r for r in results if r.get("ok")}

    def s(name: str) -> str:
        r = by.get(name)
        return f"{r['seconds']:.1f} s at {r['peak_gib']:.2f} GiB peak" if r else "n/a"

    def read(name: str) -> str:
        r = next(iter(by.get(name, {}).get("extra_rows", [])), None)
        if r is None:
            return ""
        return (
            f" ({r['seconds']:.1f} s and {r['peak_gib']:.2f} GiB, {r['peak_file_gib']:.2f} of it mapped file "
            "pages, once every weight has been read)"
        )

    text = (
        f"{part_id}: the model is {model_gib:.2f} GiB in memory. Converting the legacy release file took "
        f"{s('convert-legacy')}, from the zip copy {s('convert-zip')}; load_native of the converted file took "
        f"{s('load-native')}{read('load-native')} with its pages evicted from the page cache first, and "
        f"{s('load-native (warm)')}{read('load-native (warm)')} warm; the naive torch.load + build_prior + "
        f"load_state_dict took {s('naive')}."
    )
    heavy = [
        f"{r['phase']} ({r['peak_gib'] / model_gib:.1f}x: anon {r['peak_anon_gib']:.2f}, "
        f"file {r['peak_file_gib']:.2f} GiB)"
        for r in by.values()
        if r["phase"] != "make" and r["peak_gib"] >= 1.5 * model_gib
    ]
    if heavy:
        text += " Phases peaking at 1.5x the model or more: " + ", ".join(heavy) + "."
    if "naive" in by and "load-native" in by:
        n = by["naive"]
        o = next(iter(by["load-native"].get("extra_rows", [])), by["load-native"])
        if o["seconds"] > 0:
            text += (
                f" Counting the reads, load_native (cold) is {n['seconds'] / o['seconds']:.1f}x faster than the "
                f"naive load and peaks {n['peak_gib'] - o['peak_gib']:.2f} GiB lower."
            )
    return text


def model_gib_of(part_id: str) -> float:
    sys.path.insert(0, str(ROOT))
    from jukebox_cli.engine.models.builders import build_prior

    model = build_prior(part_id_preset(part_id), device="meta")
    seen, total = set(), 0
    for p in model.parameters():  # unique parameters (the tied head counts once)
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    return total / GIB


def part_id_preset(part_id: str) -> str:
    from jukebox_cli.engine.weights.registry import PARTS

    return PARTS[part_id].preset


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    sys.path.insert(0, str(ROOT))
    from jukebox_cli.engine.weights.registry import PARTS

    for part_id in args.parts:
        if part_id not in PARTS or PARTS[part_id].kind != "prior":
            names = ", ".join(p for p, v in PARTS.items() if v.kind == "prior")
            print(f"--part {part_id}: not a prior part ({names})", file=sys.stderr)
            return 2
    fresh = args.workdir is None
    if fresh:
        args.workdir = Path(tempfile.mkdtemp(prefix="jukebox-ckpt-bench-", dir="/tmp"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = args.workdir.resolve()
    print(
        f"workdir: {args.workdir} (free: {shutil.disk_usage(args.workdir).free / GB:.1f} GB)", file=sys.stderr
    )
    texts = []
    try:
        for part_id in args.parts:
            results = []
            for phase in args.phases:
                if phase == "load-native":
                    target = next(
                        (native_path(args.workdir, part_id, s) for s in ("legacy", "zip") if native_path(args.workdir, part_id, s).exists()),
                        None,
                    )  # fmt: skip
                    if target is not None and not args.no_evict:
                        evict(target)
                    results.append(run_phase(args, part_id, phase, reads=target))
                    results.append(run_phase(args, part_id, phase, "load-native (warm)", reads=target))
                    continue
                source = None
                if phase != "make":
                    source = (zip_path if phase == "convert-zip" else legacy_path)(args.workdir, part_id)
                    if source.exists() and not args.no_evict:
                        evict(source)
                results.append(run_phase(args, part_id, phase, reads=source))
            model_gib = model_gib_of(part_id)
            print_table(part_id, results, model_gib)
            text = summary(part_id, results, model_gib)
            texts.append(text)
            print()
            print(text)
            if not args.keep:
                for path in (legacy_path(args.workdir, part_id), zip_path(args.workdir, part_id)):
                    path.unlink(missing_ok=True)
                for source in ("legacy", "zip"):
                    shutil.rmtree(cache_dir(args.workdir, part_id, source), ignore_errors=True)
    finally:
        if fresh and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
        elif args.keep:
            print(f"files kept under {args.workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
