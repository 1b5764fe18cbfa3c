"""A durable run directory for sampling: settings, codes saved after every window, audio per level.

Layout of a run directory::

    run.json                    # {format, version, tool_version, created, settings, state}, human-readable
    level_2/codes.safetensors   # [N, T] int64 codes of the level so far, metadata windows_done / finished
    level_2/item_0.wav ...      # audio of each sample, written once the level is finished
    level_2/item_0.alignment.json / .png   # lyric models: which lyrics each moment attends to
    level_1/...  level_0/...

Every file is written atomically (``files.atomic_write``), so a crash or Ctrl-C leaves the previous version
of a file intact and a run can be resumed from its last finished window. Resuming gives bit-identical codes
when the sampler draws each window from generators seeded by (seed, level, window, sample), since the plan
from the saved codes is the tail of the full plan (``windows.plan_level``).

``settings`` are everything that decides the codes (model, labels, lyrics, seed, temperatures, ...): a run is
resumed only with exactly the same settings (floats compared exactly). Anything that may change between
attempts (device, timings, the current level) belongs in ``state`` (``Run.update``).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import safetensors
import torch

from jukebox_cli import __version__
from jukebox_cli.engine.errors import ConfigError, OutputBlocked, OutputExistsError, RunNotResumable
from jukebox_cli.engine.files import atomic_write, write_json
from jukebox_cli.engine.locks import LOCK_FILE

RUN_FORMAT = "jukebox-cli-run"
RUN_FORMAT_VERSION = 1
RUN_FILE = "run.json"
CODES_FILE = "codes.safetensors"
# How many differing settings a refused resume names.
_MAX_DIFFS_SHOWN = 3


# ---- helpers -----------------------------------------------------------------------------------------------


def _to_json(value: Any, what: str) -> Any:
    """``value`` as read back from JSON (tuples become lists, keys strings); refuses NaN/inf and objects."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"The run's {what} must be plain JSON values (finite numbers, strings, lists): {e}"
        ) from e


