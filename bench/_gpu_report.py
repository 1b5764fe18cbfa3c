"""What the GPU suite derives from its measurements, and its two reports (results.json, results.md).

Pure functions of the suite's state (no GPU, no torch calls), so they are unit-tested on a CPU and the
reports can be rebuilt from a results.json: ``python3 bench/_gpu_report.py OUT/results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

DATASHEET_BANDWIDTH = 4.8e12  # H200 HBM3e, bytes/s, from NVIDIA's datasheet
CASCADE_SECONDS, CASCADE_SAMPLES, CASCADE_BATCH = 60.0, 3, 3
NAMES = {"upsampler_level_0": "upsampler (level 0 size)", "1b_lyrics": "1b_lyrics top", "5b": "5b top"}


@dataclasses.dataclass
class State:
    """Everything the reports are made from (results.json holds it, plus what is derived)."""

    meta: dict
    sections: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)
    pytest: dict = dataclasses.field(default_factory=dict)
    rows: list = dataclasses.field(default_factory=list)  # one per measurement, as the worker reported it
    tasks: dict = dataclasses.field(default_factory=dict)  # task id -> status, error


# -- speed rows -----------------------------------------------------------------------------------------------


def _ok(row: dict) -> bool:
    return row.get("status") == "ok" and bool(row.get("per_step_s"))


def copy_bandwidth(state) -> float | None:
    copy = state.env.get("measured", {}).get("copy")
    return copy.get("bandwidth_best") if copy else None


def speed_rows(state) -> list[dict]:
    """Every ours/reference row, with bandwidth fractions, and the reference scaled to full depth if built
    shallower (time per token proportional to depth)."""
    bandwidth = copy_bandwidth(state)
    ours_depth = {r["preset"]: r["depth"] for r in state.rows if r.get("kind") == "ours" and r.get("depth")}
    rows = []
    for row in state.rows:
        if row.get("kind") not in ("ours", "reference"):
            continue
        row = dict(row)
        if _ok(row) and row["kind"] == "reference" and row["preset"] in ours_depth:
            full = ours_depth[row["preset"]]
            if row["depth"] != full:  # built with fewer layers: scale by depth
                row["per_step_s"] *= full / row["depth"]
                row["scaled_from_depth"], row["depth"] = row["depth"], full
                row["steps_per_s"] = 1.0 / row["per_step_s"]
                row["tokens_per_s"] = row["steps_per_s"] * row["batch"]
        if _ok(row) and row.get("bytes_per_step"):
            rate = row["bytes_per_step"] * row["steps_per_s"]
            row["bandwidth"] = rate
            row["fraction_datasheet"] = rate / DATASHEET_BANDWIDTH
            if bandwidth:
                row["fraction_copy"] = rate / bandwidth
        rows.append(row)
    return rows


def best(rows: list[dict], kind: str, preset: str, batch: int) -> dict | None:
    """The fastest working row of one side, model and batch (any decode mode)."""
    found = [
        r for r in rows if r["kind"] == kind and r["preset"] == preset and r["batch"] == batch and _ok(r)
    ]
    return max(found, key=lambda r: r["steps_per_s"], default=None)


def batches(rows: list[dict], preset: str) -> list[int]:
    return sorted({r["batch"] for r in rows if r["kind"] == "ours" and r["preset"] == preset and _ok(r)})


# -- the cascade ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LevelRate:
    """What one level costs at the cascade's batch: seconds per decode step, per window, per known code."""

    per_step_s: float
    prime_codes_per_s: float | None  # None: priming not measured (the estimate is then a lower bound)
    window_fixed_s: float
    setup_s: float  # once per level: the decoder's compile and capture
    source: str


