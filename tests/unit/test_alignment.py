"""Lyric alignment: the per-window attention, its assembly over a song, word timings, files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jukebox_cli.engine.audio.plots import plot_alignment
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.labels import Labeller
from jukebox_cli.engine.models.presets import prior_config
from jukebox_cli.engine.sampling.alignment import (
    alignment_layer_head,
    alignment_starts,
    song_alignment,
    window_alignment,
    word_timings,
    write_alignment,
)

LYRICS = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def prior():
    return build_prior("tiny_1b_lyrics", seed=3).eval()


def _window_labels(prior, tokens: list[int], total_length: int):
    c = prior.config
    labeller = Labeller(c.label_set, c.max_genres, c.n_tokens)

    def at(start: int):
        offset = start * c.hop_length
        vector = labeller.label_vector(1, [2], tokens, total_length=total_length, offset=offset,
                                       length=c.window_samples)  # fmt: skip
        indices = labeller.lyric_window(tokens, total_length, offset, c.window_samples)[1]
        return torch.tensor([vector]), [indices]

    return at


def test_the_alignment_layer_is_a_lyric_layer() -> None:
    c = prior_config("tiny_1b_lyrics")
    assert alignment_layer_head(c) == (c.alignment_layer, c.alignment_head)
    # Unset (a model trained here): the last lyric-attention layer, head 0.
    unset = dataclasses.replace(c, alignment_layer=None, alignment_head=None)
    assert alignment_layer_head(unset) == (4, 0)
    with pytest.raises(ConfigError, match="not a lyric-attention layer"):
        alignment_layer_head(dataclasses.replace(c, alignment_layer=0))
    with pytest.raises(ConfigError, match="no lyrics"):
        alignment_layer_head(prior_config("tiny_5b"))


def test_window_alignment_rows_are_attention_over_the_lyrics(prior) -> None:
    c = prior.config
    codes = torch.randint(c.codebook_size, (2, c.n_ctx), generator=torch.Generator().manual_seed(0))
    at = _window_labels(prior, list(range(1, 30)), 10 * c.window_samples)
    labels = torch.cat([at(0)[0], at(0)[0]])
    block = window_alignment(prior, codes, labels)
    assert block.shape == (2, c.n_ctx, c.n_tokens) and block.dtype == torch.float32
    # Music queries also attend to music keys inside the prime range: at most 1 over the lyrics, never 0.
    sums = block.sum(-1)
    assert (sums <= 1 + 1e-5).all() and (sums > 0).all()
    assert not torch.allclose(block[0], block[1])  # different codes, different attention
    assert prior.prior.transformer.attention(c.alignment_layer).recorded is None  # recording is switched off


def test_song_alignment_places_windows_at_their_lyric_indices(prior) -> None:
    c = prior.config
    hop = c.n_ctx // 2
    total = 3 * c.n_ctx + 17  # the last window is pulled back to end at the last code
    tokens = list(range(1, 41))
    at = _window_labels(prior, tokens, total * c.hop_length)
    codes = torch.randint(c.codebook_size, (1, total), generator=torch.Generator().manual_seed(1))
    seen = []
    (matrix,) = song_alignment(prior, codes, at, [len(tokens)], hop, on_window=lambda: seen.append(1))
    starts = alignment_starts(total, c.n_ctx, hop)
    assert matrix.shape == (total, len(tokens)) and len(seen) == len(starts) and starts[-1] == total - c.n_ctx
    # Where windows overlap the earlier one wins: the first window's block is intact at its own indices.
    first = window_alignment(prior, codes[:, : c.n_ctx], at(0)[0])[0].numpy()
    np.testing.assert_allclose(matrix[: c.n_ctx][:, at(0)[1][0]], first, atol=1e-6)
    # Outside a window's lyric indices its rows are zero.
    outside = np.setdiff1d(np.arange(len(tokens)), at(0)[1][0])
    assert not matrix[:hop][:, outside].any()
    # The last window owns the rows no earlier window reaches.
    last = window_alignment(prior, codes[:, starts[-1] :], at(starts[-1])[0])[0].numpy()
    tail = slice(starts[-2] + c.n_ctx, total)
    np.testing.assert_allclose(
        matrix[tail][:, at(starts[-1])[1][0]], last[tail.start - starts[-1] :], atol=1e-6
    )


def test_a_level_shorter_than_a_window_is_padded_and_trimmed(prior) -> None:
    c = prior.config
    tokens = [5, 6, 7]  # fewer than n_tokens: the window pads at the front (index -1, dropped)
    at = _window_labels(prior, tokens, 2 * c.window_samples)  # a song longer than what is generated
    codes = torch.randint(c.codebook_size, (1, c.n_ctx - 30), generator=torch.Generator().manual_seed(2))
    (matrix,) = song_alignment(prior, codes, at, [3], hop=c.n_ctx // 2)
    assert matrix.shape == (c.n_ctx - 30, 3)
    padded = torch.nn.functional.pad(codes, (0, 30))
    block = window_alignment(prior, padded, at(0)[0])[0].numpy()
    np.testing.assert_allclose(
        matrix, block[: c.n_ctx - 30, -3:], atol=1e-6
    )  # causal: padding changes nothing


def test_word_timings_follow_the_most_attended_character() -> None:
    lyrics = "ab  cd ef"
    matrix = np.zeros((6, len(lyrics)), dtype=np.float32)
    matrix[0:2, 1] = 1.0  # "b" of "ab"
    matrix[2:5, 5] = 1.0  # "d" of "cd"
    matrix[5, 2] = 1.0  # a space belongs to no word
    timings = word_timings(matrix, lyrics, seconds_per_code=0.5)
    assert [(w.text, w.start, w.end) for w in timings] == [
        ("ab", 0.0, 1.0),
        ("cd", 1.0, 2.5),
        ("ef", None, None),
    ]
    with pytest.raises(ConfigError):
        word_timings(matrix[:, :3], lyrics, 0.5)


def test_write_alignment_keeps_a_coarser_matrix_and_the_words(tmp_path: Path) -> None:
    lyrics = "la di da"
    matrix = np.random.default_rng(0).random((100, len(lyrics))).astype(np.float32)
    path = tmp_path / "item_0.alignment.json"
    write_alignment(path, matrix, lyrics, seconds_per_code=0.01, rows_per_second=20.0)  # 5 codes per row
    record = json.loads(path.read_text())
    assert record["lyrics"] == lyrics and record["seconds_per_row"] == pytest.approx(0.05)
    coarse = np.array(record["matrix"])
    assert coarse.shape == (20, len(lyrics))
    np.testing.assert_allclose(coarse, matrix.reshape(20, 5, -1).mean(1), atol=6e-5)
    assert [w["text"] for w in record["words"]] == ["la", "di", "da"]
    write_alignment(path, matrix * 0, lyrics, seconds_per_code=0.01)  # replaced in place
    record = json.loads(path.read_text())
    assert record["first_char"] == 0 and not np.array(record["matrix"]).any()


def test_write_alignment_keeps_only_the_characters_the_music_attended_to(tmp_path: Path) -> None:
    """Long lyrics against a short clip: the file grows with the audio, not with the lyrics."""
    lyrics = "la di " * 20_000
    matrix = np.zeros((200, len(lyrics)), dtype=np.float32)
    matrix[:, 40:60] = np.random.default_rng(0).random((200, 20))
    path = tmp_path / "item_0.alignment.json"
    write_alignment(path, matrix, lyrics, seconds_per_code=0.01)
    record = json.loads(path.read_text())
    assert record["first_char"] == 40 and np.array(record["matrix"]).shape == (40, 20)
    assert 0 < len(record["words"]) <= 7  # characters 40-59 lie in seven words
    assert path.stat().st_size < len(lyrics) + 30_000  # all 120,000 columns would take megabytes


def test_plot_alignment_trims_characters_no_moment_attends_to() -> None:
    lyrics = "hello there world"
    matrix = np.zeros((40, len(lyrics)), dtype=np.float32)
    matrix[:, :11] = 0.1  # nothing attends to "world"
    fig = plot_alignment(matrix, lyrics, 0.05, title="t")
    ax = fig.axes[0]
    assert ax.get_ylim() == (10.5, -0.5)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["hello", "there"]
    with pytest.raises(ConfigError):
        plot_alignment(matrix[:, :3], lyrics, 0.05)
