"""What the studio page does, in plain Python: queue takes, extend one, upsample the favourites, show runs.

Every run name from the page goes through the engine's ``Workspace`` (inside the runs folder or refused),
every request through the job queue (checked by the generation API as the CLI's are, then run one at a time),
and every error comes back as the exception the CLI would print; ``page.py`` shows its line. Nothing here
imports gradio, so the actions can be tested and scripted without it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.labels import search_labels
from jukebox_cli.engine.sampling.jobs import DONE, FAILED, QUEUED, RUNNING, Job, JobQueue
from jukebox_cli.engine.sampling.listing import RunSummary
from jukebox_cli.engine.sampling.runs import is_run_dir
from jukebox_cli.engine.sampling.tasks import CONTINUE, GENERATE, UPSAMPLE, Task
from jukebox_cli.engine.weights.resolve import label_tables
from jukebox_cli.studio.chroma import chromagram

#: Takes a run view shows (the page has this many player slots; the CLI's runs may have more).
MAX_TAKES = 8
#: Artists or genres offered in a dropdown at once; a search narrows the rest.
MAX_LABELS = 500


@dataclass(frozen=True)
class TakeView:
    """One take as the page shows it: the audio of its deepest finished level and that audio's chromagram."""

    take: int
    level: int
    audio: Path
    chromagram: Path
    favourite: bool
    labels: str  # "artist / genre"


@dataclass(frozen=True)
class RunView:
    """A run as the page shows it."""

    name: str
    summary: RunSummary
    takes: list[TakeView]
    favourites: list[int]

    @property
    def signature(self) -> tuple:
        """What changes the page's players when it changes (polling redraws nothing otherwise)."""
        return (self.name, self.summary.status, tuple((t.level, str(t.audio)) for t in self.takes),
                tuple(self.favourites))  # fmt: skip

    def describe(self) -> str:
        """Markdown: model, takes, length, levels and state."""
        s = self.summary
        seconds = f"{s.seconds:.1f} s" if s.seconds is not None else "? s"
        more = f" (the first {MAX_TAKES} shown)" if s.samples > MAX_TAKES else ""
        return (
            f"**{self.name}** — {s.model}, {s.samples} take(s){more} of {seconds}; levels "
            f"{', '.join(map(str, s.levels_done)) or 'none'} done of {', '.join(map(str, s.levels_asked))}; "
            f"{s.status}"
        )


