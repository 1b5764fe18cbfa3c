"""Which windows sampling a level runs: lengths, window starts, partial windows and label offsets.

Pure integer logic (no torch), following the original's ``sample.py`` loop (docs/ARCHITECTURE.md describes
the window scheme): the level's codes are one growing sequence; each window covers ``[start, end)``, re-reads
the codes already present there as context and samples the rest, which are appended. A window with nothing new
to sample is skipped, which is how continuing from a prompt (or resuming a run) skips finished windows.

Two kinds of "hop" appear here, as in the original: the *window advance* of a level, in codes
(``int(hop_fraction * n_ctx)``), and a level's ``hop_length`` (raw_to_tokens: audio samples per code:
8, 32, 128).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jukebox_cli.engine.errors import ConfigError

# ---- lengths -----------------------------------------------------------------------------------------------


def sample_length(seconds: float, sample_rate: int, top_hop: int) -> int:
    """Audio samples to generate: ``floor(seconds * sample_rate / top_hop) * top_hop``.

    Computed as the original does, ``int(seconds * sr) // top_hop * top_hop``, so 20 s at 44.1 kHz with a top
    hop of 128 gives 881,920 samples (19.998 s).

    Args:
        seconds: Requested duration; must be finite and non-negative.
        sample_rate: Audio samples per second (44,100 for the released models).
        top_hop: Audio samples per code of the top level (128).

    Returns:
        The length in samples, a multiple of ``top_hop`` (0 when ``seconds`` is shorter than one top code).

    Raises:
        ConfigError: a negative or non-finite duration, or a non-positive rate or hop.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"The duration must be a finite, non-negative number of seconds, got {seconds}.")
    if sample_rate < 1 or top_hop < 1:
        raise ConfigError(f"sample_rate and top_hop must be positive, got {sample_rate} and {top_hop}.")
    return int(seconds * sample_rate) // top_hop * top_hop


def seconds_for(samples: int, sample_rate: int) -> float:
    """A length in samples as the duration :func:`sample_length` reads back as exactly that length (a multiple
    of the top hop): ``samples / sample_rate`` alone may come back a code short, as float rounding can put
    ``seconds * sample_rate`` just under the whole number, which ``int`` then truncates."""
    return (samples + 0.5) / sample_rate


def window_advance(hop_fraction: float, n_ctx: int) -> int:
    """A level's window advance in codes: ``int(hop_fraction * n_ctx)``, truncated as the original does.

    Raises:
        ConfigError: the advance is not in ``[1, n_ctx]`` (a hop_fraction outside ``(0, 1]``, or too small).
    """
    if n_ctx < 1:
        raise ConfigError(f"n_ctx must be positive, got {n_ctx}.")
    hop = int(hop_fraction * n_ctx)
    if not 1 <= hop <= n_ctx:
        raise ConfigError(
            f"hop_fraction {hop_fraction} gives a window advance of {hop} codes for n_ctx {n_ctx}; "
            f"it must be between 1 and n_ctx (a hop_fraction in (0, 1])."
        )
    return hop


def window_offset(start: int, hop_length: int, metadata_offset: int = 0) -> int:
    """The label offset of a window starting at code ``start``, in audio samples.

    Args:
        start: The window's first code at its level.
        hop_length: Audio samples per code of the level (8, 32 or 128).
        metadata_offset: The offset in the metadata (0 when sampling from the start of a song).

    Returns:
        ``metadata_offset + start * hop_length``.
    """
    if start < 0 or hop_length < 1 or metadata_offset < 0:
        raise ConfigError(
            f"Invalid window offset inputs: start {start}, hop_length {hop_length}, offset {metadata_offset}."
        )
    return metadata_offset + start * hop_length


