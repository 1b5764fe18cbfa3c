"""Wall time of `jukebox generate --model demo` as a user runs it (a fresh process each time).

    python bench/demo_generate.py --genre rock --duration 10 --repeats 3 --threads 2

Each run is a new `jukebox generate` process (imports and model loading included), with OMP_NUM_THREADS
set to --threads. Each level's audio file is written the moment that level is finished, so the files'
modification times split the wall time into the top level, level 1 and level 0. The target for the
quickstart is under 2 minutes on 2 CPU cores for 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def one_run(args: argparse.Namespace, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = ["jukebox", "generate", "--model", args.model, "--genre", args.genre, "--duration",
                   f"{args.duration:g}", "--seed", str(seed), "--device", "cpu", "--quiet", "-o", str(out)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        start = time.time()
        subprocess.run(command, check=True, env=env)
        total = time.time() - start
        done = {level: (out / f"level_{level}" / "item_0.wav").stat().st_mtime - start for level in (2, 1, 0)}
    return {"seed": seed, "level_2_done": done[2], "level_1_done": done[1], "level_0_done": done[0],
            "total": total}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="demo")
    parser.add_argument("--genre", default="rock")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    runs = [one_run(args, seed) for seed in range(args.repeats)]
    print(f"jukebox generate --model {args.model} --genre {args.genre} --duration {args.duration:g}, "
          f"{args.threads} threads, {args.repeats} runs (seconds since the process started)")  # fmt: skip
    print(f"{'':>14} " + " ".join(f"{'seed ' + str(r['seed']):>8}" for r in runs) + f" {'median':>8}")
    for key in ("level_2_done", "level_1_done", "level_0_done", "total"):
        values = [r[key] for r in runs]
        print(f"{key:>14} " + " ".join(f"{v:8.1f}" for v in values) + f" {statistics.median(values):8.1f}")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