def level_rates(state, rows: list[dict]) -> dict[str, LevelRate]:
    """Per model, the fastest decode step at the cascade's batch and the priming rate.

    Candidates: the batch-3 measurement of the cascade section, and each mode's rows interpolated in batch
    (a mode measured at batch 1 alone would understate batch 3: used only if nothing else is there).
    """
    rates = {}
    for preset in ("1b_lyrics", "upsampler_level_0"):
        cascade = [
            r for r in state.rows if r.get("kind") == "cascade" and r.get("preset") == preset and _ok(r)
        ]
        cascade = cascade[-1] if cascade else None
        candidates = []  # (optimistic, per step, setup, source)
        if cascade:
            candidates.append((False, cascade["per_step_s"], cascade.get("capture_s", 0.0),
                               f"{cascade['mode']} measured at batch {cascade['batch']}"))  # fmt: skip
        for mode in sorted(
            {r["mode"] for r in rows if r["kind"] == "ours" and r["preset"] == preset and _ok(r)}
        ):
            used = [
                r
                for r in rows
                if r["kind"] == "ours" and r["preset"] == preset and r["mode"] == mode and _ok(r)
            ]
            value, how = interpolate([(r["batch"], r["per_step_s"]) for r in used], CASCADE_BATCH)
            optimistic = max(r["batch"] for r in used) < CASCADE_BATCH
            candidates.append(
                (optimistic, value, max(r.get("capture_s", 0.0) for r in used), f"{mode} {how}")
            )
        if not candidates:
            continue
        optimistic, per_step, setup, source = min(candidates)
        if optimistic:
            source += " (optimistic: no batch >= 3 measured)"
        prime = cascade.get("prime_codes_per_s") if cascade else None
        if prime is None:
            source += "; priming not measured"
        fixed = cascade.get("window_fixed_s", 0.0) if cascade else 0.0
        rates[preset] = LevelRate(per_step, prime, fixed, setup, source)
    return rates


def interpolate(points: list[tuple[int, float]], x: int) -> tuple[float, str]:
    """Linear in batch between the nearest measured batches (or the nearest one alone), with a note."""
    points = sorted(points)
    for b, value in points:
        if b == x:
            return value, f"measured at batch {x}"
    below = [p for p in points if p[0] < x]
    above = [p for p in points if p[0] > x]
    if below and above:
        (b0, v0), (b1, v1) = below[-1], above[0]
        return v0 + (v1 - v0) * (x - b0) / (b1 - b0), f"interpolated between batch {b0} and {b1}"
    b, value = (below or above)[-1 if below else 0]
    return value, f"batch {b} (nearest measured; not interpolated)"


def cascade_estimate(rates: dict[str, LevelRate], seconds: float = CASCADE_SECONDS) -> dict:
    """Minutes for ``seconds`` of 1b_lyrics, every level, windows counted exactly with ``plan_level``.

    Top level: n_ctx 6144, advance 768 (hop fraction 0.125); levels 1 and 0: the upsampler layout (n_ctx 8192,
    advance 4096), both timed with the level-0 measurement (same size). A window costs its fixed part, its
    known codes at the priming rate, and its new codes at the decode rate (the lyric prefix of the top level
    is in the fixed part: every window primes it); each level also pays its decoder's compile and capture
    once.
    """
    from jukebox_cli.engine.models.presets import prior_config
    from jukebox_cli.engine.sampling.windows import plan_level, sample_length, window_advance

    top = prior_config("1b_lyrics")
    length = sample_length(seconds, top.sample_rate, top.hop_length)
    levels = []
    total_s, complete, lower_bound = 0.0, True, False
    for level, preset, config, fraction in ((2, "1b_lyrics", top, 0.125),
                                            (1, "upsampler_level_0", prior_config("upsampler_level_1"), 0.5),
                                            (0, "upsampler_level_0", prior_config("upsampler_level_0"), 0.5)):  # fmt: skip
        codes = length // config.hop_length
        windows = plan_level(codes, 0, config.n_ctx, window_advance(fraction, config.n_ctx))
        new = sum(w.n_new for w in windows)
        context = sum(w.n_context for w in windows)
        entry = dict(level=level, codes=codes, windows=len(windows), new_codes=new, context_codes=context,
                     n_ctx=config.n_ctx, advance=window_advance(fraction, config.n_ctx), timed_with=preset)  # fmt: skip
        rate = rates.get(preset)
        if rate is None:
            complete = False
        else:
            decode = new * rate.per_step_s
            prime = context / rate.prime_codes_per_s if rate.prime_codes_per_s else 0.0
            fixed = len(windows) * rate.window_fixed_s + rate.setup_s
            lower_bound |= rate.prime_codes_per_s is None
            entry.update(decode_s=decode, prime_s=prime, fixed_s=fixed, seconds=decode + prime + fixed,
                         source=rate.source)  # fmt: skip
            total_s += entry["seconds"]
        levels.append(entry)
    return dict(seconds_of_audio=seconds, samples=CASCADE_SAMPLES, sample_length=length, levels=levels,
                minutes=total_s / 60 if complete else None, lower_bound=lower_bound)  # fmt: skip