# ---- windows -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One window of a level: sample codes ``[start, end)``.

    Attributes:
        start: The first code of the window (its context starts here).
        end: One past the last code; ``end - start <= n_ctx``.
        n_context: Codes of ``[start, end)`` already present when the window runs (the prior's prefix).
        n_new: Codes the window samples, positions ``[start + n_context, end)``.
    """

    start: int
    end: int
    n_context: int
    n_new: int

    def __post_init__(self) -> None:
        assert 0 <= self.start <= self.end, self
        assert self.n_context >= 0 and self.n_new > 0, self
        assert self.end - self.start == self.n_context + self.n_new, self

    @property
    def new_start(self) -> int:
        """The first position this window samples."""
        return self.start + self.n_context


def _check_level(total: int, n_existing: int, n_ctx: int, hop: int) -> None:
    if n_ctx < 1:
        raise ConfigError(f"n_ctx must be positive, got {n_ctx}.")
    if not 1 <= hop <= n_ctx:
        raise ConfigError(f"The window advance must be between 1 and n_ctx ({n_ctx}), got {hop}.")
    if total < 0 or n_existing < 0:
        raise ConfigError(f"Code counts must be non-negative, got total {total} and existing {n_existing}.")


def window_starts(total: int, n_ctx: int, hop: int) -> list[int]:
    """The window starts of a level with ``total >= n_ctx`` codes.

    Starts are 0, hop, 2 hop, ... for every start below ``total - n_ctx + hop``; the one start whose window
    would reach or pass the end is replaced by ``total - n_ctx``, so the last window ends exactly at
    ``total``.

    Args:
        total: Codes of the level (sample_length / hop_length).
        n_ctx: The prior's context length in codes.
        hop: The window advance in codes (``window_advance``).

    Raises:
        ConfigError: ``total < n_ctx`` (use ``plan_level``, which takes a partial window), or a bad ``hop``.
    """
    _check_level(total, 0, n_ctx, hop)
    if total < n_ctx:
        raise ConfigError(
            f"A level of {total} codes is shorter than one window ({n_ctx}); "
            "it is sampled as a partial window."
        )
    return [min(start, total - n_ctx) for start in range(0, total - n_ctx + hop, hop)]


def partial_window(n_existing: int, tokens_to_sample: int, n_ctx: int) -> Window:
    """The window that adds ``tokens_to_sample`` codes after ``n_existing`` ones.

    If everything fits in one context the window starts at 0 and re-reads all existing codes; otherwise it is
    a full window of ``n_ctx`` ending at the new end (the notebook's co-composer extends a song this way).

    Raises:
        ConfigError: ``tokens_to_sample`` is not in ``[1, n_ctx]`` or ``n_existing`` is negative.
    """
    if n_existing < 0 or not 1 <= tokens_to_sample <= n_ctx:
        raise ConfigError(
            f"A partial window samples 1 to n_ctx ({n_ctx}) codes after n_existing >= 0 codes, "
            f"got {tokens_to_sample} after {n_existing}."
        )
    if n_existing < n_ctx - tokens_to_sample:
        return Window(0, n_existing + tokens_to_sample, n_existing, tokens_to_sample)
    start = n_existing - n_ctx + tokens_to_sample
    return Window(start, start + n_ctx, n_ctx - tokens_to_sample, tokens_to_sample)


def plan_level(total: int, n_existing: int, n_ctx: int, hop: int) -> list[Window]:
    """The windows that sampling a level from ``n_existing`` known codes up to ``total`` codes runs, in order.

    Follows the original's loop: for ``total >= n_ctx`` every start of ``window_starts`` is visited and the
    windows with nothing new are skipped; for ``total < n_ctx`` one ``partial_window`` samples
    ``total - n_existing`` codes. (The original passes ``total`` itself as the count, which only agrees when
    nothing exists yet; with existing codes it would overshoot ``total``.) A window's ``n_context`` counts the
    codes present when it runs, including those of earlier windows of the plan. The plan from the codes left
    after k windows is the tail of the full plan, which is what resuming a run relies on.

    Args:
        total: Codes the level should have at the end.
        n_existing: Codes already known (a prompt, a continued file, or a resumed run); none are replaced.
        n_ctx: The prior's context length in codes.
        hop: The window advance in codes.

    Returns:
        The windows to run; empty when ``n_existing >= total``. Their new positions together are exactly
        ``[n_existing, total)``, each window's ``end - start <= n_ctx``.
    """
    _check_level(total, n_existing, n_ctx, hop)
    if n_existing >= total:
        return []
    if total < n_ctx:
        return [partial_window(n_existing, total - n_existing, n_ctx)]
    windows = []
    present = n_existing
    for start in window_starts(total, n_ctx, hop):
        end = start + n_ctx
        n_context = min(max(present - start, 0), n_ctx)
        if end - start - n_context <= 0:
            continue
        # hop <= n_ctx keeps windows overlapping, so a window that samples always starts at or before the end
        # of the known codes and its new codes are appended right after them.
        assert start <= present, (start, present)
        windows.append(Window(start, end, n_context, end - start - n_context))
        present = end
    return windows