class Studio:
    """The page's actions over one runs folder and its job queue."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.workspace = queue.workspace
        self.models = queue.models
        self._naming = threading.Lock()  # choosing a run's name and queueing its job are one step

    # -- models and labels ---------------------------------------------------------------------------------

    def labels(self, model: str, kind: str, search: str = "") -> list[str]:
        """Names of the model's artists or genres containing ``search`` (``jukebox labels --search``)."""
        self.models.get(model)  # only an offered model's tables: a --model value may name any folder
        _, table = label_tables(model)
        return [name for name, _ in search_labels(table, kind, search or None)][:MAX_LABELS]

    def takes_lyrics(self, model: str) -> bool:
        """Whether the model's top prior is conditioned on lyrics."""
        bundle = self.models.get(model)
        return bool(bundle.prior_configs[bundle.top_level].n_tokens)

    # -- requests ------------------------------------------------------------------------------------------

    def _submit(self, kind: str, base: str, options: dict, source: str | None = None) -> Job:
        with self._naming:
            run = self.workspace.new_name(base, self.queue.reserved())
            return self.queue.submit(Task(kind, run, options, source))

    def generate(self, model: str, artist: str, genre: str, lyrics: str, duration: float, takes: int, seed: int,
                 temperature: float) -> Job:  # fmt: skip
        """Queue top-level takes (``jukebox generate --levels TOP -n TAKES``) into a new run."""
        top = self.models.get(model).top_level
        options = {"model": model, "artist": artist or "unknown", "genre": genre or "unknown", "lyrics": lyrics or "",
                   "duration": duration, "samples": takes, "seed": seed, "temperature": temperature,
                   "levels": [top]}  # fmt: skip
        return self._submit(GENERATE, f"{model}-{genre or 'unknown'}-seed{seed}", options)

    def extend(self, run: str, take: int, duration: float, seed: int, temperature: float) -> Job:
        """Queue one take's top level, continued to ``duration`` seconds (``jukebox continue RUN --takes K``)."""
        top = self._model_of(run).top_level
        options = {"takes": [take], "duration": duration, "seed": seed, "temperature": temperature,
                   "levels": [top]}  # fmt: skip
        return self._submit(CONTINUE, f"{run}-take{take}-{duration:g}s", options, source=run)

    def upsample(self, run: str, seed: int, temperature: float) -> Job:
        """Queue the run's favourite takes for upsampling (``jukebox upsample RUN --takes F``)."""
        takes = self.workspace.favourites(run)
        if not takes:
            raise ConfigError(f"Mark the takes of {run} to upsample as favourites first.")
        options = {"takes": takes, "seed": seed, "temperature": temperature}
        return self._submit(UPSAMPLE, f"{run}-upsampled", options, source=run)

    def favourite(self, run: str, take: int, favourite: bool) -> list[int]:
        """Mark or unmark a take; the run's favourites."""
        return self.workspace.set_favourite(run, take, favourite)

    def _model_of(self, run: str):
        return self.models.get(self.workspace.describe(run).model)

    # -- what there is -------------------------------------------------------------------------------------

    def run_names(self) -> list[str]:
        """Runs in the folder, newest first, then those queued jobs will write."""
        runs, _ = self.workspace.runs()
        names = [self.workspace.name_of(r.path) for r in reversed(runs)]
        return names + sorted(self.queue.reserved() - set(names))

    def view(self, run: str) -> RunView | None:
        """The run's takes with their audio and chromagrams; None while its job has not created it."""
        if run in self.queue.reserved() and not is_run_dir(self.workspace.path(run)):
            return None
        summary = self.workspace.describe(run)
        favourites = self.workspace.favourites(run)
        takes = []
        for take in range(min(summary.samples, MAX_TAKES)):
            for status in sorted(summary.levels, key=lambda s: s.level):  # the deepest level first
                try:
                    audio = self.workspace.audio(run, status.level, take)
                except ConfigError:
                    continue
                meta = summary.settings["samples"][take]
                image = chromagram(audio, self.workspace.studio_dir / "chroma", take, status.level)
                takes.append(TakeView(take, status.level, audio, image, take in favourites,
                                      f"{meta.get('artist')} / {meta.get('genre')}"))  # fmt: skip
                break
        return RunView(run, summary, takes, favourites)

    def job_status(self, run: str) -> dict:
        """The latest job that writes ``run``: its state, place in the queue, progress and message.

        Raises:
            ConfigError: no job writes that run.
        """
        jobs = [job for job in self.queue.jobs() if job.task.run == run]
        if not jobs:
            raise ConfigError(f"No job writes a run named {run!r}.")
        job = jobs[-1]
        snapshot = self.queue.progress(job.id)
        return {"job": job.id, "kind": job.task.kind, "run": run, "state": job.state,
                "place": self.queue.place(job.id), "progress": snapshot.describe() if snapshot else "",
                "message": job.message, "restarts": job.restarts}  # fmt: skip

    def queue_markdown(self) -> str:
        """The queue as the page shows it: waiting and running jobs with their place and progress, then the
        latest finished ones."""
        jobs = self.queue.jobs()
        lines = []
        for job in [j for j in jobs if j.state in (RUNNING, QUEUED)] + [j for j in jobs if j.state in (DONE, FAILED)][-5:][::-1]:  # fmt: skip
            head = f"**#{job.id} {job.task.kind}** → `{job.task.run}`"
            if job.state == RUNNING:
                snapshot = self.queue.progress(job.id)
                detail = snapshot.describe().replace("\n", "; ") if snapshot else "starting"
                lines.append(f"- {head}: running — {detail}")
            elif job.state == QUEUED:
                lines.append(f"- {head}: waiting, place {self.queue.place(job.id)} in the queue")
            elif job.state == FAILED:
                lines.append(f"- {head}: failed — {job.message}")
            else:
                lines.append(f"- {head}: done" + (f" ({job.message})" if job.message else ""))
        return "\n".join(lines) or "No jobs yet."