# -- targets ------------------------------------------------------------------------------------------------------


def targets(state, rows: list[dict], cascade: dict) -> list[dict]:
    out = []

    def add(name: str, value: float | None, limit: float, text: str, higher_is_better: bool = True) -> None:
        if value is None:
            status = "not measured"
        else:
            status = "met" if (value >= limit if higher_is_better else value <= limit) else "not met"
        out.append(dict(target=name, status=status, value=value, detail=text))

    big = state.meta.get("big_batch", 16)
    for preset in ("upsampler_level_0", "1b_lyrics"):
        ours, ref = best(rows, "ours", preset, 1), best(rows, "reference", preset, 1)
        ratio = ours["steps_per_s"] / ref["steps_per_s"] if ours and ref else None
        text = (f"{ours['tokens_per_s']:.1f} tok/s ({ours['mode']}) vs {ref['tokens_per_s']:.1f} tok/s"
                + (f" (reference scaled from depth {ref['scaled_from_depth']})" if ref.get("scaled_from_depth") else "")
                if ratio else "needs both sides at batch 1")  # fmt: skip
        add(f"{NAMES[preset]}: ours/reference at batch 1 >= 20x", ratio, 20.0, text)
    row = best(rows, "ours", "5b", 1)
    fraction = row.get("fraction_copy") if row else None
    text = (f"{row['bandwidth'] / 1e12:.2f} TB/s ({row['mode']}, {row['bytes_per_step'] / 1e9:.2f} GB per step) = "
            f"{100 * fraction:.0f}% of the measured copy bandwidth, {100 * row['fraction_datasheet']:.0f}% of 4.8 TB/s"
            if fraction else "needs the 5b batch-1 row and the copy bandwidth")  # fmt: skip
    add("5b top prior: >= 50% of HBM bandwidth (batch 1, vs measured copy)", fraction, 0.5, text)
    for preset in NAMES:
        one, many = best(rows, "ours", preset, 1), best(rows, "ours", preset, big)
        cost = many["per_step_s"] / one["per_step_s"] if one and many and big > 1 else None
        text = (f"{1e3 * one['per_step_s']:.2f} ms/step ({one['mode']}) at 1, {1e3 * many['per_step_s']:.2f} "
                f"({many['mode']}) at {big}" if cost else f"needs batch 1 and {big}")  # fmt: skip
        add(
            f"{NAMES[preset]}: {big} samples cost <= 1.5x the time of 1",
            cost,
            1.5,
            text,
            higher_is_better=False,
        )
    minutes = cascade.get("minutes")
    text = "needs the 1b_lyrics and upsampler rates"
    if minutes is not None:
        text = f"{minutes:.1f} min" + (
            " (lower bound: priming not measured)" if cascade["lower_bound"] else ""
        )
    add(
        "full cascade, 60 s x 3 samples of 1b_lyrics, <= 10 minutes",
        minutes,
        10.0,
        text,
        higher_is_better=False,
    )
    return out


def derive(state) -> dict:
    rows = speed_rows(state)
    try:
        cascade = cascade_estimate(level_rates(state, rows))
    except Exception as err:  # the reports must still be written
        cascade = dict(error=repr(err), levels=[], minutes=None, lower_bound=False)
    return dict(speed=rows, cascade=cascade, targets=targets(state, rows, cascade))


# -- writing ----------------------------------------------------------------------------------------------------


def _f(value, spec: str = ".1f", scale: float = 1.0) -> str:
    return "" if value is None else format(value * scale, spec)


MODE_ORDER = ("eager", "static", "static-graph", "graph", "compiled", "fp16", "fp32")


def _row_order(row: dict) -> tuple:
    preset = list(NAMES).index(row["preset"]) if row["preset"] in NAMES else len(NAMES)
    mode = MODE_ORDER.index(row.get("mode")) if row.get("mode") in MODE_ORDER else len(MODE_ORDER)
    return (preset, row["batch"], row["kind"] != "ours", mode)


