"""``analyze`` over a run folder: every level's audio of every take, streamed, and one figure of them all.

Each file goes through ``analysis.analyze_file`` (blocks, so long runs need the memory of one block); the
figure is ``plots.plot_chroma_grid`` with the levels as rows, top first, and the takes as columns.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from jukebox_cli.engine.audio import plots
from jukebox_cli.engine.audio.analysis import FileAnalysis, analyze_file
from jukebox_cli.engine.audio.io import audio_info
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.progress import Advanced, Event, ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.sampling.listing import RunSummary, describe_run


@dataclass(frozen=True)
class RunAnalysis:
    """What ``analyze_run`` found: the run, and level -> take -> (file, analysis) for each audio file present."""

    run: RunSummary
    files: dict[int, dict[int, tuple[Path, FileAnalysis]]]

    def figure(self) -> Figure:
        """Levels as rows (top first), takes as columns; a level not yet written is an empty row."""
        levels = [status.level for status in self.run.levels]
        takes = list(range(self.run.samples))
        cells = {
            (r, take): self.files[level][take][1].features
            for r, level in enumerate(levels)
            for take in takes
            if take in self.files.get(level, {})
        }
        return plots.plot_chroma_grid([f"level {lv}" for lv in levels], [f"take {t}" for t in takes], cells,
                                      title=f"{Path(self.run.path).name}: chromagram per level and take")  # fmt: skip


def analyze_run(
    path: str | os.PathLike[str], sample_rate: int, *, progress: ProgressCallback = noop
) -> RunAnalysis:
    """Analyse every audio file of a run at ``sample_rate`` (see ``analysis.analyze_file``).

    ``progress`` receives one ``"analyze"`` stage for the whole run, counted in seconds of audio over all its
    files (a run of many takes and levels would otherwise show one short bar per file).

    Raises:
        ConfigError: not a run folder, or a run with no audio yet; the errors of ``io.stream_audio``.
    """
    run = describe_run(path)
    found = [
        (status.level, int(Path(name).stem.removeprefix("item_")), Path(name))
        for status in run.levels
        for name in status.audio
    ]
    if not found:
        raise ConfigError(
            f"{run.path} holds no audio yet: a level's audio is written when the level is done."
        )
    progress(StageStarted("analyze", sum(math.ceil(audio_info(f).duration) for *_, f in found), "s"))

    def advances_only(event: Event) -> None:  # each file's own stage is a part of the run's
        if isinstance(event, Advanced):
            progress(event)

    files: dict[int, dict[int, tuple[Path, FileAnalysis]]] = {}
    for level, take, name in found:
        files.setdefault(level, {})[take] = (name, analyze_file(name, sample_rate, progress=advances_only))
    progress(StageFinished("analyze"))
    return RunAnalysis(run, files)
