"""Atomic file writes: a crash or an error never leaves a half-written output or destroys an old one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from jukebox_cli.engine.errors import OutputExistsError


def atomic_write(path: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    Args:
        path: the final file; its folder is created if needed.
        write: writes the complete content to the path it is given.
        overwrite: replace an existing file (otherwise refuse).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random name rather than mkstemp: mkstemp's 0600 mode would survive the rename.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, data: object, *, overwrite: bool = False) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
