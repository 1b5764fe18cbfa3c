"""The one table from exception type to exit code and hint (subclasses first).

Exit codes: 0 ok; 1 unexpected; 2 usage/config; 3 checkpoint/network, or a full disk; 4 audio cannot be read
or an output cannot be written; 5 device/out of memory; 6 audio unusable (NaN/inf, too short); 7 output exists (use --force); 8 training cannot
start or continue (no usable data, a run that exists or changed, losses that stay NaN); 9 the output folder is in use
by another process; 130 Ctrl-C; 143 SIGTERM while sampling (``_signals.py``).
"""

from __future__ import annotations

import os

from jukebox_cli.engine import errors as e

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# (type, exit code, hint shown under the message). A hint names --force only for the errors --force fixes:
# those it cannot fix are subclasses (OutputBlocked, OutputIsFolder) listed before OutputExistsError.
ERROR_TABLE: list[tuple[type[BaseException], int, str]] = [
    (
        e.OutputIsFolder,
        7,
        "--force does not replace a folder; choose another output with -o, or move it away.",
    ),
    (e.OutputBlocked, 7, "--force replaces only a run; choose another output with -o, or empty that folder."),
    (e.RunNotResumable, 7, ""),  # the message says what differs and that --force starts over
    (e.OutputExistsError, 7, "Pass --force to overwrite, or choose another output with -o."),
    (e.OutputInUse, 9, ""),  # the message names the folder and the other process
    (e.OutputDiskFull, 3, "Free some space, or choose an output on another disk with -o."),
    (e.OutputWriteError, 4, "Choose an output folder you can write to with -o."),
    (e.InvalidAudio, 6, "Check the input file: it must hold finite samples and be long enough."),
    (e.AudioNotFound, 4, "Check the path."),
    (e.AudioPermissionDenied, 4, "Check the file's permissions (or read it as its owner)."),
    (e.UnsupportedAudioFormat, 4, "Convert the file to WAV or FLAC (e.g. with ffmpeg) and try again."),
    (e.AudioError, 4, "The file may be truncated or corrupt; try re-exporting it."),
    # --model is an option of the commands, not of `jukebox` itself: point where it is listed and explained.
    (
        e.CheckpointNotFound,
        3,
        "`jukebox models list` shows the models; `jukebox generate --help` explains --model.",
    ),
    (e.ChecksumMismatch, 3, "The file was corrupted; run the command again to fetch it anew."),
    (e.NetworkError, 3, "Check the network (or HF_HUB_OFFLINE / HF_ENDPOINT), then run the command again."),
    (e.DiskSpaceError, 3, "Free some space or point --cache-dir / JUKEBOX_CACHE at a larger disk."),
    (e.IncompatibleCheckpoint, 3, "Pass a checkpoint of the right kind and architecture."),
    (e.CheckpointError, 3, ""),
    (e.ProcessStopped, 1, ""),  # rank 0 prints the failed rank's own error; this is what the others stop with
    (e.NotEnoughMemory, 5, ""),  # the message names what would fit
    (e.DeviceError, 5, "Try --device cpu."),
    (e.LabelError, 2, ""),
    (e.ConfigError, 2, ""),  # the message names the option to change
    (e.TrainingError, 8, "See `jukebox train --help`."),
    (e.JukeboxError, 1, ""),
]


def one_line(error: BaseException) -> str:
    """The line the CLI prints for ``error`` (after ``error:``), whitespace folded: the studio shows the same."""
    if isinstance(error, e.JukeboxError):
        message = str(error)
    else:  # a bug: its type is what a report needs
        message = f"unexpected {type(error).__name__}: {error}"
    return " ".join(message.split())


def lookup(error: BaseException) -> tuple[int, str]:
    """Exit code and hint for ``error`` (unexpected errors: 1, no hint)."""
    for kind, code, hint in ERROR_TABLE:
        if isinstance(error, kind):
            return code, hint
    return EXIT_UNEXPECTED, ""


def other_rank() -> bool:
    """Whether torchrun started this process as a rank other than 0: rank 0 alone speaks for a shared run,
    another rank's errors included (``engine/ranks.py`` hands them to it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) > 0
    except ValueError:
        return False
