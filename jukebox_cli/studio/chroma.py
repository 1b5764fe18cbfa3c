"""A take's chromagram as a PNG the page shows beside its player, drawn once per audio file.

The images are a cache of the studio's, not part of the run: they go to ``<runs>/.studio/chroma/``, named
after the run, level, take and the audio file's size and modification time, so a rewritten file (a resumed
run that changed its audio format) gets a new picture and the run folder stays what the CLI writes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import soundfile

from jukebox_cli.engine.audio import plots
from jukebox_cli.engine.audio.analysis import analyze_file


def chromagram(audio: Path, cache: Path, take: int, level: int) -> Path:
    """The PNG of ``audio``'s chromagram in ``cache`` (drawn now if it is not there yet), at the file's rate."""
    stat = audio.stat()
    key = hashlib.sha1(f"{audio}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    image = cache / f"{key}.png"
    if image.is_file():
        return image
    features = analyze_file(audio, soundfile.info(str(audio)).samplerate).features
    figure = plots.plot_chroma_grid([f"take {take}"], [f"level {level}"], {(0, 0): features})
    figure.set_size_inches(6.0, 2.6)
    return plots.save_figure(figure, image, overwrite=True, dpi=80)
