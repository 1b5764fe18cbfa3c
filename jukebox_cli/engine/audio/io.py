"""Audio I/O: load, resample, mix down, check and save. The only module that reads or writes audio files.

The models see mono float32 audio at their sample rate (44.1 kHz for the released ones). Stereo is mixed
to mono by a plain channel average, as ``librosa.load(..., mono=True)`` does for Jukebox prompts. Nothing
here normalises peak, RMS or loudness: Jukebox never did, and the models were trained without it.

Arrays are numpy, ``[T]`` for mono and ``[C, T]`` (channels first) for multichannel. This module must not
import torch at module level; ``save_audio`` accepts a torch tensor by duck typing.

Reading uses libsndfile (``soundfile``) first: WAV, FLAC, Ogg (Vorbis/Opus), MP3, AIFF, CAF and more. Only
when libsndfile cannot open a file do we try ``librosa.load``, which goes through audioread and therefore
ffmpeg when it is installed (m4a, aac, wma, ...).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from jukebox_cli.engine.audio.quiet import c_stderr_silenced
from jukebox_cli.engine.errors import (
    AudioDecodeError,
    AudioError,
    AudioNotFound,
    AudioPermissionDenied,
    ConfigError,
    InvalidAudio,
    OutputExistsError,
    OutputIsFolder,
    OutputWriteError,
    UnsupportedAudioFormat,
)
from jukebox_cli.engine.files import atomic_write, output_error
from jukebox_cli.engine.heap import release_free_memory

logger = logging.getLogger(__name__)

# soxr's "high quality" preset (20-bit precision, steep low-pass). Streaming and one-shot resampling use
# the same preset so that a chunked load equals a one-shot `resample` of the whole signal.
RESAMPLE_QUALITY = "HQ"

SUPPORTED_WRITE_FORMATS: dict[str, str] = {".wav": "WAV", ".flac": "FLAC"}
"""Extension we write -> libsndfile major format."""

SUPPORTED_SUBTYPES: dict[str, tuple[str, ...]] = {
    "WAV": ("PCM_16", "PCM_24", "FLOAT"),
    "FLAC": ("PCM_16", "PCM_24"),  # FLAC is an integer codec: it has no float subtype
}
"""libsndfile major format -> the sample subtypes ``save_audio`` accepts for it."""

DEFAULT_SUBTYPE = "PCM_16"  # what soundfile (and so the original `save_wav`) writes by default

# Extensions whose files libsndfile is the reference reader for: when it cannot open one of these, the
# file is broken (AudioDecodeError), not of a format we lack (UnsupportedAudioFormat).
_SNDFILE_EXTENSIONS = frozenset(
    (".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf")
    + (".w64", ".rf64")
)
_READ_FORMATS_TEXT = "wav, flac, ogg (vorbis/opus), mp3, aiff, au, caf, w64, rf64"

# libsndfile's sf_error() codes that soundfile passes through as `LibsndfileError.code`.
_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_ERR_SYSTEM = 2  # the OS refused (permission denied, I/O error)
# "File does not exist or is not a regular file": also what libsndfile 1.2 answers when its MP3 decoder
# finds no valid frame in a file we have already checked is there, so its message would mislead.
_SF_ERR_BAD_FILE = 7
_SF_ERR_UNSUPPORTED_ENCODING = 4

# Formats on which libsndfile's seek is sample-exact. Its MP3 and Ogg seeks are not (measured with
# libsndfile 1.2.2: they land on the wrong samples or fail with "psf_fseek() failed"), so for those we
# decode from the start and drop the frames before the offset.
_EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})

# Formats libsndfile only decodes correctly in a single read call (see `_mono_in_one_read`).
_ONE_READ_FORMATS = frozenset({"MP3"})

# An MP3 without a Xing/LAME header only has an estimated length, so a small shortfall against the
# header is not evidence of truncation. Every other format's header length is exact (libsndfile already
# clamps a WAV data chunk to the bytes present).
_MP3_LENGTH_SLACK = 0.01


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file holds, read from its header without decoding the samples.

    ``format`` is libsndfile's major format name ("WAV", "FLAC", "OGG", "MP3", ...) or, for files only
    the audioread fallback can open, the upper-cased extension ("M4A"); ``subtype`` is libsndfile's
    sample encoding ("PCM_16", "VORBIS", ...) or None when unknown.
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str
    subtype: str | None


@dataclass(frozen=True)
class SaveReport:
    """The result of ``save_audio``: where it wrote, how many samples were clipped, and the input peak."""

    path: Path
    n_clipped: int
    peak: float


# ---------------------------------------------------------------------------------------------------
# Array helpers
# ---------------------------------------------------------------------------------------------------


def _as_numpy(audio: Any) -> np.ndarray:
    """Returns ``audio`` as a float32 numpy array; torch tensors are detected by duck typing."""
    if hasattr(audio, "detach"):
        # `.float()` first: numpy has no bfloat16, and the models may produce it.
        audio = audio.detach().cpu().float().numpy()
    return np.asarray(audio, dtype=np.float32)


def _check_rate(name: str, value: Any) -> None:
    """Raises ConfigError unless ``value`` is a positive integer sample rate."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer number of Hz, got {value!r}.")