def markdown(state, derived: dict) -> str:
    meta = state.meta
    lines = ["# GPU suite results", ""]
    if meta.get("smoke"):
        lines += ["**Smoke run: tiny models, a few tokens. The numbers check the flow, not the speed.**", ""]
    lines += [f"Started {meta.get('started')}, {meta.get('elapsed_s')} s of a {meta.get('budget_s'):.0f} s budget"
              f"{', finished' if meta.get('finished') else ', still running or cut short'}; device {meta.get('device')}; "
              f"code {meta.get('code')}." + (f" Interrupted by {meta['interrupted']}." if meta.get("interrupted") else ""),
              ""]  # fmt: skip
    lines += ["## Targets", "", "| target | status | measured |", "|---|---|---|"]
    lines += [f"| {t['target']} | **{t['status']}** | {t['detail']} |" for t in derived["targets"]]
    env = state.env
    measured = env.get("measured", {})
    gpu = measured.get("env", {})
    copy, matmul = measured.get("copy"), measured.get("matmul")
    lines += ["", "## Environment", ""]
    lines.append(f"- GPU: {gpu.get('gpu', '?')}, {_f(gpu.get('memory_gib'))} GiB, {gpu.get('sms', '?')} SMs, "
                 f"capability {gpu.get('capability', '?')}; nvidia-smi: {env.get('nvidia_smi', '?')}")  # fmt: skip
    lines.append(f"- torch {gpu.get('torch', env.get('torch', '?'))} (CUDA {gpu.get('cuda', env.get('torch_cuda'))}, "
                 f"cuDNN {gpu.get('cudnn')}), Python {env.get('python')}")  # fmt: skip
    if copy:
        lines.append(f"- device-to-device copy: {copy['bandwidth_best'] / 1e12:.2f} TB/s best, "
                     f"{copy['bandwidth_median'] / 1e12:.2f} median ({copy['bytes_moved'] / 1e9:.1f} GB read + "
                     f"written per copy); datasheet {DATASHEET_BANDWIDTH / 1e12:.1f} TB/s")  # fmt: skip
    if matmul:
        lines.append(f"- bf16 matmul {matmul['n']}^3: {matmul['tflops']:.0f} TFLOP/s")
    lines += ["", "## Tests on the GPU (`pytest -m gpu`)", ""]
    for name, py in state.pytest.items():
        counts = ", ".join(f"{v} {k}" for k, v in py.get("summary", {}).items()) or "no summary line"
        lines.append(f"- {name} (`{' '.join(py.get('command', '').split()[4:])}`): exit code {py.get('exit_code')}"
                     f"{' (timed out)' if py.get('timed_out') else ''}, {py.get('elapsed_s')} s: {counts}. "
                     f"Log: {py.get('log')}.")  # fmt: skip
        if py.get("exit_code") not in (0, None) or py.get("timed_out"):
            lines += ["", "```", py.get("tail", "")[-1500:].strip(), "```", ""]
    if not state.pytest:
        lines.append("not run")
    lines += ["", "## Decode speed", "",
              "tok/s counts every sample of the batch; ms/step is one token for the whole batch, taken as a difference "
              "of two windows (fixed costs cancel). `first call` is the first window's time (capture/compile "
              "included), `capture` its excess over a warm window. Bytes per step: weights once plus the keys and "
              "values the step's attention must read (the minimum); `% copy` is against the measured copy bandwidth.",
              "",
              "| model | batch | side | mode | status | tok/s | ms/step | first call s | capture s | fixed s | GB/step "
              "| % copy | % 4.8 TB/s | ours/ref |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = derived["speed"]
    for r in sorted(rows, key=_row_order):
        ratio = ""
        if r["kind"] == "ours" and _ok(r):
            ref = best(rows, "reference", r["preset"], r["batch"])
            ratio = f"{r['steps_per_s'] / ref['steps_per_s']:.1f}x" if ref else ""
        side = "ours" if r["kind"] == "ours" else "jukebox-infer"
        if r.get("scaled_from_depth"):
            side += f" (built with depth {r['scaled_from_depth']}, time scaled to {r['depth']})"
        status = r.get("status", "")
        if r.get("noisy"):
            status += " (noisy: the longer window was not slower; ms/step is an upper bound)"
        if status != "ok" and not r.get("noisy"):
            status += ": " + str(r.get("reason") or r.get("error") or "")[:160].replace("|", "/").replace(
                "\n", " "
            )
        lines.append(
            f"| {NAMES.get(r['preset'], r['preset'])} | {r['batch']} | {side} | {r.get('mode', '')} | {status} | "
            f"{_f(r.get('tokens_per_s'))} | {_f(r.get('per_step_s'), '.2f', 1e3)} | {_f(r.get('first_call_s'), '.2f')} | "
            f"{_f(r.get('capture_s'), '.2f')} | {_f(r.get('fixed_s'), '.2f')} | {_f(r.get('bytes_per_step'), '.2f', 1e-9)} | "
            f"{_f(r.get('fraction_copy'), '.0f', 100)} | {_f(r.get('fraction_datasheet'), '.0f', 100)} | {ratio} |"
        )  # fmt: skip
    cascade_rows = [r for r in state.rows if r.get("kind") == "cascade"]
    if cascade_rows:
        lines += ["", "## Cascade rates (batch 3)", "",
                  "Decode timed after the same short context as above; priming by difference of a window with the "
                  "short context and one with the context of the cascade's later windows.", "",
                  "| model | mode | status | ms/step | priming codes/s | fixed s per window | priming timed over |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in cascade_rows:
            lines.append(f"| {NAMES.get(r['preset'], r['preset'])} | {r.get('mode', '')} | {r.get('status')}"
                         f"{': ' + str(r.get('error'))[:200] if r.get('error') else ''} | "
                         f"{_f(r.get('per_step_s'), '.2f', 1e3)} | {_f(r.get('prime_codes_per_s'), '.0f')} | "
                         f"{_f(r.get('window_fixed_s'), '.3f')} | "
                         f"{r.get('k_small', '')} to {r.get('k_big', '')} known codes"
                         f"{' (noisy: lower bound)' if r.get('priming_noisy') else ''}"
                         f"{'; priming failed: ' + str(r['priming_error'])[:150] if r.get('priming_error') else ''} |")  # fmt: skip
    c = derived["cascade"]
    lines += ["", f"## Full cascade estimate: {c.get('seconds_of_audio', CASCADE_SECONDS):.0f} s x "
              f"{CASCADE_SAMPLES} samples of 1b_lyrics in one batch", ""]  # fmt: skip
    if c.get("error"):
        lines.append(f"error: {c['error']}")
    else:
        lines += ["`fixed` = per-window fixed cost x windows + the level's one-off compile/capture.", "",
                  "| level | codes | windows | new codes | known codes primed | decode s | priming s | fixed s | "
                  "minutes | rates from |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for e in c["levels"]:
            lines.append(f"| {e['level']} (n_ctx {e['n_ctx']}, advance {e['advance']}) | {e['codes']} | {e['windows']} | "
                         f"{e['new_codes']} | {e['context_codes']} | {_f(e.get('decode_s'))} | {_f(e.get('prime_s'))} | "
                         f"{_f(e.get('fixed_s'))} | {_f(e.get('seconds'), '.2f', 1 / 60)} | "
                         f"{e.get('source', 'not measured')} ({e['timed_with']}) |")  # fmt: skip
        total = c.get("minutes")
        lines += ["", f"Total: **{_f(total, '.1f')} min**" if total is not None else "Total: not measured",
                  "(priors only; the VQ-VAE decode of the audio is not included"
                  + ("; priming not measured, so a lower bound" if c.get("lower_bound") else "") + ")."]  # fmt: skip
    lines += ["", "## Sections", "", "| section | status | notes |", "|---|---|---|"]
    for name, sec in state.sections.items():
        notes = sec.get("error") or sec.get("reason") or ""
        lines.append(f"| {name} | {sec.get('status')} | {str(notes)[:200]} |")
    failed = {k: v for k, v in state.tasks.items() if v.get("status") not in ("ok", "running")}
    if failed:
        lines += ["", "| task | status | error |", "|---|---|---|"]
        for task_id, t in failed.items():
            text = str(t.get("error") or t.get("reason") or "")[:300].replace("|", "/").replace("\n", " ")
            lines.append(f"| {task_id} | {t['status']} | {text} |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, state, derived: dict) -> None:
    """results.json (the state and what is derived from it) and results.md, each replaced atomically."""
    data = dict(dataclasses.asdict(state), derived=derived)
    for name, text in (("results.json", json.dumps(data, indent=1, default=str)),
                       ("results.md", markdown(state, derived))):  # fmt: skip
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def load_state(path: Path) -> State:
    """A results.json back into a state (to rebuild the reports)."""
    data = json.loads(path.read_text())
    data.pop("derived", None)
    return State(**data)


if __name__ == "__main__":
    results = Path(sys.argv[1])
    state = load_state(results)
    write_reports(results.parent, state, derive(state))
    print((results.parent / "results.md").read_text())
