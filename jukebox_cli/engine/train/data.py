"""Training data: a folder of songs decoded once into a cache, and deterministic random chunks of it.

Improves on the original ``FilesAudioDataset``: files are decoded, mixed to mono and resampled
once into float32 ``.npy`` files that chunks read by memory map (no per-step decoding, no ``.dur`` files
beside the user's audio); bad files are skipped with a reason instead of crashing the run; the held-out
split is by song (not by file order, which leaks one song into both splits) and stays stable as files are
added; and a batch is a pure function of (seed, step, rank, split, batch size), so a resumed or distributed
run draws exactly the chunks it would have drawn, with no sampler state to save.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jukebox_cli.engine.audio.io import stream_audio
from jukebox_cli.engine.audio.quality import FRAME, HOP, median_level_db, power_db
from jukebox_cli.engine.errors import AudioError, ConfigError, JukeboxError, TrainingError
from jukebox_cli.engine.files import atomic_write
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.weights.cache import cache_root

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus", ".m4a", ".aac")
"""What a scan picks up. The last four need ffmpeg on some systems; unreadable ones are skipped, not fatal."""

LABEL_KEYS = ("artist", "genre", "lyrics")
_DEFAULTS = {"artist": "unknown", "genre": "unknown", "lyrics": ""}
_CACHE_VERSION = 1  # part of every cache key: bump it when the decoded format changes
_BUCKETS = 10_000
# Redraws per chunk when quiet chunks are skipped: enough that a corpus with a few quiet passages never keeps
# one, bounded so that a corpus of nothing but quiet audio still yields batches (of its loudest draws' kind).
_QUIET_REDRAWS = 50
# A song's loud span is judged on its level's median over this many seconds: long enough that a pause between
# phrases or a drum break does not end the span, short enough to find where an intro turns into the song.
EDGE_WINDOW_SECONDS = 3.0


@dataclass(frozen=True)
class SongInfo:
    """One usable song: its source file, its length at the model's rate, its labels and its split.

    ``start`` is where the song begins in its decoded file (0 unless its quiet edges were trimmed) and
    ``n_samples`` its length from there: chunk offsets and timing labels count within this span. ``trimmed``
    is how many samples of the file its quiet edges left out, both ends together.
    """

    path: Path
    n_samples: int
    artist: str
    genre: str
    lyrics: str
    split: str
    start: int = 0
    trimmed: int = 0


@dataclass(frozen=True)
class Chunk:
    """``sample_length`` samples of one song, ``audio`` ``[sample_length]``, with the song's labels."""

    audio: torch.Tensor
    song: int
    offset: int
    total_length: int
    artist: str
    genre: str
    lyrics: str


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _find_audio(root: Path, exclude: Path) -> list[Path]:
    """Audio files under ``root``, sorted by relative path, outside hidden folders and ``exclude``."""
    found = []
    for folder, dirs, files in os.walk(root):
        # Pruning in place stops os.walk descending; the cache may live under root and holds no songs.
        dirs[:] = [d for d in dirs if not d.startswith(".") and (Path(folder) / d).resolve() != exclude]
        # Hidden files are macOS "._x.wav" resource forks or our own temporary files, never songs.
        found += [
            Path(folder) / f for f in files if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS)
        ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def loud_span(audio: np.ndarray, sample_rate: int, level_db: float) -> tuple[int, int] | None:
    """``(start, end)`` samples of mono ``audio`` from the first to the last moment its level reaches ``level_db``.

    The level at a moment is the median frame level (as in ``median_level_db``) over the
    ``EDGE_WINDOW_SECONDS`` centred on it, so the span's edges fall where the music crosses the level, not up to
    half a window before or after. None if no moment reaches it.
    """
    audio = np.asarray(audio, dtype=np.float64)
    n_frames = 1 + (audio.size - FRAME) // HOP if audio.size >= FRAME else 0
    window = max(1, round(EDGE_WINDOW_SECONDS * sample_rate / HOP))
    if n_frames < window:  # shorter than one window: judged whole
        heard = audio.size > 0 and median_level_db(audio) >= level_db
        return (0, audio.size) if heard else None
    # Frame powers from a running sum of squares: the frames overlap fourfold, and a copy of them all would
    # take gigabytes for a long song.
    squares = np.concatenate([[0.0], np.cumsum(audio**2)])
    begins = np.arange(n_frames) * HOP
    power = (squares[begins + FRAME] - squares[begins]) / FRAME
    levels = power_db(np.maximum(power, 0.0))  # the running sums' rounding can dip just below 0
    medians = np.median(np.lib.stride_tricks.sliding_window_view(levels, window), axis=1)
    loud = np.flatnonzero(medians >= level_db)
    if loud.size == 0:
        return None
    # From a window's first sample to the middle of its middle frame. A song loud from its first (or to its
    # last) window keeps its whole edge: no moment there was judged quiet.
    centre = (window - 1) * HOP // 2 + FRAME // 2
    start = 0 if loud[0] == 0 else int(loud[0] * HOP + centre)
    end = audio.size if loud[-1] == medians.size - 1 else int(min(audio.size, loud[-1] * HOP + centre))
    return start, end