def _check_shape(audio: np.ndarray, what: str) -> None:
    """Raises InvalidAudio unless ``audio`` is ``[T]`` or ``[C, T]``."""
    if audio.ndim not in (1, 2):
        raise InvalidAudio(f"{what} must have shape [T] or [C, T], got {tuple(audio.shape)}.")


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Mixes audio down to one channel by averaging the channels.

    A plain average, as ``librosa.load(..., mono=True)`` does: no loudness compensation.

    Args:
        audio: ``[C, T]`` (channels first) or ``[T]`` samples.

    Returns:
        A new float32 array ``[T]``.

    Raises:
        InvalidAudio: if ``audio`` has neither 1 nor 2 dimensions.
    """
    audio = np.asarray(audio, dtype=np.float32)
    _check_shape(audio, "audio")
    if audio.ndim == 1:
        return audio.copy()
    return audio.mean(axis=0, dtype=np.float32)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resamples audio with soxr's high-quality band-limited resampler.

    Args:
        audio: ``[T]`` or ``[C, T]`` samples.
        orig_sr: the rate ``audio`` is at, in Hz.
        target_sr: the rate wanted, in Hz.

    Returns:
        A new float32 array with ``audio``'s layout and about ``T * target_sr / orig_sr`` samples; a copy
        of ``audio`` when the rates are equal.

    Raises:
        ConfigError: if a rate is not a positive integer.
        InvalidAudio: if ``audio`` has neither 1 nor 2 dimensions.
    """
    _check_rate("orig_sr", orig_sr)
    _check_rate("target_sr", target_sr)
    audio = np.asarray(audio, dtype=np.float32)
    _check_shape(audio, "audio")
    if orig_sr == target_sr:
        return audio.copy()
    # soxr wants time first: [T] or [T, C].
    out = soxr.resample(audio.T, orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out.T, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------
# Finite checks
# ---------------------------------------------------------------------------------------------------


@dataclass
class _NonFiniteTally:
    """Counts NaN/inf samples over one array or a stream of blocks, remembering the first position."""

    n_nan: int = 0
    n_inf: int = 0
    first: int | None = None  # time index (frame) of the first bad sample

    def add(self, audio: np.ndarray, start: int = 0) -> None:
        """Adds the counts of ``audio`` (``[T]`` or ``[C, T]``) whose first frame is frame ``start``."""
        bad = ~np.isfinite(audio)
        if not bad.any():
            return
        n_nan = int(np.isnan(audio).sum())
        self.n_nan += n_nan
        self.n_inf += int(bad.sum()) - n_nan
        if self.first is None:
            bad_frames = bad if bad.ndim == 1 else bad.any(axis=0)
            self.first = start + int(np.argmax(bad_frames))

    def raise_if_any(self, what: str, sample_rate: int | None) -> None:
        """Raises InvalidAudio describing the tally, if it counted anything."""
        if self.first is None:
            return
        where = f"sample {self.first}" if sample_rate is None else f"{self.first / sample_rate:.3f} s"
        raise InvalidAudio(
            f"{what} has {self.n_nan + self.n_inf} non-finite samples ({self.n_nan} NaN, {self.n_inf} inf); "
            f"the first is at {where}."
        )


def check_finite(audio: Any, what: str = "audio", *, sample_rate: int | None = None) -> None:
    """Checks that every sample is finite.

    Args:
        audio: ``[T]`` or ``[C, T]`` samples (numpy, or anything ``np.asarray`` or torch can convert).
        what: how to name the audio in the error message (e.g. the file path).
        sample_rate: when given, the first bad sample's position is reported in seconds, not samples.

    Raises:
        InvalidAudio: if any sample is NaN or infinite; the message gives the count and the first position.
    """
    tally = _NonFiniteTally()
    tally.add(_as_numpy(audio))
    tally.raise_if_any(what, sample_rate)


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def _check_input_path(path: str | os.PathLike[str]) -> Path:
    """Returns ``path`` as a Path after checking it names a non-empty regular file.

    Raises:
        AudioNotFound: if it does not exist, is a directory or is not a regular file.
        AudioDecodeError: if the file has 0 bytes.
        AudioPermissionDenied: if this process may not read it.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioNotFound(f"{path} is a directory, not an audio file.")
    if not path.exists():
        raise AudioNotFound(f"Audio file {path} does not exist.")
    if not path.is_file():
        raise AudioNotFound(f"{path} is not a regular file.")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"Audio file {path} is empty (0 bytes).")
    try:  # libsndfile would report a refused open as a bare "System error"
        path.open("rb").close()
    except PermissionError as err:
        raise AudioPermissionDenied(f"Cannot read {path}: permission denied.") from err
    return path


def _open(path: Path) -> sf.SoundFile:
    """libsndfile's reader of ``path``, its decoder's notes on a corrupt file kept off the terminal."""
    with c_stderr_silenced():
        return sf.SoundFile(str(path))


def _sf_message(err: sf.LibsndfileError) -> str:
    """libsndfile's message without its "Error : " prefix and final period, to embed in a sentence."""
    return err.error_string.removeprefix("Error : ").rstrip(".")


def _open_error(path: Path, err: sf.LibsndfileError) -> AudioError:
    """Turns libsndfile's refusal to open ``path`` (after the fallback failed too) into our error type.

    libsndfile recognises files by content, not by name. If it did not recognise the content and the
    extension is one it reads, the file is broken; if the extension is foreign, we lack the decoder.
    """
    ext = path.suffix.lower()
    if err.code == _SF_ERR_SYSTEM:
        return AudioError(f"Cannot open {path}: {_sf_message(err)}.")
    if err.code == _SF_ERR_UNRECOGNISED_FORMAT and ext not in _SNDFILE_EXTENSIONS:
        return UnsupportedAudioFormat(
            f"Cannot read {path}: none of our decoders reads '{ext or '(no extension)'}' files (we read "
            f"{_READ_FORMATS_TEXT}; other formats such as m4a, aac or wma need ffmpeg installed)."
        )
    if err.code == _SF_ERR_UNSUPPORTED_ENCODING:
        return UnsupportedAudioFormat(
            f"Cannot read {path}: libsndfile knows the container but not its encoding "
            f"({_sf_message(err)}); installing ffmpeg may help."
        )
    detail = "the decoder found no valid audio in it" if err.code == _SF_ERR_BAD_FILE else _sf_message(err)
    return AudioDecodeError(
        f"Cannot decode {path}: {detail}; the file is corrupt, truncated or not really a '{ext}' file."
    )


def _decode_error(path: Path, seconds: float, err: sf.LibsndfileError) -> AudioDecodeError:
    """The error for a decoder that fails part-way through ``path``, in the block starting at ``seconds``."""
    return AudioDecodeError(
        f"Decoding {path} failed in the block starting at {seconds:.3f} s "
        f"({_sf_message(err)}); it is truncated or corrupt."
    )


def _read_block(sfile: sf.SoundFile, n_frames: int, path: Path, at_frame: int) -> np.ndarray:
    """Reads up to ``n_frames`` frames (all remaining if -1) as float32 ``(n, C)``."""
    try:
        with c_stderr_silenced():
            return sfile.read(n_frames, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise _decode_error(path, at_frame / sfile.samplerate, err) from err


def _mix_down(data: np.ndarray) -> np.ndarray:
    """``(n, C)`` frames -> contiguous mono ``[n]`` (channel average)."""
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    return data.mean(axis=1, dtype=np.float32)


def _skip_to(sfile: sf.SoundFile, start: int, block: int, path: Path) -> int:
    """Moves to frame ``start`` and returns the frame reached (less than ``start`` if the file ended).

    Seeks where libsndfile seeks exactly; elsewhere decodes and discards, so the samples that follow are
    the ones a full decode gives.
    """
    if sfile.format in _EXACT_SEEK_FORMATS:
        try:
            with c_stderr_silenced():
                return sfile.seek(start)
        except sf.LibsndfileError as err:
            raise _decode_error(path, start / sfile.samplerate, err) from err
    position = 0
    while position < start:
        n = len(_read_block(sfile, min(block, start - position), path, position))
        if n == 0:
            break
        position += n
    return position


def _mono_blocks(
    sfile: sf.SoundFile, start: int, limit: int | None, block: int, path: Path
) -> Iterator[np.ndarray]:
    """Yields the mono frames from ``start`` on, ``block`` at a time, until ``limit`` frames or the end.

    Only one multichannel block is alive at a time, so memory stays bounded by the output.
    """
    if sfile.format in _ONE_READ_FORMATS:
        yield from _mono_in_one_read(sfile, start, limit, path)
        return
    if _skip_to(sfile, start, block, path) < start:
        return  # the file ended before the offset
    n_read = 0
    while limit is None or n_read < limit:
        want = block if limit is None else min(block, limit - n_read)
        data = _read_block(sfile, want, path, start + n_read)
        if len(data) == 0:
            return
        n_read += len(data)
        yield _mix_down(data)


def _mono_in_one_read(sfile: sf.SoundFile, start: int, limit: int | None, path: Path) -> Iterator[np.ndarray]:
    """Yields the mono frames from ``start`` on as one block, decoded from the file's start in one read.

    libsndfile 1.2.2 decodes MP3 wrongly when a file is read in more than one call: mpg123 reports
    "part2_3_length too large" and returns silence or garbage from the second call on (measured; see
    bastibe/python-soundfile#402). Its MP3 seek is not sample-exact either. So an MP3 is decoded in a
    single read from frame 0, at the cost of holding the decoded span in memory.
    """
    data = _read_block(sfile, -1 if limit is None else start + limit, path, 0)
    if len(data) > start:
        yield _mix_down(data[start:])


def _check_complete(sfile: sf.SoundFile, end: int, expected_end: int, path: Path) -> None:
    """Raises AudioDecodeError if decoding stopped before the frame the header promised."""
    slack = int(_MP3_LENGTH_SLACK * sfile.frames) if sfile.format == "MP3" else 0
    if end + slack < expected_end:
        sr = sfile.samplerate
        raise AudioDecodeError(
            f"Audio file {path} ended at {end / sr:.3f} s although its header says "
            f"{sfile.frames / sr:.3f} s; it is truncated or corrupt."
        )


def _frame_range(sfile: sf.SoundFile, offset: float, duration: float | None, path: Path) -> tuple[int, int]:
    """Returns (first frame, number of frames) of the requested span, clamped to the file's end."""
    sr = sfile.samplerate
    if sfile.frames == 0:
        raise AudioDecodeError(f"Audio file {path} is empty: it contains no audio frames.")
    start = round(offset * sr)
    if start >= sfile.frames:
        raise ConfigError(
            f"Offset {offset:g} s is at or beyond the end of {path}, which is {sfile.frames / sr:.3f} s long."
        )
    available = sfile.frames - start
    n_frames = available if duration is None else min(available, max(1, round(duration * sr)))
    return start, n_frames


def _stream_sndfile(
    sfile: sf.SoundFile,
    path: Path,
    sample_rate: int | None,
    offset: float,
    duration: float | None,
    block_seconds: float,
    *,
    fail_fast: bool,
) -> Iterator[np.ndarray]:
    """Yields ``sfile`` block by block through a mono mix-down and a streaming resampler.

    With ``fail_fast`` a block holding NaN/inf raises at once (a stream cannot take back what it yielded);
    without it the whole span is counted first, so the error gives the total.
    """
    file_sr = sfile.samplerate
    start, n_frames = _frame_range(sfile, offset, duration, path)
    block = max(1, round(block_seconds * file_sr))
    out_sr = file_sr if sample_rate is None else sample_rate
    stream = None
    if out_sr != file_sr:
        stream = soxr.ResampleStream(file_sr, out_sr, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    # Without a duration we read until the decoder stops, not up to the header's count.
    limit = None if duration is None else n_frames
    tally = _NonFiniteTally()
    n_read = 0
    for mono in _mono_blocks(sfile, start, limit, block, path):
        tally.add(mono, start + n_read)
        if fail_fast:
            tally.raise_if_any(f"Audio file {path}", file_sr)
        n_read += len(mono)
        out = mono if stream is None else stream.resample_chunk(mono)
        if len(out):
            yield out
    if n_read == 0:
        raise AudioDecodeError(
            f"Audio file {path} has no audio at {offset:g} s although its header says "
            f"{sfile.frames / file_sr:.3f} s; it is truncated or corrupt."
        )
    _check_complete(sfile, start + n_read, start + n_frames, path)
    tally.raise_if_any(f"Audio file {path}", file_sr)
    if stream is not None:
        out = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(out):
            yield out


def _read_sndfile(
    sfile: sf.SoundFile,
    path: Path,
    sample_rate: int | None,
    offset: float,
    duration: float | None,
    block_seconds: float,
) -> np.ndarray:
    """The whole span of ``_stream_sndfile`` in one array."""
    pieces = list(_stream_sndfile(sfile, path, sample_rate, offset, duration, block_seconds, fail_fast=False))
    return np.concatenate(pieces)


def _librosa_fallback(
    path: Path, offset: float, duration: float | None, sndfile_error: sf.LibsndfileError
) -> tuple[np.ndarray, int]:
    """Decodes ``path`` with librosa (audioread, hence ffmpeg when installed) to mono at its own rate.

    Raises:
        UnsupportedAudioFormat, AudioDecodeError: as ``_open_error`` decides, if this fails too.
    """
    import librosa  # imported here: only the fallback needs librosa (and audioread behind it)

    try:
        with warnings.catch_warnings():
            # librosa warns that soundfile failed and that audioread is deprecated; falling back to
            # audioread is exactly what we mean to do here.
            warnings.simplefilter("ignore")
            with c_stderr_silenced():  # librosa tries libsndfile again first
                audio, file_sr = librosa.load(path, sr=None, mono=True, offset=offset, duration=duration)
    # Any exception: audioread's backends raise whatever their parsers do (NoBackendError, the stdlib
    # wave module's bare RuntimeError, EOFError, struct.error, ...). It is chained, not swallowed.
    except Exception as err:
        logger.debug("librosa fallback failed for %s: %r", path, err)
        raise _open_error(path, sndfile_error) from err
    return np.asarray(audio, dtype=np.float32), int(file_sr)


def _load_fallback(
    path: Path,
    sample_rate: int | None,
    offset: float,
    duration: float | None,
    sndfile_error: sf.LibsndfileError,
) -> np.ndarray:
    """The whole load through librosa, with the same checks as the libsndfile path."""
    logger.debug("libsndfile cannot open %s (%s); trying librosa/audioread", path, sndfile_error)
    audio, file_sr = _librosa_fallback(path, offset, duration, sndfile_error)
    if audio.size == 0 and offset > 0:
        raise ConfigError(f"Offset {offset:g} s is at or beyond the end of {path}.")
    if audio.size == 0:
        raise AudioDecodeError(f"Audio file {path} is empty: it contains no audio frames.")
    tally = _NonFiniteTally()
    tally.add(audio, round(offset * file_sr))
    tally.raise_if_any(f"Audio file {path}", file_sr)
    return resample(audio, file_sr, file_sr if sample_rate is None else sample_rate)


def _check_load_args(
    sample_rate: int | None, offset: float, duration: float | None, block_seconds: float
) -> None:
    """Raises ConfigError for arguments of ``load_audio`` that cannot be right."""
    if sample_rate is not None:
        _check_rate("sample_rate", sample_rate)
    if not (np.isfinite(offset) and offset >= 0):
        raise ConfigError(f"offset must be a finite number of seconds >= 0, got {offset!r}.")
    if duration is not None and not (np.isfinite(duration) and duration > 0):
        raise ConfigError(f"duration must be a finite number of seconds > 0, got {duration!r}.")
    if not (np.isfinite(block_seconds) and block_seconds > 0):
        raise ConfigError(f"block_seconds must be a positive number of seconds, got {block_seconds!r}.")


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Reads an audio file's header: rate, channels, length and encoding.

    A file with a valid header and 0 frames is described, not refused (``load_audio`` refuses it). Files
    libsndfile cannot open are probed with audioread (ffmpeg); their ``subtype`` is None.

    Args:
        path: the audio file.

    Returns:
        The file's AudioInfo.

    Raises:
        AudioNotFound: if ``path`` does not exist or is a directory.
        AudioDecodeError: if the file is empty (0 bytes) or its header is corrupt.
        UnsupportedAudioFormat: if no decoder we have can read it.
    """
    path = _check_input_path(path)
    try:
        with c_stderr_silenced():
            info = sf.info(str(path))
    except sf.LibsndfileError as err:
        return _audioread_info(path, err)
    return AudioInfo(
        path=path,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        duration=info.frames / info.samplerate,
        format=info.format,
        subtype=info.subtype,
    )


def _audioread_info(path: Path, sndfile_error: sf.LibsndfileError) -> AudioInfo:
    """AudioInfo through audioread, for files libsndfile cannot open."""
    import audioread

    try:
        with c_stderr_silenced(), audioread.audio_open(str(path)) as f:
            sample_rate, channels, duration = int(f.samplerate), int(f.channels), float(f.duration)
    except Exception as err:  # as in `_librosa_fallback`: the backends raise anything; it is chained
        raise _open_error(path, sndfile_error) from err
    return AudioInfo(
        path=path,
        sample_rate=sample_rate,
        channels=channels,
        frames=round(duration * sample_rate),
        duration=duration,
        format=path.suffix.lstrip(".").upper(),
        subtype=None,
    )


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    block_seconds: float = 30.0,
) -> np.ndarray:
    """Loads an audio file as mono float32 at ``sample_rate``.

    The file is decoded ``block_seconds`` at a time; each block is mixed to mono (channel average) and fed
    to a streaming soxr resampler, so memory grows with the output only. The result equals a one-shot
    ``resample`` of the whole mono signal. No normalisation of any kind is applied.

    Deliberate behaviours:

    - ``offset``/``duration`` are converted to frames at the file's rate and applied before resampling.
      A ``duration`` running past the end is clamped (you get what is there); an ``offset`` at or past the
      end is an error. Ogg is decoded from the start and the frames before the offset dropped, because
      libsndfile's Ogg seek is not sample-exact.
    - MP3 is decoded in one read from the start of the file up to the end of the span, because libsndfile
      1.2.2 garbles MP3 read in several calls. Its memory use is the decoded span, not just the output.
    - Truncated files: libsndfile derives a WAV's (AIFF's, ...) length from the bytes present and an Ogg's
      from its last complete page, so such a file cut short loads the audio that is there: every sample
      returned is real. A decoder error part-way (e.g. FLAC "lost sync"), or a stream that ends before the
      length its header gives (beyond 1% for MP3, whose header length may be an estimate), raises
      AudioDecodeError, as does a file with no frames at all (0 bytes, a 0-frame header, or an Ogg cut
      before its first complete page). Garbage in a PCM data chunk cannot be detected: it is valid PCM.
    - Fallback: if libsndfile cannot open the file, ``librosa.load(path, sr=None, mono=True, ...)`` is
      tried (audioread; ffmpeg if installed) and the result resampled. If that fails too, the error is
      UnsupportedAudioFormat for an extension libsndfile does not read (.m4a, .txt, ...) and
      AudioDecodeError for one it does (a ".wav" full of garbage is a broken WAV).

    Args:
        path: the audio file (any format libsndfile reads; others through ffmpeg when installed).
        sample_rate: the rate to return, in Hz; None keeps the file's own rate.
        offset: seconds to skip at the start.
        duration: seconds to read; None reads to the end.
        block_seconds: seconds decoded per block.

    Returns:
        Float32 samples ``[T]``, mono, at ``sample_rate``.

    Raises:
        AudioNotFound: if ``path`` does not exist or is a directory.
        AudioDecodeError: if the file is empty, corrupt or truncated.
        UnsupportedAudioFormat: if no decoder we have reads the file's format.
        InvalidAudio: if the requested span holds NaN or infinite samples.
        ConfigError: if ``offset`` is at or past the end, or an argument is out of range.
    """
    _check_load_args(sample_rate, offset, duration, block_seconds)
    path = _check_input_path(path)
    try:
        sfile = _open(path)
    except sf.LibsndfileError as err:
        return _load_fallback(path, sample_rate, offset, duration, err)
    with sfile:
        return _read_sndfile(sfile, path, sample_rate, offset, duration, block_seconds)


def stream_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None,
    *,
    block_seconds: float = 30.0,
) -> Iterator[np.ndarray]:
    """Yields an audio file as mono float32 blocks at ``sample_rate``, about ``block_seconds`` each.

    The blocks joined equal ``load_audio(path, sample_rate)``; memory holds one block whatever the file's
    length. This is how every command that may meet hours of audio reads it. The same errors as
    ``load_audio`` are raised, some only when the stream reaches the bad part (a truncated end, NaN/inf:
    that error counts the bad samples of the first bad block only). Two kinds of file are decoded whole
    before the first block: MP3 (libsndfile garbles MP3 read in pieces) and formats only ffmpeg reads.

    Raises:
        AudioNotFound, AudioDecodeError, UnsupportedAudioFormat, InvalidAudio, ConfigError: as ``load_audio``.
    """
    _check_load_args(sample_rate, 0.0, None, block_seconds)
    path = _check_input_path(path)
    for block in _blocks(path, sample_rate, block_seconds):
        yield block
        # Back here, the caller's work on the block is done: what it freed goes back to the system, or the
        # holes it leaves in the heap would make the resident size grow with the length of the audio.
        release_free_memory()


def _blocks(path: Path, sample_rate: int | None, block_seconds: float) -> Iterator[np.ndarray]:
    try:
        sfile = _open(path)
    except sf.LibsndfileError as err:
        audio = _load_fallback(path, sample_rate, 0.0, None, err)
        block = max(1, round(block_seconds * (sample_rate or 1)))
        for start in range(0, len(audio), block):
            yield audio[start : start + block]
        return
    with sfile:
        yield from _stream_sndfile(sfile, path, sample_rate, 0.0, None, block_seconds, fail_fast=True)


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _write_format(path: Path, subtype: str | None) -> tuple[str, str]:
    """Returns (libsndfile format, subtype) for writing ``path``.

    Raises:
        UnsupportedAudioFormat: for an extension or subtype we do not write.
    """
    fmt = SUPPORTED_WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        supported = ", ".join(SUPPORTED_WRITE_FORMATS)
        raise UnsupportedAudioFormat(
            f"Cannot write {path}: '{path.suffix or '(no extension)'}' is not a format we write; "
            f"use one of {supported}."
        )
    subtype = DEFAULT_SUBTYPE if subtype is None else subtype.upper()
    if subtype not in SUPPORTED_SUBTYPES[fmt]:
        raise UnsupportedAudioFormat(
            f"Cannot write {path} as {subtype}: {fmt} files support {', '.join(SUPPORTED_SUBTYPES[fmt])}."
        )
    return fmt, subtype


def _prepare_samples(audio: Any, path: Path, sample_rate: int) -> np.ndarray:
    """Returns ``audio`` as float32 ``[C, T]`` after checking its shape and that it is finite."""
    samples = _as_numpy(audio)
    _check_shape(samples, f"Audio for {path}")
    if samples.ndim == 1:
        samples = samples[None]  # (1, T)
    if samples.shape[1] == 0:
        raise InvalidAudio(f"Audio for {path} has no samples.")
    if samples.shape[0] > samples.shape[1]:
        # More channels than samples is almost surely soundfile's [T, C] layout passed by mistake.
        raise InvalidAudio(
            f"Audio for {path} has shape {tuple(samples.shape)}; expected [C, T] (channels first)."
        )
    check_finite(samples, f"Audio for {path}", sample_rate=sample_rate)
    return samples


def _clip(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Clips to [-1, 1] for integer PCM, returning the clipped array and how many samples changed."""
    n_clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
    if n_clipped == 0:
        return samples, 0
    return np.clip(samples, -1.0, 1.0), n_clipped


def _encode_to(tmp: Path, samples: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> None:
    """Encodes in memory, then writes the bytes: libsndfile reports a full disk as a bare "System error",
    Python's write as an OSError whose errno says what happened."""
    buffer = io.BytesIO()
    # `format` is explicit because a buffer has no extension.
    sf.write(buffer, samples.T, sample_rate, subtype=subtype, format=fmt)
    tmp.write_bytes(buffer.getbuffer())


def _write_atomically(path: Path, samples: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> None:
    """Writes ``samples`` ``[C, T]`` to a hidden temporary file beside ``path``, then renames it over.

    A reader never sees a half-written file, and on failure ``path`` keeps its old content.

    Raises:
        OutputWriteError: if writing or renaming fails (OutputDiskFull for a full disk).
    """
    try:
        atomic_write(path, lambda tmp: _encode_to(tmp, samples, sample_rate, fmt, subtype), overwrite=True)
    except sf.SoundFileError as err:  # libsndfile's own write failures carry no errno
        raise OutputWriteError(f"Cannot write {path}: {err}") from err


def save_audio(
    path: str | os.PathLike[str],
    audio: Any,
    sample_rate: int,
    *,
    subtype: str | None = None,
    overwrite: bool = False,
) -> SaveReport:
    """Writes audio to a WAV or FLAC file, atomically.

    Integer PCM cannot hold samples outside [-1, 1]; those are clipped and counted in the report so the
    caller can warn. FLOAT WAV keeps them. Nothing is normalised. The parent directory is created if needed.

    Args:
        path: the output file; its extension (.wav or .flac) picks the format.
        audio: ``[T]`` or ``[C, T]`` samples, a numpy array or a torch tensor (any device or dtype).
        sample_rate: the rate of ``audio``, in Hz.
        subtype: "PCM_16" (the default), "PCM_24", or "FLOAT" (WAV only).
        overwrite: replace an existing file instead of refusing.

    Returns:
        A SaveReport with the path written, the number of clipped samples and the input's peak magnitude.

    Raises:
        UnsupportedAudioFormat: for an extension or subtype we do not write.
        OutputExistsError: if ``path`` exists and ``overwrite`` is False; its subclass OutputIsFolder if it is
            a directory (whatever ``overwrite`` says).
        InvalidAudio: if ``audio`` is empty, badly shaped, or holds NaN/inf.
        ConfigError: if ``sample_rate`` is not a positive integer.
        OutputWriteError: if the file system refuses the write (OutputDiskFull: the disk is full).
    """
    path = Path(path)
    fmt, subtype = _write_format(path, subtype)
    _check_rate("sample_rate", sample_rate)
    if path.is_dir():
        raise OutputIsFolder(f"Cannot write {path}: it is a directory.")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    samples = _prepare_samples(audio, path, sample_rate)
    peak = float(np.abs(samples).max())
    n_clipped = 0
    if subtype != "FLOAT":
        samples, n_clipped = _clip(samples)
    _write_atomically(path, samples, sample_rate, fmt, subtype)
    return SaveReport(path=path, n_clipped=n_clipped, peak=peak)


class AudioWriter:
    """Writes a mono WAV or FLAC file block by block, atomically: a long output never sits in memory.

    Blocks go to a hidden temporary file beside ``path``; :meth:`close` renames it into place, and leaving
    a ``with`` block by an exception deletes it, so a reader never sees a half-written file. Integer PCM
    clips samples beyond [-1, 1] and counts them, as ``save_audio`` does.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        *,
        subtype: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        fmt, self._subtype = _write_format(self.path, subtype)
        _check_rate("sample_rate", sample_rate)
        if self.path.is_dir():
            raise OutputIsFolder(f"Cannot write {self.path}: it is a directory.")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} already exists; pass overwrite=True to replace it.")
        self.sample_rate = sample_rate
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        self.n_samples = self.n_clipped = 0
        self.peak = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: sf.SoundFile | None = sf.SoundFile(
                str(self._tmp), "w", sample_rate, 1, subtype=self._subtype, format=fmt
            )
        except OSError as err:
            raise output_error(self.path, err, self._tmp) from err
        except sf.SoundFileError as err:
            raise OutputWriteError(f"Cannot write {self.path}: {err}") from err

    def write(self, audio: Any) -> None:
        """Appends mono samples ``[T]`` (numpy or torch)."""
        samples = _as_numpy(audio).reshape(-1)
        if samples.size == 0:
            return
        check_finite(samples, f"Audio for {self.path}", sample_rate=self.sample_rate)
        self.peak = max(self.peak, float(np.abs(samples).max()))
        if self._subtype != "FLOAT":
            samples, n_clipped = _clip(samples)
            self.n_clipped += n_clipped
        assert self._file is not None, "write after close"
        try:
            self._file.write(samples)
        except sf.SoundFileError as err:  # libsndfile reports a full disk as a bare "System error"
            self.abort()
            raise OutputWriteError(f"Cannot write {self.path}: {err}") from err
        self.n_samples += samples.size

    def close(self) -> SaveReport:
        """Finishes the file and moves it into place.

        Raises:
            InvalidAudio: if nothing was written.
            OutputWriteError: if the file system refuses.
        """
        if self.n_samples == 0:
            self.abort()
            raise InvalidAudio(f"Audio for {self.path} has no samples.")
        assert self._file is not None, "close after close"
        try:
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except OSError as err:
            self.abort()
            raise output_error(self.path, err, self._tmp) from err
        return SaveReport(path=self.path, n_clipped=self.n_clipped, peak=self.peak)

    def abort(self) -> None:
        """Drops the temporary file; ``path`` keeps its old content."""
        if self._file is not None:
            with contextlib.suppress(Exception):  # the write already failed; the file is going anyway
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif self._file is not None:
            self.close()
