"""SIGTERM as an interruption: ``kill``, systemd and batch schedulers send it before they kill a job.

Python's default for SIGTERM ends the process at once, without unwinding: no progress bar is taken down and
nothing says how to go on. Raised as a ``KeyboardInterrupt`` subclass instead, it takes the same path as
Ctrl-C, and the command can tell the two apart for its exit code (130 and 143, the shell's 128 + signal).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM raises `Terminated` (only in the main thread, over Python's default)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    ):
        yield  # someone else (a host application, a test runner) owns the signal
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
