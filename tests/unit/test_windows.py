"""Windows of the sampling cascade: lengths and window counts of the released models, and resuming."""

from __future__ import annotations

import pytest

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.sampling.windows import (
    Window,
    partial_window,
    plan_level,
    sample_length,
    seconds_for,
    window_advance,
    window_offset,
    window_starts,
)

SR = 44_100
# (n_ctx, hop_fraction, hop_length) of the released models.
TOP_5B = (8192, 0.125, 128)
TOP_1B = (6144, 0.125, 128)
LEVEL_1 = (8192, 0.5, 32)
LEVEL_0 = (8192, 0.5, 8)


def _plan(seconds: float, level: tuple[int, float, int], n_existing: int = 0) -> list[Window]:
    n_ctx, fraction, hop_length = level
    total = sample_length(seconds, SR, 128) // hop_length
    return plan_level(total, n_existing, n_ctx, window_advance(fraction, n_ctx))


def _check_cover(windows: list[Window], total: int, n_existing: int, n_ctx: int) -> None:
    """New positions are exactly [n_existing, total), in order, each window within one context."""
    position = n_existing
    for w in windows:
        assert w.end - w.start <= n_ctx
        assert w.end - w.start == w.n_context + w.n_new
        assert w.new_start == position, "each window appends right after the known codes"
        position = w.end
    assert position == max(total, n_existing)


# ---- lengths -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"), [(20, 881_920), (60, 2_645_888), (180, 7_937_920), (0, 0), (0.001, 0)]
)
def test_sample_length_rounds_down_to_the_top_hop(seconds: float, expected: int) -> None:
    assert sample_length(seconds, SR, 128) == expected


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_sample_length_refuses_bad_durations(seconds: float) -> None:
    with pytest.raises(ConfigError):
        sample_length(seconds, SR, 128)


def test_seconds_for_reads_back_as_the_same_length() -> None:
    """``n * 128 / 44100`` seconds reads back a code short for 7 % of the lengths (15 codes is the first)."""
    assert sample_length(15 * 128 / SR, SR, 128) == 14 * 128  # what the plain quotient gives
    for rate in (SR, 22_050):
        for codes in range(1, 20_000):
            assert sample_length(seconds_for(codes * 128, rate), rate, 128) == codes * 128


def test_window_advance_truncates_like_the_original_and_refuses_bad_fractions() -> None:
    assert window_advance(0.125, 8192) == 1024
    assert window_advance(0.125, 6144) == 768
    assert window_advance(0.5, 8192) == 4096
    for fraction in (0.0, -0.5, 1.5, 1e-6):
        with pytest.raises(ConfigError):
            window_advance(fraction, 8192)


def test_window_offset_is_in_audio_samples() -> None:
    assert window_offset(0, 128) == 0
    assert window_offset(746, 128) == 746 * 128
    assert window_offset(4096, 8, metadata_offset=44_100) == 44_100 + 4096 * 8


# ---- window counts of the released models, as the original's sample.py plans them --------------------------


def test_20_seconds_matches_the_released_window_counts() -> None:
    top_5b = _plan(20, TOP_5B)
    assert top_5b == [Window(0, 6890, 0, 6890)], "one partial window from 0"

    assert window_starts(6890, 6144, 768) == [0, 746]
    top_1b = _plan(20, TOP_1B)
    assert [w.start for w in top_1b] == [0, 746]
    assert top_1b[1] == Window(746, 6890, 6144 - 746, 746)

    level_1 = _plan(20, LEVEL_1)
    assert len(level_1) == 6 and level_1[-1].start == 19_368 and level_1[-1].end == 27_560
    assert len(_plan(20, LEVEL_0)) == 26
    _check_cover(_plan(20, LEVEL_0), 110_240, 0, 8192)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(20, (1, 2, 6, 26)), (60, (14, 20, 20, 80)), (180, (54, 74, 60, 242))],
)
def test_window_counts_match_the_released_models(seconds: float, expected: tuple[int, ...]) -> None:
    counts = tuple(len(_plan(seconds, level)) for level in (TOP_5B, TOP_1B, LEVEL_1, LEVEL_0))
    assert counts == expected