def _cached_span(cache_file: Path, sample_rate: int, level_db: float) -> tuple[int, int] | None:
    """``loud_span`` of a decoded song, kept in a small file beside it: a large corpus is rescanned at every
    start and resume, and finding the spans reads every sample (about 2 s an hour of audio)."""
    sidecar = cache_file.with_name(f"{cache_file.stem}.span{level_db:g}.json")
    try:
        saved = json.loads(sidecar.read_text())
        return None if saved is None else (int(saved[0]), int(saved[1]))
    except (OSError, ValueError, TypeError, IndexError):
        pass  # a miss, or a damaged entry found again
    span = loud_span(np.load(cache_file, mmap_mode="r"), sample_rate, level_db)
    try:
        atomic_write(sidecar, lambda tmp: tmp.write_text(json.dumps(span)), overwrite=True)
    except JukeboxError as err:  # a read-only cache still trains; it only finds the spans again next time
        logger.debug("cannot keep the span of %s: %s", cache_file, err)
    return span


def _decoded(path: Path, cache: Path, sample_rate: int) -> tuple[Path, int]:
    """(cache file, length) of ``path`` decoded to mono float32 at ``sample_rate``, decoding it if needed.

    Raises:
        AudioError, OSError: if the file cannot be read or decoded.
        TrainingError: if the cache cannot be written.
    """
    stat = path.stat()
    key = f"{_CACHE_VERSION}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{sample_rate}"
    target = cache / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"
    try:
        return target, int(np.load(target, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        pass  # a miss (or a damaged entry, decoded again)
    logger.debug("decoding %s into %s", path, target)
    length = [0]

    def write(tmp: Path) -> None:
        try:
            length[0] = _save_stream(tmp, path, sample_rate)
        except AudioError as err:  # some are OSErrors, which atomic_write would report as its own failure
            raise _Unreadable(err) from err

    try:
        # Atomic, so a crash never leaves a torn entry and ranks decoding the same file at once are safe.
        atomic_write(target, write, overwrite=True)
    except _Unreadable as wrapped:
        raise wrapped.error from None
    except OSError as err:
        raise TrainingError(f"Cannot write the decoded-audio cache in {cache}: {err}") from err
    return target, length[0]


class _Unreadable(Exception):
    """Carries the input's decode error through `atomic_write` (which would type an OSError as an output one)."""

    def __init__(self, error: AudioError) -> None:
        super().__init__(str(error))
        self.error = error


def _npy_header(n_samples: int) -> bytes:
    """The .npy header of a float32 vector of ``n_samples``: 128 bytes for any length up to 10**16."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
            "fortran_order": False,
            "shape": (n_samples,),
        },
    )
    return buffer.getvalue()


def _save_stream(tmp: Path, path: Path, sample_rate: int) -> int:
    """Decodes ``path`` block by block into the .npy file ``tmp``; returns its length in samples.

    Hours of audio cost one block of memory: the data goes to disk as it is decoded, and the header, whose
    length field is only known at the end, is written again once the stream has ended (same size).
    """
    placeholder = _npy_header(0)
    n_samples = 0
    with open(tmp, "wb") as handle:
        handle.write(placeholder)
        for block in stream_audio(path, sample_rate):
            handle.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            n_samples += len(block)
        header = _npy_header(n_samples)
        if len(header) != len(placeholder):  # unreachable below 10**16 samples; never write a torn file
            raise TrainingError(f"{path} is too long to cache ({n_samples} samples).")
        handle.seek(0)
        handle.write(header)
    return n_samples


def _metadata_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) per entry of a CSV (header row) or JSON-lines metadata file.

    Raises:
        ConfigError: an unknown file type, an unreadable file, a bad header, or a bad line (with its number).
    """
    kind = path.suffix.lower()
    if kind not in (".csv", ".jsonl", ".json"):
        raise ConfigError(f"Metadata file {path} must be a .csv, .jsonl or .json (one object per line) file.")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often start a CSV with a BOM
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read metadata file {path}: {err}") from err
    rows: list[tuple[int, dict]] = []
    if kind != ".csv":
        for line, raw in enumerate(text.split("\n"), start=1):
            try:
                row = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as err:
                raise ConfigError(
                    f"{path}, line {line}: bad JSON ({err.msg}); write one object per line."
                ) from err
            if not isinstance(row, dict):
                raise ConfigError(f"{path}, line {line}: expected a JSON object, got {type(row).__name__}.")
            rows += [(line, row)] if row else []
        return rows
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if "path" not in header or not set(header) & set(LABEL_KEYS):
            raise ConfigError(
                f"{path}, line 1: the header must name a 'path' column and at least one of "
                f"{', '.join(LABEL_KEYS)}; it is {','.join(header) or '(empty)'}."
            )
        start = reader.line_num + 1  # csv counts physical lines, and a quoted lyric may span several
        for cells in reader:
            line, start = start, reader.line_num + 1
            if len(cells) != len(header) and any(c.strip() for c in cells):
                raise ConfigError(
                    f"{path}, line {line}: {len(cells)} fields but the header has {len(header)}."
                )
            rows += [(line, dict(zip(header, cells, strict=True)))] if len(cells) == len(header) else []
    except csv.Error as err:
        raise ConfigError(f"{path}, line {reader.line_num}: {err}.") from err
    return rows


def _read_metadata(path: Path, root: Path) -> dict[Path, dict[str, str]]:
    """Labels per resolved audio path, from a metadata file whose paths are relative to ``root``.

    Raises:
        ConfigError: as ``_metadata_rows``; for a row without a path, a non-text label, a file labelled
            twice, or rows naming files that do not exist.
    """
    if not path.is_file():
        raise ConfigError(f"Metadata file {path} does not exist.")
    labels: dict[Path, dict[str, str]] = {}
    missing: list[str] = []
    for line, row in _metadata_rows(path):
        bad = [k for k in LABEL_KEYS if row.get(k) is not None and not isinstance(row[k], str)]
        if not isinstance(row.get("path"), str) or not row["path"].strip() or bad:
            what = f"'{bad[0]}' is not text" if bad else "the 'path' is missing or empty"
            raise ConfigError(f"{path}, line {line}: {what}.")
        target = (root / Path(row["path"].strip()).expanduser()).resolve()  # an absolute path replaces root
        if not target.is_file():
            missing.append(row["path"])
        elif target in labels:
            raise ConfigError(f"{path}, line {line}: {row['path']} is labelled a second time.")
        # An empty cell means "no label", the same as a song without a row.
        labels[target] = {k: (row[k] or "").strip() or _DEFAULTS[k] for k in LABEL_KEYS if k in row}
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ConfigError(
            f"{path} names {len(missing)} file(s) that do not exist under {root}: {', '.join(missing[:3])}{more}."
        )
    return labels


def _bucket(relative: str) -> int:
    return int(hashlib.sha1(relative.encode()).hexdigest(), 16) % _BUCKETS


def _assign_splits(relatives: list[str], held_out: float) -> list[str]:
    """The split of each song, by a hash of its relative path: adding songs never moves another song."""
    if len(relatives) == 1:
        return ["train"]  # a lone song is trained on; `AudioCorpus.split("eval")` reuses it
    buckets = [_bucket(r) for r in relatives]
    splits = ["eval" if b < held_out * _BUCKETS else "train" for b in buckets]
    if held_out > 0:
        # Keep both splits non-empty: the song nearest the threshold crosses it.
        if "eval" not in splits:
            splits[min(range(len(buckets)), key=lambda i: (buckets[i], relatives[i]))] = "eval"
        if "train" not in splits:
            splits[max(range(len(buckets)), key=lambda i: (buckets[i], relatives[i]))] = "train"
    return splits


class AudioCorpus:
    """The usable songs under a folder, decoded at the model's rate, and chunks of ``sample_length`` samples.

    Build one with ``AudioCorpus.scan``. Instances hold no open files, so they pickle into DataLoader workers.
    """

    def __init__(
        self,
        root: Path,
        songs: list[SongInfo],
        cache_files: list[Path],
        skipped: list[tuple[Path, str]],
        sample_rate: int,
        sample_length: int,
        held_out: float,
        min_level_db: float | None = None,
        trim_edges_db: float | None = None,
    ) -> None:
        self.root, self.songs, self.skipped = root, songs, skipped
        self.min_level_db, self.trim_edges_db = min_level_db, trim_edges_db
        self.sample_rate, self.sample_length = sample_rate, sample_length
        self._relatives = [s.path.relative_to(root).as_posix() for s in songs]
        self._cache_files = cache_files
        self._splits = {
            name: [i for i, s in enumerate(songs) if s.split == name] for name in ("train", "eval")
        }
        self.held_out = held_out
        # A lone song is trained on, and evaluated on too, rather than leaving nothing to train on.
        self.eval_is_train = held_out > 0 and len(songs) == 1

    @classmethod
    def scan(
        cls,
        root: str | Path,
        *,
        sample_rate: int,
        sample_length: int,
        metadata: str | Path | None = None,
        cache_dir: str | Path | None = None,
        held_out: float = 0.1,
        min_level_db: float | None = None,
        trim_edges_db: float | None = None,
        progress: ProgressCallback = noop,
    ) -> AudioCorpus:
        """Finds the audio files under ``root``, decodes the new or changed ones into the cache, and labels them.

        Args:
            root: the folder of songs, searched recursively (hidden folders and the cache are skipped).
            sample_rate: the model's rate in Hz; songs are decoded to mono at this rate.
            sample_length: samples per chunk; shorter songs are skipped.
            metadata: optional CSV or JSON-lines file with ``path`` and any of ``artist``, ``genre``, ``lyrics``.
            cache_dir: the cache root (default: ``cache_root()``); decoded songs go in its ``audio/`` folder.
            held_out: fraction of songs (by a hash of their path) held out for evaluation; 0 for none.
            min_level_db: training chunks whose median frame level (dBFS) is below this are drawn again
                (fade-ins, fade-outs, pauses); None keeps every chunk. Evaluation chunks are never skipped.
            trim_edges_db: each song is taken to start where its level (the median over
                ``EDGE_WINDOW_SECONDS``) first reaches this many dBFS and to end where it last does, in both
                splits: soft intros and fade-outs are left out, and a top prior's timing labels then say that
                a song starts and ends with its music (see ``loud_span``). Songs that never reach it, or whose
                span is shorter than a chunk, are skipped. None keeps every song whole.
            progress: receives a "decode" stage advanced once per file.

        Returns:
            The corpus; ``skipped`` lists the files left out and why.

        Raises:
            ConfigError: if ``root`` is not a folder, an argument is out of range, or the metadata is bad.
            TrainingError: if there are no audio files, none is usable, or the cache cannot be written.
        """
        for name, value in (("sample_rate", sample_rate), ("sample_length", sample_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not 0 <= held_out < 1:
            raise ConfigError(f"held_out must be a fraction in [0, 1), got {held_out!r}.")
        for name, value in (("min_level_db", min_level_db), ("trim_edges_db", trim_edges_db)):
            if value is not None and not -200 < value < 0:
                raise ConfigError(f"{name} must be a level in dBFS between -200 and 0, got {value!r}.")
        root = Path(root).expanduser()
        if not root.is_dir():
            state = "is not a folder" if root.exists() else "does not exist"
            raise ConfigError(f"The training data folder {root} {state}.")
        root = root.resolve()
        cache = cache_root(cache_dir).expanduser().resolve()
        files = _find_audio(root, exclude=cache)
        if not files:
            kinds = ", ".join(e.lstrip(".") for e in AUDIO_EXTENSIONS[:4])
            raise TrainingError(f"No audio files ({kinds}, ...) under {root}.")
        labels = _read_metadata(Path(metadata).expanduser(), root) if metadata is not None else {}

        kept: list[tuple[Path, Path, int, int, int]] = []  # file, cache, length, start, trimmed
        skipped: list[tuple[Path, str]] = []
        progress(StageStarted("decode", len(files), "file"))
        for path in files:
            try:
                cache_file, n_samples = _decoded(path, cache / "audio", sample_rate)
            except (AudioError, OSError) as err:
                # The path is already in `skipped`; the decoder's message repeats it in full.
                skipped.append((path, f"unreadable: {_first_line(err).replace(str(path), path.name)}"))
            else:
                start, end = 0, n_samples
                if trim_edges_db is not None and n_samples >= sample_length:
                    start, end = _cached_span(cache_file, sample_rate, trim_edges_db) or (0, 0)
                if n_samples < sample_length:
                    reason = (
                        f"too short: {n_samples / sample_rate:.2f} s < {sample_length / sample_rate:.2f} s"
                    )
                    skipped.append((path, reason))
                elif end - start < sample_length:
                    loud = f"{(end - start) / sample_rate:.2f} s" if end else "nothing"
                    skipped.append((path, f"too quiet: {loud} reaches {trim_edges_db:g} dBFS"))
                else:
                    kept.append((path, cache_file, end - start, start, n_samples - (end - start)))
            progress(Advanced("decode"))
        progress(StageFinished("decode"))
        if not kept:
            reasons = "; ".join(f"{p.relative_to(root)}: {why.rstrip('.')}" for p, why in skipped[:3])
            more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
            raise TrainingError(
                f"None of the {len(files)} audio files under {root} is usable: {reasons}{more}."
            )

        relatives = [p.relative_to(root).as_posix() for p, *_ in kept]
        splits = _assign_splits(relatives, held_out)
        songs = []
        for (path, _, n, start, trimmed), split in zip(kept, splits, strict=True):
            names = {**_DEFAULTS, **labels.get(path.resolve(), {})}
            songs.append(SongInfo(path=path, n_samples=n, split=split, start=start, trimmed=trimmed, **names))
        return cls(root, songs, [c for _, c, *_ in kept], skipped, sample_rate, sample_length, held_out,
                   min_level_db, trim_edges_db)  # fmt: skip

    def split(self, name: str) -> list[int]:
        """Indices into ``songs`` of split ``name`` ("train" or "eval").

        A lone song is in "train" and, unless ``held_out`` was 0, also stands in for "eval".

        Raises:
            ConfigError: for another split name.
        """
        if name not in self._splits:
            raise ConfigError(f"Unknown split {name!r}; use 'train' or 'eval'.")
        if name == "eval" and self.eval_is_train:
            return [0]
        return list(self._splits[name])

    def chunk(self, song: int, offset: int) -> Chunk:
        """``sample_length`` samples of song ``song`` from sample ``offset``, read from the cache by memory map.

        Raises:
            ConfigError: if ``song`` or the span is out of range.
            TrainingError: if the song's cache file has gone (the cache was cleared during training).
        """
        if not 0 <= song < len(self.songs):
            raise ConfigError(f"Song index {song} is out of range (the corpus has {len(self.songs)} songs).")
        info = self.songs[song]
        if not 0 <= offset <= info.n_samples - self.sample_length:
            raise ConfigError(
                f"Offset {offset} is out of range for {info.path} ({info.n_samples} samples, "
                f"chunks of {self.sample_length})."
            )
        try:
            # Opened per chunk: a memory map holds a file descriptor, and corpora can have more songs than
            # the process may open files.
            samples = np.load(self._cache_files[song], mmap_mode="r")
            begin = info.start + offset
            audio = np.array(samples[begin : begin + self.sample_length], dtype=np.float32)
        except (OSError, ValueError) as err:
            raise TrainingError(
                f"The decoded copy of {info.path} is gone or damaged ({_first_line(err)}); scan the data again."
            ) from err
        return Chunk(
            torch.from_numpy(audio), song, offset, info.n_samples, info.artist, info.genre, info.lyrics
        )

    def sample_batch(
        self, split: str, batch_size: int, *, seed: int, step: int, rank: int = 0
    ) -> list[Chunk]:
        """Random chunks: songs drawn in proportion to their length, offsets uniform within the song.

        A pure function of its arguments (no iterator state), so a resumed run redraws the same batches and
        ranks draw different ones. Drawing by length is what the original's end-to-end layout amounts to.
        With ``min_level_db`` set, a quiet training chunk is replaced by a fresh draw (song and offset).

        Args:
            split: "train" or "eval".
            batch_size: number of chunks.
            seed: the run's seed.
            step: the optimizer step (or micro-step) the batch is for.
            rank: the distributed rank.

        Returns:
            ``batch_size`` chunks of exactly ``sample_length`` samples.

        Raises:
            ConfigError: for an unknown split or a batch size below 1.
            TrainingError: if the split has no songs.
        """
        indices = self.split(split)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        if not indices:
            raise TrainingError(f"The {split} split has no songs (held_out={self.held_out}).")
        # Masking to 64 bits lets any int seed through: SeedSequence takes only non-negative entropy.
        entropy = [v % 2**64 for v in (seed, step, rank, ("train", "eval").index(split), batch_size)]
        rng = np.random.default_rng(entropy)
        lengths = np.array([self.songs[i].n_samples for i in indices], dtype=np.float64)
        probabilities = lengths / lengths.sum()
        redraws = _QUIET_REDRAWS if self.min_level_db is not None and split == "train" else 0

        def draw() -> Chunk:
            song = indices[int(rng.choice(len(indices), p=probabilities))]
            offset = int(rng.integers(0, self.songs[song].n_samples - self.sample_length + 1))
            return self.chunk(song, offset)

        if not redraws:  # the original order of random draws, so runs without the option keep their batches
            picks = rng.choice(len(indices), size=batch_size, p=probabilities)
            chunks = []
            for pick in picks:
                song = indices[int(pick)]
                offset = int(rng.integers(0, self.songs[song].n_samples - self.sample_length + 1))
                chunks.append(self.chunk(song, offset))
            return chunks
        chunks = []
        for _ in range(batch_size):
            chunk = draw()
            for _ in range(redraws):
                if median_level_db(chunk.audio.numpy()) >= self.min_level_db:
                    break
                chunk = draw()
            chunks.append(chunk)
        return chunks

    def eval_chunks(self, n: int) -> list[Chunk]:
        """``n`` fixed chunks evenly spaced over the eval songs laid end to end, for repeatable metrics.

        Args:
            n: number of chunks.

        Returns:
            The chunks, in song order; an empty list if there are no eval songs (``held_out=0``).
        """
        indices = self.split("eval")
        if n <= 0 or not indices:
            return []
        # Positions where a full chunk starts, song after song; chunk k sits at the middle of the k-th n-th.
        starts = [self.songs[i].n_samples - self.sample_length + 1 for i in indices]
        bounds = np.cumsum([0, *starts])
        chunks = []
        for k in range(n):
            position = int((k + 0.5) * bounds[-1] / n)
            j = int(np.searchsorted(bounds, position, side="right")) - 1
            chunks.append(self.chunk(indices[j], position - int(bounds[j])))
        return chunks

    def fingerprint(self) -> str:
        """A hash of the songs (relative path, length, labels, split) and the chunk shape: equal corpora match."""
        rows = [
            [rel, s.n_samples, s.artist, s.genre, s.lyrics, s.split]
            for rel, s in zip(self._relatives, self.songs, strict=True)
        ]
        shape = [self.sample_rate, self.sample_length]
        if self.min_level_db is not None:  # only then, so that fingerprints of earlier runs stay as they were
            shape.append(self.min_level_db)
        if self.trim_edges_db is not None:  # a song's span is what its length and offsets count within
            shape.append({"trim_edges_db": self.trim_edges_db, "starts": [s.start for s in self.songs]})
        payload = json.dumps([*shape, rows], ensure_ascii=False)
        return hashlib.sha1(payload.encode()).hexdigest()

    def describe(self) -> dict:
        """A JSON-friendly summary: song counts and hours per split, label counts, skipped files by reason."""

        def summary(name: str) -> dict:
            samples = sum(self.songs[i].n_samples for i in self.split(name))
            return {"songs": len(self.split(name)), "hours": round(samples / self.sample_rate / 3600, 4)}

        return {
            "root": str(self.root),
            "sample_rate": self.sample_rate,
            "sample_length": self.sample_length,
            "min_level_db": self.min_level_db,
            "trim_edges_db": self.trim_edges_db,
            "trimmed": {
                "songs": sum(s.trimmed > 0 for s in self.songs),
                "hours": round(sum(s.trimmed for s in self.songs) / self.sample_rate / 3600, 4),
            },
            "songs": len(self.songs),
            "train": summary("train"),
            # A lone song is trained and evaluated on; the CLI should say so.
            "eval": {**summary("eval"), "same_as_train": self.eval_is_train},
            "artists": len({s.artist for s in self.songs}),
            "genres": len({s.genre for s in self.songs}),
            "with_lyrics": sum(bool(s.lyrics) for s in self.songs),
            # Counts only: a corpus can skip thousands of files, and `skipped` has each one with its reason.
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(Counter(why.split(":")[0] for _, why in self.skipped)),
            "fingerprint": self.fingerprint(),
        }
