"""What the run folders under a folder hold: model, takes, length, how far each level got, where the audio is.

Read-only and cheap: codes files are opened for their metadata and shape only, never loaded, so a folder of
long runs lists at once. A front end renders :class:`RunSummary` (``to_dict`` for JSON); folders that cannot
be read, or that hold something else (a training run, another program's ``run.json``), come back as
:class:`Skipped` with the reason, never as an exception.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.sampling.cascade import DEFAULT_AUDIO
from jukebox_cli.engine.sampling.runs import RUN_FILE, Run, is_run_dir
from jukebox_cli.engine.sampling.windows import plan_level, window_advance

#: How deep ``find_runs`` looks below the folder it is given (runs/NAME and runs/GROUP/NAME).
DEFAULT_DEPTH = 2
# A training run's record (engine/train): a folder a user may well keep beside the sampling runs.
_TRAINING_FILE = "train.json"

FINISHED, RESUMABLE, DAMAGED = "finished", "resumable", "damaged"


@dataclass(frozen=True)
class LevelStatus:
    """One level of a run."""

    level: int
    asked: bool  # sampled by this run (False: given, e.g. the top level an upsample run starts from)
    codes: int  # codes per take saved so far
    windows_done: int
    finished: bool
    audio: list[str]  # the takes' audio files present
    windows_total: int | None = None  # the level's whole plan; None where the run lacks its model's shape


@dataclass(frozen=True)
class RunSummary:
    """A run folder as a listing shows it."""

    path: str
    model: str
    samples: int
    seconds: float | None  # None when the run has no record of its model's sample rate yet
    levels_asked: list[int]
    levels_done: list[int]
    state: str  # FINISHED, RESUMABLE or DAMAGED
    created: str
    tool_version: str
    audio: dict  # {"format", "subtype"} the audio is written as
    resume_level: int | None = None  # RESUMABLE: the level it continues ...
    resume_window: int | None = None  # ... and that level's next window, counted from 1
    problem: str | None = None  # DAMAGED: what cannot be read
    prompt: dict | None = None
    levels: list[LevelStatus] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    song_seconds: float | None = None  # the whole song's length (total_length), None as for ``seconds``

    @property
    def status(self) -> str:
        """The state in words: ``finished``, ``resumable at level 1 window 3 of 12``, ``damaged: ...``."""
        if self.state == RESUMABLE:
            where = f"resumable at level {self.resume_level}"
            if self.resume_window is None:
                return where
            total = next((s.windows_total for s in self.levels if s.level == self.resume_level), None)
            return f"{where} window {self.resume_window}" + (f" of {total}" if total else "")
        if self.state == DAMAGED:
            return f"damaged: {self.problem}"
        return self.state

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class Skipped:
    """A folder that looked like a run but could not be listed."""

    path: str
    reason: str


def describe_run(path: str | Path) -> RunSummary:
    """The summary of one run folder.

    Raises:
        ConfigError: ``path`` is not a run folder, or its ``run.json`` cannot be read.
    """
    run = Run.open(path)
    settings, state = run.settings, run.state
    try:
        asked = [int(level) for level in settings["levels"]]
        n_samples = len(settings["samples"])
        sample_length = int(settings["sample_length"])
        total_length = int(settings.get("total_length", sample_length))
        model = str(settings["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{run.path / RUN_FILE} lacks a setting a run has ({err}).") from err
    audio = state.get("audio", DEFAULT_AUDIO)
    rate = (state.get("model") or {}).get("sample_rate")
    present = sorted(
        (int(d.name.removeprefix("level_")) for d in run.path.glob("level_*") if d.name[6:].isdigit()),
        reverse=True,
    )
    levels, problem = [], None
    for level in sorted({*asked, *present}, reverse=True):
        try:
            info = run.codes_info(level)
        except ConfigError as err:
            problem = problem or str(err)
            continue
        files = [run.audio_path(level, i, audio["format"]) for i in range(n_samples)]
        n_codes, windows_done, finished = (info[1], info[2], info[3]) if info else (0, 0, False)
        levels.append(
            LevelStatus(
                level,
                level in asked,
                n_codes,
                windows_done,
                finished,
                [str(f) for f in files if f.exists()],
                windows_total=_windows_total(
                    state, settings, level, n_codes, windows_done, finished, sample_length
                ),
            )  # fmt: skip
        )
    by_level = {s.level: s for s in levels}
    done = [
        lv
        for lv in asked
        if lv in by_level and by_level[lv].finished and len(by_level[lv].audio) == n_samples
    ]
    summary = dict(
        path=str(run.path), model=model, samples=n_samples, seconds=sample_length / rate if rate else None,
        song_seconds=total_length / rate if rate else None,
        levels_asked=asked, levels_done=done, state=FINISHED, created=run.created, tool_version=run.tool_version,
        audio=audio, prompt=settings.get("prompt"), levels=levels, settings=settings,
    )  # fmt: skip
    if problem is not None:
        return RunSummary(**{**summary, "state": DAMAGED, "problem": problem})
    pending = [lv for lv in asked if lv not in done]
    if pending:  # levels run top down: the first unfinished one is where a resume starts
        status = by_level.get(pending[0])
        window = status.windows_done + 1 if status is not None and not status.finished else None
        return RunSummary(
            **{**summary, "state": RESUMABLE, "resume_level": pending[0], "resume_window": window}
        )
    return RunSummary(**summary)


def _windows_total(state, settings, level, n_codes, windows_done, finished, sample_length) -> int | None:
    """How many windows the level's whole plan has: those done plus those its saved codes still need.

    A level sampled only in part resumes with the plan of its saved codes (`windows.plan_level`), so done +
    remaining is the count an uninterrupted run shows. None for levels this run does not sample, or where
    run.json lacks the model's shape (runs of older versions).
    """
    if finished:
        return windows_done
    try:
        model = state["model"]
        prior = model["priors"][str(level)]
        total = sample_length // int(model["hop_lengths"][level])
        advance = window_advance(float(settings["hop_fraction"][str(level)]), int(prior["n_ctx"]))
        return windows_done + len(plan_level(total, min(n_codes, total), int(prior["n_ctx"]), advance))
    except (KeyError, IndexError, TypeError, ValueError, ConfigError):
        return None


def find_runs(root: str | Path, *, depth: int = DEFAULT_DEPTH) -> tuple[list[RunSummary], list[Skipped]]:
    """Every run folder in ``root`` and up to ``depth`` levels below it, oldest first; and what was skipped.

    A run's own folders are not searched (a run holds no runs). Folders without a ``run.json`` are not runs
    and are passed over in silence; ones with a ``run.json`` that cannot be read, training runs and folders
    that cannot be opened are :class:`Skipped`.

    Raises:
        ConfigError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder{'' if root.exists() else ' (it does not exist)'}.")
    runs: list[RunSummary] = []
    skipped: list[Skipped] = []
    _walk(root, depth, runs, skipped)
    runs.sort(key=lambda r: (r.created, r.path))
    return runs, skipped


def _walk(folder: Path, depth: int, runs: list[RunSummary], skipped: list[Skipped]) -> None:
    if is_run_dir(folder):
        try:
            runs.append(describe_run(folder))
        except ConfigError as err:
            skipped.append(Skipped(str(folder), str(err)))
        return
    if (folder / _TRAINING_FILE).is_file():
        skipped.append(Skipped(str(folder), "a training run (jukebox train report shows it)"))
        return
    if depth == 0:
        return
    try:
        children = sorted(
            entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")
        )
    except OSError as err:
        skipped.append(
            Skipped(str(folder), f"cannot be read: {os.strerror(err.errno) if err.errno else err}")
        )
        return
    for child in children:
        _walk(child, depth - 1, runs, skipped)