def test_window_starts_are_right_aligned() -> None:
    assert window_starts(8192, 8192, 4096) == [0]
    assert window_starts(27_560, 8192, 4096) == [0, 4096, 8192, 12_288, 16_384, 19_368]
    # total - n_ctx is itself a multiple of the hop: no duplicate start.
    assert window_starts(8192 + 4096, 8192, 4096) == [0, 4096]
    with pytest.raises(ConfigError, match="partial window"):
        window_starts(6890, 8192, 1024)


def test_upsampler_windows_reread_half_and_sample_half() -> None:
    level_0 = _plan(60, LEVEL_0)
    assert level_0[0] == Window(0, 8192, 0, 8192)
    assert all(w.n_context == 4096 and w.n_new == 4096 for w in level_0[1:-1])
    assert level_0[-1].n_new < 4096, "the last, right-aligned window samples fewer"
    top = _plan(60, TOP_5B)
    assert all(w.n_context == 7168 and w.n_new == 1024 for w in top[1:-1])


# ---- invariants --------------------------------------------------------------------------------------------

CASES = [
    # (total, n_ctx, hop)
    (6890, 8192, 1024),
    (6890, 6144, 768),
    (20_671, 8192, 1024),
    (27_560, 8192, 4096),
    (110_240, 8192, 4096),
    (100, 10, 3),
    (100, 10, 10),
    (10, 10, 1),
    (37, 8, 5),
]


@pytest.mark.parametrize(("total", "n_ctx", "hop"), CASES)
def test_new_positions_cover_the_rest_exactly_once(total: int, n_ctx: int, hop: int) -> None:
    for n_existing in sorted({0, 1, hop, n_ctx - 1, n_ctx, total // 2, total - 1, total, total + 5}):
        windows = plan_level(total, n_existing, n_ctx, hop)
        _check_cover(windows, total, n_existing, n_ctx)
        assert sum(w.n_new for w in windows) == max(total - n_existing, 0)


@pytest.mark.parametrize(("total", "n_ctx", "hop"), CASES)
def test_resuming_after_k_windows_gives_the_tail_of_the_plan(total: int, n_ctx: int, hop: int) -> None:
    for n_existing in (0, min(n_ctx + 1, total)):
        full = plan_level(total, n_existing, n_ctx, hop)
        for k in range(1, len(full) + 1):
            assert plan_level(total, full[k - 1].end, n_ctx, hop) == full[k:]


def test_continuing_from_a_prompt_skips_windows_inside_it() -> None:
    total, n_ctx, hop = 27_560, 8192, 4096
    full_starts = window_starts(total, n_ctx, hop)
    prompt = 12_288 + 8192  # windows at 0, 4096, 8192 and 12288 lie inside the prompt
    windows = plan_level(total, prompt, n_ctx, hop)
    assert [w.start for w in windows] == [s for s in full_starts if s + n_ctx > prompt] == [16_384, 19_368]
    assert windows[0] == Window(16_384, 24_576, prompt - 16_384, 24_576 - prompt)
    # A prompt ending inside a window: that window re-reads the prompt's tail as context.
    windows = plan_level(total, 10_000, n_ctx, hop)
    assert windows[0] == Window(4096, 12_288, 10_000 - 4096, 12_288 - 10_000)


def test_partial_window_rule() -> None:
    # Fits in one context: start at 0 and re-read everything.
    assert partial_window(1000, 2000, 8192) == Window(0, 3000, 1000, 2000)
    # Does not fit: a full window ending at the new end.
    assert partial_window(8000, 1024, 8192) == Window(8000 + 1024 - 8192, 9024, 8192 - 1024, 1024)
    # Continuing a short top level from a prompt samples only what is missing.
    assert plan_level(6890, 2000, 8192, 1024) == [Window(0, 6890, 2000, 4890)]
    for bad in (0, 8193):
        with pytest.raises(ConfigError):
            partial_window(0, bad, 8192)


def test_bad_arguments_are_config_errors() -> None:
    for args in [(100, 0, 10, 0), (100, 0, 10, 11), (100, -1, 10, 5), (-1, 0, 10, 5), (100, 0, 0, 1)]:
        with pytest.raises(ConfigError):
            plan_level(*args)