def _same(a: Any, b: Any) -> bool:
    """Exact equality of JSON values; a bool never equals a number (True == 1 in Python), 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


_MISSING = object()


def _codes_file(codes: torch.Tensor, metadata: dict[str, str]) -> bytes:
    """``codes`` (int64) as a safetensors file whose bytes depend on the values only: safetensors' own writer
    orders the metadata differently from call to call, so that equal codes gave files of different sha256."""
    data = codes.numpy().astype("<i8").tobytes()
    header = {
        "__metadata__": dict(sorted(metadata.items())),
        "codes": {"dtype": "I64", "shape": list(codes.shape), "data_offsets": [0, len(data)]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data


def _differences(new: Any, old: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, new value, saved value) for every leaf that differs, in the new settings' key order."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = []
        for k in [*new, *(k for k in old if k not in new)]:
            child = f"{key}.{k}" if key else k
            out += _differences(new.get(k, _MISSING), old.get(k, _MISSING), child)
        return out
    if new is _MISSING or old is _MISSING or not _same(new, old):
        return [(key, new, old)]
    return []


def _show(value: Any) -> str:
    return "<missing>" if value is _MISSING else json.dumps(value)


def _is_leftover(entry: Path) -> bool:
    # A temporary file of an interrupted atomic write of run.json (files.atomic_write's naming).
    return entry.name.startswith(f".{RUN_FILE}.") and entry.name.endswith(".tmp")


# ---- the run -----------------------------------------------------------------------------------------------


def _occupied_by_a_run(path: Path) -> bool:
    """Whether ``path`` is a folder holding a run (anything but leftovers and the lock); a file, or a folder
    holding other things, is refused: no ``force`` replaces those.

    Raises:
        OutputBlocked: ``path`` is a file, or a non-empty folder that is not a run.
    """
    if path.exists() and not path.is_dir():
        raise OutputBlocked(f"{path} exists and is not a directory.")
    taken = path.is_dir() and any(not _is_leftover(e) and e.name != LOCK_FILE for e in path.iterdir())
    if taken and not is_run_dir(path):
        raise OutputBlocked(f"{path} is not empty and is not a run directory; choose another folder.")
    return taken


class Run:
    """A sampling run stored in a directory (see the module docstring for the layout).

    Use ``Run.create``, ``Run.open`` or ``Run.create_or_resume`` rather than the constructor.
    """

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self._record = record

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, settings: dict[str, Any], *, force: bool = False) -> Run:
        """Start a new run in ``path`` and write its ``run.json``.

        Args:
            path: A new or empty directory, or an existing run when ``force`` is set.
            settings: Everything that decides the codes; plain JSON values.
            force: Replace an existing run (its ``run.json`` and ``level_*`` folders are deleted; other files
                in the folder are left alone).

        Raises:
            OutputExistsError: ``path`` is a file, a non-empty directory that is not a run, or a run and
                ``force`` is not set.
            ConfigError: settings that are not plain JSON values.
        """
        path = Path(path)
        settings = _to_json(settings, "settings")
        if not isinstance(settings, dict):
            raise ConfigError(f"The run's settings must be a dict, got {type(settings).__name__}.")
        if _occupied_by_a_run(path):
            if not force:
                raise OutputExistsError(
                    f"{path} already holds a run; resume it, or force a new one to replace it."
                )
            _clear_run(path)
        record = {
            "format": RUN_FORMAT,
            "version": RUN_FORMAT_VERSION,
            "tool_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": settings,
            "state": {},
        }
        write_json(path / RUN_FILE, record, overwrite=True)
        return cls(path, record)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Open an existing run.

        Raises:
            ConfigError: ``path`` is not a run directory, its ``run.json`` is unreadable, or it was written by
                a newer jukebox-cli (a newer run format).
        """
        path = Path(path)
        run_file = path / RUN_FILE
        if not run_file.is_file():
            raise ConfigError(f"{path} is not a run directory (no {RUN_FILE}).")
        try:
            record = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"Cannot read {run_file}: {e}") from e
        if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
            raise ConfigError(f"{run_file} is not a jukebox-cli run file.")
        version = record.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{run_file} has an invalid format version {version!r}.")
        if version > RUN_FORMAT_VERSION:
            raise ConfigError(
                f"{path} was written by a newer jukebox-cli ({record.get('tool_version')}, "
                f"run format {version}); "
                f"this version reads run format {RUN_FORMAT_VERSION}. Upgrade jukebox-cli to resume it."
            )
        if not isinstance(record.get("settings"), dict):
            raise ConfigError(f"{run_file} has no settings.")
        record.setdefault("state", {})
        return cls(path, record)

    @classmethod
    def create_or_resume(
        cls,
        path: str | Path,
        settings: dict[str, Any],
        *,
        force: bool = False,
        describe: Callable[[str, Any, Any], str] | None = None,
    ) -> tuple[Run, bool]:
        """Resume the run in ``path`` if it has the same settings, otherwise start one.

        With identical settings the run is resumed even when ``force`` is set: the result equals a fresh
        run's. A run whose saved codes cannot be read is started over with ``force`` and refused without.
        ``describe(key, new, saved)`` words one differing setting for the refusal (by default
        ``key new != saved``); a front end names its own option and units there.

        Returns:
            The run, and whether it was resumed (True) or newly created (False).

        Raises:
            ConfigError: the run has different settings (the message names the first ones) or unreadable
                codes, and ``force`` is not set; or its run.json cannot be read.
            OutputExistsError: ``path`` is a non-empty directory that is not a run (even with ``force``).
        """
        path = Path(path)
        run = cls._resumable(path, settings, force=force, describe=describe)
        if run is not None:
            return run, True
        return cls.create(path, settings, force=force), False

    @classmethod
    def check_start(
        cls,
        path: str | Path,
        settings: dict[str, Any],
        *,
        force: bool = False,
        describe: Callable[[str, Any, Any], str] | None = None,
    ) -> bool:
        """What :meth:`create_or_resume` would do, without writing anything: True to resume, False to start.

        A front end calls it before slow work (loading, planning) so that a refusal comes first.

        Raises:
            As :meth:`create_or_resume`.
        """
        return cls._resumable(Path(path), settings, force=force, describe=describe) is not None

    @classmethod
    def _resumable(
        cls,
        path: Path,
        settings: dict[str, Any],
        *,
        force: bool,
        describe: Callable[[str, Any, Any], str] | None,
    ) -> Run | None:
        """The run in ``path`` when it is to be resumed, None when one is to be started (refusals raise)."""
        if not is_run_dir(path):
            _to_json(settings, "settings")
            _occupied_by_a_run(path)
            return None
        run = cls.open(path)
        diffs = _differences(_to_json(settings, "settings"), run._record["settings"])
        if not diffs:
            damage = run._damage()
            if damage is None:
                return run
            if not force:  # resuming cannot get past a file it cannot read, so say how to get out
                raise RunNotResumable(f"{damage.rstrip('.')}; re-run with --force to start the run over.")
        if force:
            return None
        if describe is not None:
            raise RunNotResumable(
                f"{path} holds a run with different settings: {_described(diffs, describe)}. "
                "Use the run's settings, another -o, or --force to start over."
            )
        more = f" (and {len(diffs) - _MAX_DIFFS_SHOWN} more)" if len(diffs) > _MAX_DIFFS_SHOWN else ""
        shown = ", ".join(f"{key} {_show(new)} != {_show(old)}" for key, new, old in diffs[:_MAX_DIFFS_SHOWN])
        raise RunNotResumable(
            f"{path}: resuming with different settings: {shown}{more} (new != saved). "
            "Use the saved settings, another folder, or force to start over."
        )

    def check_asked(self, asked: dict[str, Any], *, describe: Callable[[str, Any, Any], str]) -> None:
        """Refuse settings asked of a resume that differ from this run's (only the keys in ``asked``).

        Raises:
            RunNotResumable: one of them differs; the message names each (with ``describe``) and both values.
        """
        saved = {key: self._record["settings"].get(key, _MISSING) for key in asked}
        diffs = _differences(_to_json(asked, "settings"), saved)
        if not diffs:
            return
        raise RunNotResumable(
            f"{self.path} holds a run with different settings: {_described(diffs, describe)}. --resume keeps the "
            "run's own: leave those options out, or drop --resume and choose another -o (or --force to start over)."
        )

    @classmethod
    def would_resume(cls, path: str | Path, settings: dict[str, Any]) -> bool:
        """Whether :meth:`create_or_resume` would resume the run in ``path`` with these settings."""
        path = Path(path)
        if not is_run_dir(path):
            return False
        try:
            run = cls.open(path)
        except ConfigError:
            return False
        return not _differences(_to_json(settings, "settings"), run._record["settings"])

    # -- contents ------------------------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The settings from ``run.json`` (a copy)."""
        return copy.deepcopy(self._record["settings"])

    @property
    def state(self) -> dict[str, Any]:
        """The ``state`` section of ``run.json`` (a copy); see ``update``."""
        return copy.deepcopy(self._record["state"])

    @property
    def tool_version(self) -> str:
        """The jukebox-cli version that created the run."""
        return str(self._record.get("tool_version"))

    @property
    def created(self) -> str:
        """When the run was created (ISO 8601, UTC)."""
        return str(self._record.get("created"))

    def level_dir(self, level: int) -> Path:
        """The folder of one level's codes and audio: ``level_{level}``."""
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ConfigError(f"A level is a non-negative integer, got {level!r}.")
        return self.path / f"level_{level}"

    def audio_path(self, level: int, sample: int, ext: str = "wav") -> Path:
        """Where a sample's audio of a level goes: ``level_{level}/item_{sample}.{ext}`` (not created)."""
        return self._item_path(level, sample, ext)

    def alignment_path(self, level: int, sample: int, ext: str) -> Path:
        """Where a sample's lyric alignment goes: ``level_{level}/item_{sample}.alignment.{ext}``."""
        return self._item_path(level, sample, f"alignment.{ext.lstrip('.')}")

    def _item_path(self, level: int, sample: int, suffix: str) -> Path:
        if sample < 0:
            raise ConfigError(f"A sample index is non-negative, got {sample}.")
        return self.level_dir(level) / f"item_{sample}.{suffix.lstrip('.')}"

    def save_codes(
        self, level: int, codes: torch.Tensor, *, windows_done: int, finished: bool = False
    ) -> None:
        """Save a level's codes so far, atomically replacing the previous file.

        Args:
            level: The VQ-VAE level.
            codes: ``[N, T]`` integer codes (stored as int64 on the CPU).
            windows_done: Windows of the level's plan finished so far.
            finished: Whether the level is complete.

        Raises:
            ConfigError: codes that are not a 2-D integer tensor, or a negative ``windows_done``.
        """
        if codes.dim() != 2 or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ConfigError(
                f"Codes must be a [N, T] integer tensor, got {codes.dtype} {list(codes.shape)}."
            )
        if windows_done < 0:
            raise ConfigError(f"windows_done must be non-negative, got {windows_done}.")
        tensor = codes.detach().to(device="cpu", dtype=torch.int64).contiguous()
        metadata = {
            "format": RUN_FORMAT,
            "level": str(level),
            "windows_done": str(windows_done),
            "finished": "true" if finished else "false",
        }
        atomic_write(
            self.level_dir(level) / CODES_FILE,
            # Serialised in memory and written by Python, so that a full disk is an OSError with its errno
            # (safetensors' own writer reports it as an untyped SafetensorError).
            lambda tmp: tmp.write_bytes(_codes_file(tensor, metadata)),
            overwrite=True,
        )

    def load_codes(self, level: int) -> tuple[torch.Tensor | None, int, bool]:
        """A level's saved codes.

        Returns:
            ``(codes, windows_done, finished)``: ``[N, T]`` int64 codes, or ``(None, 0, False)`` when the
            level has none yet.

        Raises:
            ConfigError: the codes file is unreadable or lacks its metadata.
        """
        file = self.level_dir(level) / CODES_FILE
        if not file.is_file():
            return None, 0, False
        try:
            with safetensors.safe_open(str(file), framework="pt") as f:
                metadata = f.metadata() or {}
                codes = f.get_tensor("codes")
        except (OSError, safetensors.SafetensorError) as e:
            raise ConfigError(f"Cannot read the saved codes {file}: {e}") from e
        try:
            windows_done = int(metadata["windows_done"])
            finished = {"true": True, "false": False}[metadata["finished"]]
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{file} lacks its windows_done/finished metadata.") from e
        return codes, windows_done, finished

    def codes_info(self, level: int) -> tuple[int, int, int, bool] | None:
        """``(takes, codes per take, windows_done, finished)`` of a level's saved codes, without loading them
        (a listing of long runs reads only headers); None when the level has none yet.

        Raises:
            ConfigError: the codes file is unreadable or lacks its metadata.
        """
        file = self.level_dir(level) / CODES_FILE
        if not file.is_file():
            return None
        try:
            with safetensors.safe_open(str(file), framework="pt") as f:
                metadata = f.metadata() or {}
                shape = f.get_slice("codes").get_shape()
            windows_done = int(metadata["windows_done"])
            finished = {"true": True, "false": False}[metadata["finished"]]
        except (OSError, safetensors.SafetensorError) as e:
            raise ConfigError(f"Cannot read the saved codes {file}: {e}") from e
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{file} lacks its windows_done/finished metadata.") from e
        if len(shape) != 2:
            raise ConfigError(f"{file} holds codes of shape {shape}, not [takes, codes].")
        return shape[0], shape[1], windows_done, finished

    def _damage(self) -> str | None:
        """Why a saved codes file cannot be read (truncated, corrupt, no metadata), or None if all can."""
        for file in sorted(self.path.glob(f"level_*/{CODES_FILE}")):
            level = file.parent.name.removeprefix("level_")
            if not level.isdigit():
                continue
            try:
                self.load_codes(int(level))
            except ConfigError as err:
                return str(err)
        return None

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the ``state`` section of ``run.json`` and rewrite it atomically.

        Raises:
            ConfigError: values that are not plain JSON values.
        """
        fields = _to_json(fields, "state")
        self._record["state"].update(fields)
        write_json(self.path / RUN_FILE, self._record, overwrite=True)


def _described(diffs: list[tuple[str, Any, Any]], describe: Callable[[str, Any, Any], str]) -> str:
    """The first differing settings in ``describe``'s words (None for a missing value), and how many more."""
    shown = "; ".join(
        describe(key, None if new is _MISSING else new, None if old is _MISSING else old)
        for key, new, old in diffs[:_MAX_DIFFS_SHOWN]
    )
    more = f" (and {len(diffs) - _MAX_DIFFS_SHOWN} more)" if len(diffs) > _MAX_DIFFS_SHOWN else ""
    return shown + more


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run (its run.json), whatever its settings or state."""
    return (path / RUN_FILE).is_file()


def _clear_run(path: Path) -> None:
    """Delete what a run owns in ``path``: run.json, the level folders, leftover temporary files."""
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name.startswith("level_"):
            shutil.rmtree(entry)
        elif entry.name == RUN_FILE or _is_leftover(entry):
            entry.unlink()
