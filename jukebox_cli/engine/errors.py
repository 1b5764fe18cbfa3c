"""Typed exceptions of the engine.

The CLI maps each type to an exit code and a one-line message (``cli/_errors.py``); library users catch
``JukeboxError``. This module must not import torch: the CLI imports it at start-up.
"""

from __future__ import annotations


class JukeboxError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(JukeboxError, ValueError):
    """A configuration or argument a user can fix (bad preset name, bad level list, ...)."""


class OutputExistsError(JukeboxError, FileExistsError):
    """An output path exists and overwriting it was not allowed."""


class OutputBlocked(OutputExistsError):
    """An output path is taken by something ``force`` does not replace (a file, a folder that is not a run)."""


class OutputIsFolder(OutputBlocked):
    """A file is to be written where a folder is: no overwrite replaces a folder, so ``force`` cannot help."""


class RunNotResumable(OutputExistsError, ConfigError):
    """The output folder holds a run this command cannot resume (other settings, unreadable codes); ``force``
    starts it over. A ConfigError too, for callers that catch settings problems as such."""


class OutputInUse(JukeboxError):
    """Another process is writing the same output folder (a run folder or a training run) right now."""


class OutputWriteError(JukeboxError, OSError):
    """An output cannot be written: a read-only or missing folder, permission denied, a path that is a file."""


class OutputDiskFull(OutputWriteError):
    """The disk (or quota) filled up while an output was written; the previous version is intact."""


class CheckpointError(JukeboxError):
    """A checkpoint cannot be found, read or used."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path, or a preset that needs weights we do not have."""


class RemoteFileMissing(CheckpointNotFound):
    """A server (hub or mirror) answered that the file does not exist."""


class ChecksumMismatch(CheckpointError):
    """A file's hash or size differs from what the registry expects."""


class NetworkError(CheckpointError):
    """A download failed: no network, offline mode without the files, or every mirror refused."""


class DiskSpaceError(CheckpointError):
    """Not enough free disk space for a download or a conversion."""


class IncompatibleCheckpoint(CheckpointError):
    """A checkpoint of another kind or architecture (the message says which keys or shapes differ)."""


class AudioError(JukeboxError):
    """Audio that cannot be read or written."""


class AudioNotFound(AudioError, FileNotFoundError):
    """The audio path does not exist or is not a regular file."""


class AudioPermissionDenied(AudioError, PermissionError):
    """An audio file this process may not read."""


class UnsupportedAudioFormat(AudioError):
    """A file no decoder we have can read (or a format we cannot write)."""


class AudioDecodeError(AudioError):
    """An empty, truncated or corrupt audio file."""


class InvalidAudio(AudioError):
    """Audio that was read but cannot be used: NaN/inf samples, or too short for the model."""


class ProcessStopped(JukeboxError):
    """Another process sampling the same run failed or left (``torchrun``); the one that failed says why."""


class DeviceError(JukeboxError):
    """No such device, or the device ran out of memory."""


class NotEnoughMemory(DeviceError):
    """The memory plan of a training run exceeds the device's memory (the message says what would fit)."""


class LabelError(JukeboxError, ValueError):
    """Unknown artist or genre."""


class TrainingError(JukeboxError):
    """Training cannot start or continue."""
