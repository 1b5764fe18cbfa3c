"""Streaming STFT framing and frame pooling: per-frame features of audio that arrives block by block.

A centred STFT of a whole signal pads it by ``n_fft // 2`` on each side and cuts frames every ``hop``
samples. `FrameStream` cuts the same frames from a signal that arrives in blocks, so an STFT with
``center=False`` of each segment it returns gives, frame for frame, the whole-signal STFT; memory holds
one block plus one frame. `FramePool` averages frames into at most a fixed number of columns, so a figure
of two hours costs what a figure of one minute does.
"""

from __future__ import annotations

import numpy as np

from jukebox_cli.engine.errors import ConfigError

PAD_MODES = ("constant", "reflect")  # librosa's centre padding, torch's (and so the metrics')


class FrameStream:
    """Cuts a signal ``[..., T]`` arriving in blocks into the frames of a centred STFT.

    ``hold`` samples are gathered before the first segment is returned, so a caller can treat a signal
    shorter than that differently (``started`` stays False until then).
    """

    def __init__(self, n_fft: int, hop: int, pad_mode: str = "constant", *, hold: int = 0) -> None:
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
        if n_fft < 2 or hop < 1:
            raise ConfigError(f"n_fft must be >= 2 and hop >= 1, got {n_fft} and {hop}.")
        self.n_fft, self.hop, self.pad_mode = n_fft, hop, pad_mode
        self._pad = n_fft // 2
        # Reflect padding mirrors the first and last pad + 1 samples, so those must be there.
        self._hold = max(hold, self._pad + 1 if pad_mode == "reflect" else 1)
        self._head: list[np.ndarray] = []  # blocks before the stream has started
        self._buffer: np.ndarray | None = None  # padded signal from padded index `_buffer_start` on
        self._buffer_start = 0
        self._tail: np.ndarray | None = None  # the last pad + 1 samples, for the right reflection
        self._next = 0  # next frame to emit
        self.n_samples = 0
        self.started = False

    def push(self, block: np.ndarray) -> np.ndarray | None:
        """Adds samples; returns the segment holding every frame now complete, or None."""
        block = np.asarray(block, dtype=np.float32)
        if block.shape[-1] == 0:
            return None
        self.n_samples += block.shape[-1]
        if self.pad_mode == "reflect":
            tail = block if self._tail is None else np.concatenate([self._tail, block], axis=-1)
            self._tail = tail[..., -(self._pad + 1) :]
        if not self.started:
            self._head.append(block)
            if self.n_samples < self._hold:
                return None
            self._start()
            return self._emit()
        assert self._buffer is not None
        self._buffer = np.concatenate([self._buffer, block], axis=-1)
        return self._emit()

    def finish(self) -> np.ndarray | None:
        """Pads the end; returns the segment with the remaining frames (None if nothing was pushed).

        Raises:
            ConfigError: reflect padding of a signal no longer than ``n_fft // 2``.
        """
        if self.n_samples == 0:
            return None
        if not self.started:
            if self.pad_mode == "reflect" and self.n_samples <= self._pad:
                raise ConfigError(
                    f"Audio of {self.n_samples} samples is too short for an STFT with n_fft {self.n_fft}; "
                    f"need more than {self._pad}."
                )
            self._start()
        assert self._buffer is not None
        if self.pad_mode == "constant":
            right = np.zeros((*self._buffer.shape[:-1], self._pad), dtype=np.float32)
        else:
            assert self._tail is not None
            right = self._tail[..., :-1][..., ::-1]
        self._buffer = np.concatenate([self._buffer, right], axis=-1)
        return self._emit()

    def head(self) -> np.ndarray:
        """The samples gathered before the stream started (all of a signal shorter than ``hold``)."""
        return np.concatenate(self._head, axis=-1)

    def _start(self) -> None:
        head = self.head()
        if self.pad_mode == "constant":
            left = np.zeros((*head.shape[:-1], self._pad), dtype=np.float32)
        else:
            left = head[..., 1 : self._pad + 1][..., ::-1]
        self._buffer = np.concatenate([left, head], axis=-1)
        self._head = []
        self.started = True

    def _emit(self) -> np.ndarray | None:
        assert self._buffer is not None
        available = self._buffer_start + self._buffer.shape[-1]
        if available < self.n_fft:
            return None
        end = (available - self.n_fft) // self.hop + 1  # frames k < end lie wholly inside the buffer
        if end <= self._next:
            return None
        lo = self._next * self.hop - self._buffer_start
        segment = self._buffer[..., lo : (end - 1) * self.hop + self.n_fft - self._buffer_start]
        self._buffer = self._buffer[..., end * self.hop - self._buffer_start :]
        self._buffer_start = end * self.hop
        self._next = end
        return segment


class FramePool:
    """Averages frames ``[F, n]`` into columns of ``pool`` frames, doubling ``pool`` to stay under a limit.

    While there are at most ``max_columns`` frames, a column is one frame, exactly. Past that, pairs of
    columns merge whenever their count would exceed ``2 * max_columns``, so between ``max_columns`` and
    ``2 * max_columns`` columns remain, each the mean of ``pool`` consecutive frames (the last of fewer).
    """

    def __init__(self, max_columns: int) -> None:
        if max_columns < 1:
            raise ConfigError(f"max_columns must be at least 1, got {max_columns}.")
        self.max_columns = max_columns
        self.pool = 1
        self._columns: list[np.ndarray] = []  # full columns, each [F, k] of sums of `pool` frames
        self._n_full = 0
        self._partial: np.ndarray | None = None  # [F] sum of the frames of the unfinished column
        self._partial_count = 0

    def push(self, frames: np.ndarray) -> None:
        """Adds frames ``[F, n]`` (float, in time order)."""
        frames = np.asarray(frames, dtype=np.float64)
        i, n = 0, frames.shape[-1]
        while i < n:
            if self._partial_count:
                take = min(self.pool - self._partial_count, n - i)
                assert self._partial is not None
                self._partial += frames[:, i : i + take].sum(axis=1)
                self._partial_count += take
                i += take
                if self._partial_count == self.pool:
                    self._add_columns(self._partial[:, None])
                    self._partial, self._partial_count = None, 0
                continue
            n_full = min((n - i) // self.pool, 2 * self.max_columns - self._n_full)
            if n_full:
                block = frames[:, i : i + n_full * self.pool]
                i += n_full * self.pool  # before `_add_columns`, which may double the pool
                self._add_columns(block.reshape(block.shape[0], n_full, -1).sum(axis=2))
            elif n - i < self.pool:
                self._partial = frames[:, i:].sum(axis=1)
                self._partial_count = n - i
                i = n

    def result(self) -> np.ndarray:
        """The columns ``[F, C]``: the mean of each column's frames."""
        parts = [np.concatenate(self._columns, axis=1) / self.pool] if self._columns else []
        if self._partial_count:
            assert self._partial is not None
            parts.append((self._partial / self._partial_count)[:, None])
        if not parts:
            return np.zeros((0, 0))
        return np.concatenate(parts, axis=1)

    def _add_columns(self, sums: np.ndarray) -> None:
        self._columns.append(sums)
        self._n_full += sums.shape[1]
        if self._n_full >= 2 * self.max_columns:
            full = np.concatenate(self._columns, axis=1)  # (F, 2 * max_columns): an even count
            self._columns = [full[:, 0::2] + full[:, 1::2]]
            self._n_full = full.shape[1] // 2
            self.pool *= 2
