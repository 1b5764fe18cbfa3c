"""Atomic file writes: a crash or an error never leaves a half-written output or destroys an old one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from jukebox_cli.engine.errors import OutputDiskFull, OutputExistsError, OutputWriteError


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    Args:
        path: the final file; its folder is created if needed.
        write: writes the complete content to the path it is given.
        overwrite: replace an existing file (otherwise refuse).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputDiskFull: the disk filled up (``path`` keeps its old content).
        OutputWriteError: the folder cannot be made or written (read-only, permission denied, ...).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists.")
    # A random name rather than mkstemp: mkstemp's 0600 mode would survive the rename.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Created here first, so it gets the mode any new file gets (0666 less the umask), which is
            # then restored: some writers (safetensors' save_file) replace the file with a 0600 one.
            tmp.touch(exist_ok=False)
            mode = tmp.stat().st_mode & 0o777
            write(tmp)
            if tmp.stat().st_mode & 0o777 != mode:
                os.chmod(tmp, mode)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):  # on a read-only disk even a missing file may not be unlinked
                tmp.unlink(missing_ok=True)
    except OutputWriteError:
        raise
    except OSError as err:
        raise output_error(path, err, tmp) from err
    return path


def output_error(path: Path, err: OSError, tmp: Path | None = None) -> OutputWriteError:
    """The typed error for an OSError met while writing ``path`` (disk full, read-only, missing folder, ...).

    The temporary file's name is replaced by ``path``'s: it is gone by now and means nothing to a user.
    """
    reason = err.strerror or str(err)
    where = err.filename if err.filename not in (None, str(tmp), str(path)) else None
    detail = f"{where}: {reason}" if where else reason
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputDiskFull(f"Cannot write {path}: the disk is full ({detail}).")
    # mkdir answers "File exists" (or "Not a directory") when a folder on the way is a file; name that file.
    blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return OutputWriteError(f"Cannot write {path}: {blocker} is a file, not a folder.")
    return OutputWriteError(f"Cannot write {path}: {detail}.")


def write_json(path: str | Path, data: object, *, overwrite: bool = False) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
