"""One process at a time per output folder: an OS advisory lock on a file inside it.

Two processes writing the same run folder (or training run) would interleave their codes and checkpoints, so
whoever comes second is refused at once with :class:`~jukebox_cli.engine.errors.OutputInUse`. The lock is the
operating system's (``flock`` on POSIX, ``msvcrt.locking`` on Windows): it goes away with the process, so a
crash or ``kill -9`` never leaves a stale lock behind. The lock file is removed on release.

Within one process the lock is re-entrant, so a caller may hold it around a library call that takes it too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from jukebox_cli.engine.errors import OutputInUse
from jukebox_cli.engine.files import output_error

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

#: The lock file's name inside the folder it guards; folder checks ignore it.
LOCK_FILE = ".jukebox.lock"

_held: dict[Path, int] = {}  # folder -> how many times this process holds it


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False if another process has it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        # Neither (an unusual platform): no lock, as before locks existed, rather than no way to run.
    except OSError:
        return False
    return True


def _holder(file: Path) -> str:
    """The holder's pid as the lock file records it, for the message (" (pid N)"), or ""."""
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(file.read_text(encoding='ascii').strip())})"
    return ""


@contextlib.contextmanager
def hold_folder(folder: str | Path, what: str = "output folder") -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for this process while the block runs.

    Args:
        folder: the folder to guard.
        what: what it is, for the message ("run folder", "training run").

    Raises:
        OutputInUse: another process holds it.
        OutputWriteError: the folder or its lock file cannot be created.
    """
    folder = Path(folder)
    key = folder.resolve()
    if _held.get(key):
        _held[key] += 1
        try:
            yield folder
        finally:
            _held[key] -= 1
        return
    created = not folder.exists()
    file = folder / LOCK_FILE
    fd = _acquire(folder, file, what)
    _held[key] = 1
    try:
        yield folder
    finally:
        del _held[key]
        # Unlinked while still locked: a process that opened the old file finds it replaced and retries.
        with contextlib.suppress(OSError):
            file.unlink()
        os.close(fd)
        if created:  # a folder made only for the lock (the work was refused) is not left behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def _acquire(folder: Path, file: Path, what: str) -> int:
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise output_error(file, err) from err
        if not _try_lock(fd):
            os.close(fd)
            raise OutputInUse(
                f"{folder}: the {what} is in use by another jukebox process{_holder(file)}; "
                "wait for it to finish, or choose another -o."
            )
        # The holder before us may have unlinked the file between our open and our lock: then the lock is
        # on a file nobody else will see, and a third process could lock a new one. Lock the current one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(file))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    except OSError as err:
        os.close(fd)
        raise output_error(file, err) from err
    return fd
