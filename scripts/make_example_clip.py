"""Synthesise examples/arpeggio.flac, the clip the README's quickstart reconstructs.

Our own composition (public domain): an I-vi-IV-V progression in C with plucked, decaying harmonic tones,
an arpeggio on top and a soft bass, 8 s at 44.1 kHz mono. Deterministic, so the file can be rebuilt.

    python scripts/make_example_clip.py [examples/arpeggio.flac]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
BPM = 120
CHORDS = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]  # C, Am, F, G (MIDI notes)


def tone(midi: int, seconds: float, amplitude: float) -> np.ndarray:
    """A plucked tone: a few harmonics with an exponential decay."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    wave = sum(np.sin(2 * np.pi * freq * h * t) / h**1.5 for h in range(1, 6))
    attack = np.minimum(1.0, t / 0.005)
    return amplitude * wave * attack * np.exp(-3.0 * t)


def render() -> np.ndarray:
    beat = 60 / BPM
    out = np.zeros(int(8.0 * SAMPLE_RATE))
    for bar, chord in enumerate(CHORDS):
        start = bar * 4 * beat
        bass = tone(chord[0] - 24, 4 * beat, 0.25)
        i = int(start * SAMPLE_RATE)
        out[i : i + len(bass)] += bass[: len(out) - i]
        for step in range(8):  # eighth-note arpeggio over two octaves
            note = chord[step % 3] + 12 * (step // 3 % 2)
            i = int((start + step * beat / 2) * SAMPLE_RATE)
            pluck = tone(note, beat, 0.18)
            out[i : i + len(pluck)] += pluck[: len(out) - i]
    return (0.8 * out / np.abs(out).max()).astype(np.float32)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/arpeggio.flac")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, render(), SAMPLE_RATE, subtype="PCM_16")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
