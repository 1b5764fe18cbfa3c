"""Fixed-seed runs whose codes, audio and metrics must not change when the code is reorganised.

``tests/data/golden.json`` was recorded by ``python -m tests.golden --record`` on the code as it was before the
engine was regrouped into subpackages, and recorded again, on purpose, when each sample got its own random
stream (the runs of several samples changed then; single-sample runs kept their codes, since sample 0's
stream is seeded as the first batch's generator was), when an audio prompt became the end of the song, and
when reconstruct's metrics began to be summed in float64 while streaming (last digits only; its audio did not
change), when the bundled demo model was retrained (its two cases only), and when the demo's top prior was trained
further on more songs (`demo-generate` only); ``tests/integration/test_golden.py`` repeats every case
through the CLI and compares. Codes are compared exactly (sha256 of the int64 tensors). Audio is compared by the sha256 of its
16-bit samples on a machine with the recording's CPU features and torch version (where float kernels give
the same bits); elsewhere by summary numbers within a tolerance, since another instruction set may round
the last bit of a float differently.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "data" / "golden.json"
ARPEGGIO = ROOT / "examples" / "arpeggio.flac"

# name -> CLI argument lists run in order inside one folder ("{dir}" is replaced by it).
CASES: dict[str, list[list[str]]] = {
    "tiny-random-generate": [
        ["generate", "--model", "tiny-random", "--device", "cpu", "--quiet", "--genre", "rock",
         "--duration", "1", "--samples", "2", "--seed", "3", "-o", "{dir}/run"],
    ],
    "tiny-random-lyrics-continue-upsample": [
        ["generate", "--model", "tiny-random", "--device", "cpu", "--quiet", "--levels", "2",
         "--lyrics", "la la la, the sun", "--duration", "1", "--seed", "5", "-o", "{dir}/top"],
        ["continue", "{dir}/top", "--device", "cpu", "--quiet", "--levels", "2", "--duration", "1.5",
         "-o", "{dir}/longer"],
        ["upsample", "{dir}/longer", "--device", "cpu", "--quiet", "--seed", "1", "-o", "{dir}/run"],
    ],
    "tiny-random-continue-audio": [
        ["continue", str(ARPEGGIO), "--model", "tiny-random", "--device", "cpu", "--quiet",
         "--prompt-seconds", "0.5", "--duration", "1.2", "--temperature", "0.9,0.95,0.98", "--top-k", "20",
         "-o", "{dir}/run"],
    ],
    "demo-generate": [
        ["generate", "--model", "demo", "--device", "cpu", "--quiet", "--genre", "chiptune",
         "--duration", "1.5", "--total-duration", "4", "--samples", "2", "--seed", "7", "-o", "{dir}/run"],
    ],
    "demo-reconstruct": [
        ["reconstruct", str(ARPEGGIO), "--model", "demo", "--device", "cpu", "--quiet", "-o", "{dir}/run"],
    ],
}  # fmt: skip


def fingerprint() -> str:
    """What decides whether float kernels give the same bits: torch version, CPU and its features."""
    import torch

    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    text = f"{torch.__version__}|{platform.machine()}|{torch.backends.cpu.get_cpu_capability()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _audio_record(path: Path) -> dict:
    pcm, rate = sf.read(path, dtype="int16", always_2d=True)
    x = pcm.astype(np.float64) / 32768.0
    return {
        "sha256": _sha(np.ascontiguousarray(pcm).tobytes()),
        "rate": rate,
        "shape": list(pcm.shape),
        "rms": float(np.sqrt(np.mean(x**2))),
        "mean_abs": float(np.mean(np.abs(x))),
        "peak": float(np.max(np.abs(x))),
    }


def measure(folder: Path) -> dict:
    """Hashes of every codes file and WAV under ``folder``, alignments, and the reconstruct metrics if any."""
    from safetensors.torch import load_file

    run = folder
    out: dict = {"codes": {}, "audio": {}, "metrics": None, "alignments": {}}
    for path in sorted(run.rglob("codes.safetensors")):
        codes = load_file(path)["codes"]
        out["codes"][str(path.relative_to(run))] = {"sha256": _sha(codes.numpy().tobytes()),
                                                    "shape": list(codes.shape)}  # fmt: skip
    for path in sorted(run.rglob("*.wav")):
        out["audio"][str(path.relative_to(run))] = _audio_record(path)
    for path in sorted(run.rglob("*.alignment.json")):
        data = json.loads(path.read_text())
        out["alignments"][str(path.relative_to(run))] = {
            "rows": len(data["matrix"]),
            "sum": float(np.sum(np.asarray(data["matrix"], dtype=np.float64))),
            "words": data["words"],
        }
    metrics = run / "run" / "metrics.json"
    if metrics.is_file():
        levels = json.loads(metrics.read_text())["levels"]
        out["metrics"] = {str(m["level"]): {k: v for k, v in m.items() if k != "level"} for m in levels}
    return out


def run_case(name: str, folder: Path, cli: Callable[[list[str]], int]) -> dict:
    """Run one case's commands through ``cli`` (returns an exit code) and measure the result."""
    for args in CASES[name]:
        code = cli([a.replace("{dir}", str(folder)) for a in args])
        if code != 0:
            raise AssertionError(f"{name}: `jukebox {' '.join(args)}` exited {code}")
    return measure(folder)


def _main_cli(args: list[str]) -> int:
    from jukebox_cli.cli.app import main

    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help=f"write {GOLDEN.name}")
    args = parser.parse_args(argv)
    results = {}
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = run_case(name, Path(tmp), _main_cli)
        print(
            f"{name}: {len(results[name]['codes'])} codes, {len(results[name]['audio'])} audio",
            file=sys.stderr,
        )
    record = {"fingerprint": fingerprint(), "cases": results}
    if args.record:
        GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}", file=sys.stderr)
    else:
        print(json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
