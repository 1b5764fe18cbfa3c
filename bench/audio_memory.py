"""Peak memory and time of `jukebox analyze` and `jukebox reconstruct` on long audio.

Synthesises music-like WAVs (a chord, a moving melody, an envelope, a little noise; stereo 44.1 kHz
16-bit) of each duration into a temporary folder, written block by block so the benchmark itself stays
small, runs each command in its own subprocess (`/usr/bin/time`-free: the child's ru_maxrss), and prints a
table. The folder is deleted afterwards.

    python bench/audio_memory.py --minutes 1 10 60 --reconstruct-minutes 1 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def synthesise(path: Path, minutes: float, block_seconds: float = 10.0) -> None:
    """Writes ``minutes`` of stereo music-like audio, one block at a time."""
    rng = np.random.default_rng(0)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as f:
        for start in range(0, total, int(block_seconds * RATE)):
            t = np.arange(start, min(total, start + int(block_seconds * RATE))) / RATE
            chord = sum(np.sin(2 * np.pi * f0 * t) for f0 in (220.0, 277.18, 329.63)) / 3
            melody = np.sin(2 * np.pi * 440.0 * 2 ** (np.floor(t * 4) % 5 / 12) * t)
            envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2
            mono = (0.25 * chord + 0.15 * melody) * envelope + 0.01 * rng.standard_normal(t.shape)
            f.write(np.stack([mono, 0.9 * mono], axis=1).astype(np.float32))


def measure(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``python -m jukebox_cli ARGS`` in a fresh process."""
    code = (
        "import resource, subprocess, sys, time; t = time.time(); "
        "rc = subprocess.call([sys.executable, '-m', 'jukebox_cli', *sys.argv[1:]], "
        "stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t, rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    rss_kib, seconds, rc = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"jukebox {' '.join(args)} failed with exit code {rc}")
    return int(rss_kib) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--reconstruct-minutes", type=float, nargs="*", default=[1, 10])
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()
    print("| command | audio | peak RSS (MiB) | wall (s) |\n| --- | ---: | ---: | ---: |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in sorted(set(args.minutes) | set(args.reconstruct_minutes)):
            song = Path(tmp) / f"song_{minutes:g}min.wav"
            synthesise(song, minutes)
            runs = []
            if minutes in args.minutes:
                runs.append(("analyze", ["analyze", str(song), "-o", f"{tmp}/a.png", "-f", "-q"]))
            if minutes in args.reconstruct_minutes:
                rec = ["reconstruct", str(song), "-m", args.model, "-o", f"{tmp}/rec", "-f", "-q"]
                runs.append((f"reconstruct -m {args.model}", rec + ["--device", "cpu"]))
            for name, command in runs:
                rss, seconds = measure(command)
                print(f"| {name} | {minutes:g} min | {rss:.0f} | {seconds:.0f} |", flush=True)
            song.unlink()


if __name__ == "__main__":
    main()
