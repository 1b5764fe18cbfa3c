"""Silencing what C decoders print straight to the process's stderr.

libsndfile's MP3 decoder (mpg123) writes notes such as "Note: Illegal Audio-MPEG-Header ..." and "skip_junk"
lines to file descriptor 2 from C when it meets a corrupt file, around the one error we report. Python's
``sys.stderr`` cannot intercept them, so the descriptor itself is pointed at ``/dev/null`` for the length of
a libsndfile call, and put back afterwards, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

# Redirecting fd 2 is process-wide: one redirection at a time, and a nested one (same thread) passes through.
# Another thread's writes to stderr during the (short) window are lost; our CLI reads audio on one thread.
_LOCK = threading.RLock()
_depth = 0


@contextlib.contextmanager
def c_stderr_silenced() -> Iterator[None]:
    """Within the block, output to file descriptor 2 (C libraries' stderr) goes to ``/dev/null``.

    Wrap only the C call: Python's own warnings and log lines written to ``sys.stderr`` inside the block are
    lost too. If the descriptor cannot be duplicated (no fd 2, too many open files) nothing is silenced.
    """
    global _depth
    with _LOCK:
        saved = _redirect() if _depth == 0 else None
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if saved is not None:
                _restore(saved)


def _redirect() -> int | None:
    """Points fd 2 at /dev/null and returns a duplicate of the old one (None if it could not)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # what Python buffered belongs before the redirection
    try:
        saved = os.dup(2)
    except OSError:
        return None
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return None
    return saved


def _restore(saved: int) -> None:
    try:
        os.dup2(saved, 2)
    finally:
        os.close(saved)
