"""A studio task (generate, continue, upsample) as plain JSON options, turned into a generation-API job.

A web page queues its requests and must be able to replay them after a restart, so a task is kept as data
(its kind, the run it writes, the run it reads, its options), and :func:`prepare_task` turns that data into
the same ``prepare_*`` call the CLI makes, with the same checks and the same one-line errors. Every run it
names goes through :class:`~jukebox_cli.engine.sampling.workspace.Workspace`, so a task can neither read nor
write outside the runs folder, and models are limited to the ones the server offers (a ``--model`` value can
name any folder or URL, which a page must not be able to do).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.sampling.generation import (
    GenerationJob,
    prepare_continue,
    prepare_generate,
    prepare_upsample,
)
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.sampling.workspace import Workspace
from jukebox_cli.engine.weights.bundle import Bundle
from jukebox_cli.engine.weights.loading import load_bundle

GENERATE, CONTINUE, UPSAMPLE = "generate", "continue", "upsample"
# The options each kind accepts, with the type a JSON value must have (a page sends floats for whole numbers).
_OPTIONS: dict[str, dict[str, type]] = {
    GENERATE: {"model": str, "artist": str, "genre": str, "lyrics": str, "duration": float, "samples": int,
               "seed": int, "temperature": float, "levels": list},
    CONTINUE: {"takes": list, "duration": float, "seed": int, "temperature": float, "levels": list},
    UPSAMPLE: {"takes": list, "seed": int, "temperature": float},
}  # fmt: skip
# The CLI's name for an option, so that a type error names what a CLI user would type.
_FLAG = {"samples": "--samples", "takes": "--takes", "levels": "--levels"}


@dataclass(frozen=True)
class Task:
    """What to run: ``kind`` writes run ``run`` (a name in the runs folder), reading ``source`` (continue,
    upsample), with ``options`` (see ``_OPTIONS``)."""

    kind: str
    run: str
    options: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "run": self.run, "source": self.source, "options": dict(self.options)}


class Models:
    """The models a server offers, each loaded once and kept in memory across tasks.

    Args:
        offered: the ``--model`` values a task may name (the first is the default).
        cache_dir: the model cache.
    """

    def __init__(self, offered: Sequence[str], *, cache_dir: str | Path | None = None) -> None:
        self.offered = list(dict.fromkeys(offered))
        self._cache_dir = cache_dir
        self._loaded: dict[str, Bundle] = {}
        self._lock = threading.Lock()

    def get(self, spec: str, progress: ProgressCallback = noop) -> Bundle:
        """The loaded model (a released one not in the cache stays pending until a task runs it).

        Raises:
            ConfigError: a model this server does not offer.
            CheckpointError: it cannot be loaded.
        """
        if spec not in self.offered:
            raise ConfigError(
                f"--model {spec!r} is not offered here; choose one of {', '.join(self.offered)} "
                "(start `jukebox studio --model M` for another)."
            )
        with self._lock:
            if spec not in self._loaded:
                self._loaded[spec] = load_bundle(spec, cache_dir=self._cache_dir, download=True, defer=True,
                                                 progress=progress)  # fmt: skip
            return self._loaded[spec]

    def keep(self, spec: str, bundle: Bundle) -> None:
        """Keep ``bundle`` (a pending one once fetched by a run) for the next task."""
        with self._lock:
            self._loaded[spec] = bundle


def check_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with whole numbers as ints, checked against what ``kind`` accepts.

    Raises:
        ConfigError: another kind, an unknown option, or a value of the wrong type.
    """
    if kind not in _OPTIONS:
        raise ConfigError(f"A task is one of {', '.join(_OPTIONS)}; got {kind!r}.")
    allowed = _OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{kind} takes no option {', '.join(unknown)}.")
    checked = {}
    for key, value in options.items():
        flag = _FLAG.get(key, f"--{key}")
        if allowed[key] is int:
            value = _whole(flag, value)
        elif allowed[key] is list:
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{flag} must be a list of numbers like [0, 3]; got {value!r}.")
            value = [_whole(flag, v) for v in value]
        elif allowed[key] is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{flag} must be a number; got {value!r}.")
        elif not isinstance(value, str):
            raise ConfigError(f"{flag} must be text; got {value!r}.")
        checked[key] = value
    return checked


def _whole(flag: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{flag} must be a whole number; got {value!r}.")
    return value


def prepare_task(task: Task, workspace: Workspace, models: Models) -> GenerationJob:
    """The generation-API job for ``task``: every check of the matching CLI command, nothing written yet.

    Raises:
        ConfigError, LabelError, CheckpointError: as ``jukebox generate``/``continue``/``upsample`` would.
    """
    options = check_options(task.kind, task.options)
    output = workspace.path(task.run)
    if task.kind == GENERATE:
        model = models.get(options.pop("model", models.offered[0]))
        return prepare_generate(model, output=output, **options)
    if task.source is None:
        raise ConfigError(f"{task.kind} needs a run to start from.")
    source = workspace.run(task.source)
    model = models.get(Run.open(source).settings.get("model", ""))
    takes = options.pop("takes", None)
    if task.kind == CONTINUE:
        return prepare_continue(source, model=model, takes=takes, output=output, **options)
    return prepare_upsample(source, model=model, takes=takes, output=output, **options)
