"""One job at a time on the device: a queue of tasks with a single worker, journalled in the runs folder.

A front end submits :class:`~jukebox_cli.engine.sampling.tasks.Task` values; one worker thread runs them in
order, each through ``tasks.prepare_task`` and ``GenerationJob.run``, with a
:class:`~jukebox_cli.engine.tracking.Tracker` as its progress callback, which the front end polls. Further
submissions wait and know their place.

The queue is written to ``<runs>/.studio/queue.json`` (atomically) whenever a job changes state. A queue
opened on a journal whose jobs were waiting or running (the server stopped or crashed) puts them back in
the queue in their order: a job runs into its run folder with the settings it had, so the run resumes from
its last saved window (``Run.create_or_resume``), as ``jukebox generate`` re-run after Ctrl-C does.

Only one queue may use a runs folder at a time: it holds ``<runs>/.studio`` with ``locks.hold_folder`` while
open, so a second server on the same folder is refused with ``OutputInUse``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.files import write_json
from jukebox_cli.engine.locks import hold_folder
from jukebox_cli.engine.sampling.tasks import Models, Task, prepare_task
from jukebox_cli.engine.sampling.workspace import Workspace
from jukebox_cli.engine.tracking import Snapshot, Tracker

QUEUE_FILE = "queue.json"
QUEUE_FORMAT = "jukebox-cli-studio-queue"
QUEUE_FORMAT_VERSION = 1
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: Finished jobs the journal keeps (the page shows recent history; the runs themselves hold everything).
KEEP_FINISHED = 50


@dataclass(frozen=True)
class Job:
    """A task in the queue and what became of it."""

    id: int
    task: Task
    state: str = QUEUED
    message: str = ""  # FAILED: the one-line error; DONE: warnings, if any
    submitted: str = ""
    restarts: int = 0  # how many times a server restart put it back in the queue

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "task": self.task.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        task = Task(**data["task"])
        return cls(**{**data, "task": task})


@dataclass
class _Entry:
    job: Job
    tracker: Tracker | None = None
    done: threading.Event = field(default_factory=threading.Event)


class JobQueue:
    """A single-worker queue of studio tasks over one runs folder.

    Args:
        workspace: the runs folder.
        models: the models tasks may use.
        device: where jobs sample (``auto``, ``cpu``, ``cuda``, ...).
        describe_error: turns a failed job's exception into the line the user reads (the CLI's own
            wording, given by the front end; the engine knows no exit codes).
        estimate: ask each job for its expected time per level before it runs (a short probe of each prior),
            so the ETA covers levels not yet started.

    Raises:
        OutputInUse: another server holds this runs folder.
        ConfigError: a journal that cannot be read.
    """

    def __init__(
        self,
        workspace: Workspace,
        models: Models,
        *,
        device: str = "auto",
        describe_error: Callable[[BaseException], str] = str,
        estimate: bool = True,
    ) -> None:
        self.workspace = workspace
        self.models = models
        self.device = device
        self._describe_error = describe_error
        self._estimate = estimate
        self._file = workspace.studio_dir / QUEUE_FILE
        self._lock = threading.Condition()
        self._hold = contextlib.ExitStack()
        self._hold.enter_context(hold_folder(workspace.studio_dir, "studio folder"))
        self._entries: dict[int, _Entry] = {}
        self._order: list[int] = []  # ids waiting, in order (the running one is not in it)
        self._running: int | None = None
        self._stopping = False
        self._worker: threading.Thread | None = None
        try:
            self._load()
        except BaseException:
            self._hold.close()
            raise

    # -- the journal ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self._file.is_file():
            return
        try:
            record = json.loads(self._file.read_text(encoding="utf-8"))
            if record.get("format") != QUEUE_FORMAT:
                raise ValueError(f"not a {QUEUE_FORMAT} file")
            jobs = [Job.from_dict(item) for item in record["jobs"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"Cannot read the studio's queue {self._file}: {err}. Move it away to start afresh."
            ) from err
        for job in jobs:
            if job.state in (QUEUED, RUNNING):  # stopped with the server: back in line, in their order
                job = replace(job, state=QUEUED, restarts=job.restarts + (job.state == RUNNING))
                self._order.append(job.id)
            entry = _Entry(job)
            if job.state in (DONE, FAILED):
                entry.done.set()
            self._entries[job.id] = entry
        self._save()

    def _save(self) -> None:
        finished = [i for i, e in self._entries.items() if e.job.state in (DONE, FAILED)]
        for old in finished[:-KEEP_FINISHED]:
            del self._entries[old]
        jobs = [self._entries[i].job.to_dict() for i in sorted(self._entries)]
        write_json(self._file, {"format": QUEUE_FORMAT, "version": QUEUE_FORMAT_VERSION, "jobs": jobs},
                   overwrite=True)  # fmt: skip

    def _set(self, job_id: int, **changes: Any) -> Job:
        entry = self._entries[job_id]
        entry.job = replace(entry.job, **changes)
        self._save()
        return entry.job

    # -- the front end's side ------------------------------------------------------------------------------

    def submit(self, task: Task) -> Job:
        """Check ``task`` as the CLI would (nothing is written but the journal) and queue it.

        Raises:
            ConfigError, LabelError, CheckpointError: what ``jukebox generate``/``continue``/``upsample`` would
                refuse, with its message; and a run name that a queued job or a folder already has.
        """
        prepare_task(task, self.workspace, self.models)  # the CLI's checks, before the task waits
        with self._lock:
            if task.run in self.reserved() or self.workspace.path(task.run).exists():
                raise ConfigError(f"A run named {task.run!r} exists or is queued; choose another name.")
            job = Job(
                max(self._entries, default=0) + 1,
                task,
                submitted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            self._entries[job.id] = _Entry(job)
            self._order.append(job.id)
            self._save()
            self._lock.notify_all()
            return job

    def reserved(self) -> set[str]:
        """Run names that waiting or running jobs will write."""
        with self._lock:
            return {e.job.task.run for e in self._entries.values() if e.job.state in (QUEUED, RUNNING)}

    def jobs(self) -> list[Job]:
        """Every job the journal holds, oldest first."""
        with self._lock:
            return [self._entries[i].job for i in sorted(self._entries)]

    def job(self, job_id: int) -> Job:
        """One job.

        Raises:
            ConfigError: no job with that id.
        """
        with self._lock:
            if job_id not in self._entries:
                raise ConfigError(f"There is no job {job_id!r} in the queue.")
            return self._entries[job_id].job

    def place(self, job_id: int) -> int | None:
        """0 for the running job, 1 for the next one, ...; None for a finished job."""
        with self._lock:
            if job_id == self._running:
                return 0
            return self._order.index(job_id) + 1 if job_id in self._order else None

    def progress(self, job_id: int) -> Snapshot | None:
        """The running (or last run) job's progress; None before it starts."""
        with self._lock:
            entry = self._entries.get(job_id)
            tracker = entry.tracker if entry is not None else None
        return tracker.snapshot() if tracker is not None else None

    def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Block until the job is done or failed (or ``timeout`` seconds pass); returns it as it is then."""
        self.job(job_id)
        self._entries[job_id].done.wait(timeout)
        return self.job(job_id)

    # -- the worker ----------------------------------------------------------------------------------------

    def start(self) -> JobQueue:
        """Start the worker thread (jobs put back from the journal run first)."""
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="jukebox-studio-worker", daemon=True)
                self._worker.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs and release the runs folder. A job running now is left running: the process
        ending stops it, and the journal puts it back in the queue next time (its run resumes)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._worker is not None and self._running is None:
            self._worker.join(timeout)
        self._hold.close()

    def _next(self) -> int | None:
        with self._lock:
            while not self._order and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            self._running = self._order.pop(0)
            self._set(self._running, state=RUNNING)
            return self._running

    def _work(self) -> None:
        while (job_id := self._next()) is not None:
            entry = self._entries[job_id]
            try:
                warnings = self._run(entry)
                state, message = DONE, "; ".join(warnings)
            except Exception as err:  # a failed job must not end the worker: the next one still runs
                state, message = FAILED, self._describe_error(err)
            with self._lock:
                self._running = None
                self._set(job_id, state=state, message=message)
                entry.done.set()

    def _run(self, entry: _Entry) -> list[str]:
        task = entry.job.task
        job = prepare_task(task, self.workspace, self.models)
        expected = None
        if self._estimate:
            expected = {e.level: e.seconds for e in job.estimate(self.device)}
        entry.tracker = Tracker(job.request.levels, expected=expected)
        result = job.run(device=self.device, progress=entry.tracker)
        self.models.keep(job.request.model, job.bundle)  # a released model fetched by this run stays fetched
        return [*job.warnings, *result.warnings]
