"""Lyric alignment of a lyrics top prior: which lyric characters each moment of the music attends to.

Once the top level is sampled, the prior runs one full (teacher-forced) pass per window over the sampled codes
and keeps the attention probabilities of one head of one lyric-attention layer: rows are the window's music
positions, columns its lyric tokens. Each window's block is written into a song-long matrix at the columns of
its lyric indices, earlier windows winning where windows overlap; lyric padding (index -1) is dropped.

From the matrix, each word gets the span of music positions whose most-attended character lies in it: a rough
guide to when it is sung, no more than the prior's own attention says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jukebox_cli.engine.audio.plots import plot_alignment, save_figure
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.files import write_json
from jukebox_cli.engine.models.prior import Prior, PriorConfig
from jukebox_cli.engine.models.transformer import CROSS, PRIME
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.sampling.conditioning import encode_metadata, labels_for
from jukebox_cli.engine.sampling.request import CascadeRequest
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.sampling.windows import Window, window_advance, window_starts
from jukebox_cli.engine.weights.bundle import Bundle

#: Labels of one window start: ([N, label_length] label vectors, each sample's n_tokens lyric indices).
WindowLabels = Callable[[int], tuple[torch.Tensor, list[list[int]]]]


def alignment_layer_head(config: PriorConfig) -> tuple[int, int]:
    """(layer, head) whose lyric attention is read: the config's, else head 0 of the last lyric layer.

    Raises:
        ConfigError: the prior has no lyrics, or the configured layer does not attend to them.
    """
    lyric_layers = [i for i, f in enumerate(config.attn_funcs()[: config.depth]) if f in (PRIME, CROSS)]
    if not config.has_lyrics or not lyric_layers:
        raise ConfigError("This prior has no lyrics conditioning, so it has no lyric alignment.")
    layer = lyric_layers[-1] if config.alignment_layer is None else config.alignment_layer
    head = config.alignment_head or 0
    if layer not in lyric_layers:
        raise ConfigError(
            f"Alignment layer {layer} is not a lyric-attention layer (those are {lyric_layers})."
        )
    if not 0 <= head < config.heads:
        raise ConfigError(f"Alignment head {head} is outside the prior's {config.heads} heads.")
    return layer, head


@torch.no_grad()
def window_alignment(prior: Prior, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Attention of one window's music positions over its lyric tokens: [N, n_ctx, n_tokens] float32.

    Args:
        prior: a lyrics top prior.
        codes: [N, n_ctx] codes of the window.
        labels: [N, label_length] the window's label vectors (its lyric tokens included).
    """
    c = prior.config
    layer, head = alignment_layer_head(c)
    attention = prior.prior.transformer.attention(layer)
    attention.recorded = []
    try:
        prior.logits(codes, labels)
        probs = attention.recorded[0][:, head].float()
    finally:
        attention.recorded = None
    if c.single_enc_dec:  # one sequence, lyrics first: music queries against lyric keys only
        probs = probs[:, c.n_tokens :, : c.n_tokens]
    return probs


def alignment_starts(total: int, n_ctx: int, hop: int) -> list[int]:
    """The windows of the alignment pass over ``total`` codes: sampling's, over at least one whole window."""
    return window_starts(max(total, n_ctx), n_ctx, hop)


@torch.no_grad()
def song_alignment(
    prior: Prior,
    codes: torch.Tensor,
    window_labels: WindowLabels,
    lyric_lengths: Sequence[int],
    hop: int,
    *,
    on_window: Callable[[], None] = lambda: None,
) -> list[np.ndarray]:
    """Each sample's alignment over the whole level: [T, M] for T codes and its M lyric characters.

    Windows start where sampling put them (``hop`` codes apart, the last ending at T); a level shorter than
    a window is zero-padded to n_ctx codes and the padding's rows dropped.

    Args:
        prior: a lyrics top prior.
        codes: [N, T] the level's codes.
        window_labels: the label vectors and lyric indices of the window starting at a given code.
        lyric_lengths: M of each sample (the length of its cleaned lyrics).
        hop: the window advance in codes.
        on_window: called after each window (for progress).
    """
    n_ctx = prior.config.n_ctx
    batch, total = codes.shape
    padded = max(total, n_ctx)
    codes = torch.nn.functional.pad(codes, (0, padded - total))
    device = next(prior.parameters()).device
    out = [np.zeros((padded, m + 1), dtype=np.float32) for m in lyric_lengths]  # last column: padding
    for start in reversed(alignment_starts(total, n_ctx, hop)):  # earlier windows overwrite later ones
        labels, indices = window_labels(start)
        for i in range(batch):  # one sample at a time bounds the memory of a full pass
            block = window_alignment(
                prior, codes[i : i + 1, start : start + n_ctx].to(device), labels[i : i + 1]
            )
            out[i][start : start + n_ctx, indices[i]] = block[0].cpu().numpy()
        on_window()
    return [matrix[:total, :-1] for matrix in out]


@dataclass(frozen=True)
class WordTiming:
    """A word of the lyrics and the music (in seconds) whose most-attended character lies in it."""

    text: str
    start: float | None  # None: no moment of the music attends mostly to this word
    end: float | None


def word_timings(matrix: np.ndarray, lyrics: str, seconds_per_code: float) -> list[WordTiming]:
    """Per word of ``lyrics`` (split on whitespace), the first and last moment attending mostly to it."""
    if matrix.shape[1] != len(lyrics):
        raise ConfigError(f"The alignment has {matrix.shape[1]} lyric columns for {len(lyrics)} characters.")
    owner = np.full(len(lyrics), -1)
    words: list[tuple[str, int, int]] = []
    position = 0
    for text in lyrics.split():
        begin = lyrics.index(text, position)
        position = begin + len(text)
        owner[begin:position] = len(words)
        words.append((text, begin, position))
    if not words or matrix.shape[0] == 0:
        return [WordTiming(text, None, None) for text, _, _ in words]
    attended = owner[matrix.argmax(axis=1)]  # the word of each moment's most-attended character, or -1
    timings = []
    for w, (text, _, _) in enumerate(words):
        rows = np.flatnonzero(attended == w)
        if rows.size == 0:
            timings.append(WordTiming(text, None, None))
        else:
            start, end = rows[0] * seconds_per_code, (rows[-1] + 1) * seconds_per_code
            timings.append(WordTiming(text, round(float(start), 3), round(float(end), 3)))
    return timings


def write_alignment(
    path: Path, matrix: np.ndarray, lyrics: str, seconds_per_code: float, *, rows_per_second: float = 20.0
) -> None:
    """One sample's alignment as JSON (atomically, replacing): the lyrics, word timings and a coarser matrix.

    The matrix keeps ``rows_per_second`` rows per second of music (each the mean of its codes), rounded to
    4 decimals: the full-resolution one is hundreds of rows per second. Its columns are the characters from
    ``first_char`` on that the music attended to (the lyrics of a whole song, against a few seconds of
    audio, are mostly never seen), and its words are those some moment attended to, so the file grows with
    the audio, not with the lyrics.
    """
    step = max(1, round(1.0 / (rows_per_second * seconds_per_code)))
    rows = matrix.shape[0] // step * step
    seen = np.flatnonzero(matrix.any(axis=0))
    first, last = (int(seen[0]), int(seen[-1]) + 1) if seen.size else (0, 0)
    kept = matrix[:rows, first:last]
    coarse = kept.reshape(rows // step, step, kept.shape[1]).mean(axis=1)
    record = {
        "lyrics": lyrics,
        "seconds_per_row": step * seconds_per_code,
        "words": [vars(w) for w in word_timings(matrix, lyrics, seconds_per_code) if w.start is not None],
        "first_char": first,
        "matrix": np.round(coarse, 4).tolist(),
    }
    write_json(path, record, overwrite=True)


# -- writing a run's alignments ------------------------------------------------------------------------------


def aligned_samples(bundle: Bundle, level: int, request: CascadeRequest) -> list[int]:
    """The samples that get a lyric alignment at this level: those with lyrics, under a lyrics top prior."""
    c = bundle.prior_configs[level]
    if c.is_upsampler or not c.has_lyrics:
        return []
    labeller = bundle.labellers[level]
    return [i for i, meta in enumerate(request.samples) if labeller.tokenize(meta.lyrics).ids]


def missing_alignments(run: Run, bundle: Bundle, level: int, request: CascadeRequest) -> bool:
    """Whether some sample that gets an alignment at this level has none in the run yet."""
    return any(
        not run.alignment_path(level, i, "json").exists() for i in aligned_samples(bundle, level, request)
    )


def write_alignments(
    run: Run,
    bundle: Bundle,
    level: int,
    codes: torch.Tensor,
    request: CascadeRequest,
    *,
    prior: Prior | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = noop,
) -> list[Path]:
    """Write ``item_N.alignment.json`` and ``item_N.alignment.png`` for each sample with lyrics.

    Args:
        run: the run folder.
        bundle: the model; its ``level`` prior must be a lyrics top prior.
        level: the top level.
        codes: [N, T] the level's sampled codes.
        request: the run's settings (labels, song length and window hop are those of sampling).
        prior: the level's prior if already loaded; otherwise it is loaded on ``device`` and released.
        device: where to load the prior.
        progress: a ``"lyric alignment"`` stage, one step per window.

    Returns:
        The files written.
    """
    samples = aligned_samples(bundle, level, request)
    if not samples:
        return []
    loaded = prior is None
    if loaded:
        prior = bundle.load_prior(level, device)
    try:
        c = prior.config
        target = next(prior.parameters()).device
        labeller = bundle.labellers[level]
        chosen = [request.samples[i] for i in samples]
        encoded, _ = encode_metadata(labeller, chosen, allow_unknown=request.allow_unknown)
        window_vectors = labels_for(labeller, encoded, c, request.total_length, target)

        def window_labels(start: int) -> tuple[torch.Tensor, list[list[int]]]:
            offset = start * c.hop_length
            indices = [labeller.lyric_window(e.tokens, request.total_length, offset, c.window_samples)[1]
                       for e in encoded]  # fmt: skip
            return window_vectors(Window(start, start + c.n_ctx, 0, c.n_ctx)), indices

        hop = window_advance(request.hop_fraction[level], c.n_ctx)
        stage = "lyric alignment"
        progress(StageStarted(stage, len(alignment_starts(codes.shape[1], c.n_ctx, hop)), "window"))
        matrices = song_alignment(prior, codes[samples], window_labels, [len(e.tokens) for e in encoded], hop,
                                  on_window=lambda: progress(Advanced(stage)))  # fmt: skip
        progress(StageFinished(stage))
    finally:
        if loaded:
            bundle.release_prior(prior)
    seconds_per_code = c.hop_length / bundle.sample_rate
    written = []
    for index, meta, matrix in zip(samples, chosen, matrices, strict=True):
        lyrics = labeller.tokenize(meta.lyrics).cleaned
        fig = plot_alignment(matrix, lyrics, seconds_per_code, title=f"lyric alignment, sample {index}")
        written.append(save_figure(fig, run.alignment_path(level, index, "png"), overwrite=True))
        # The JSON last: its presence marks the sample done for a resumed run.
        write_alignment(run.alignment_path(level, index, "json"), matrix, lyrics, seconds_per_code)
        written.append(run.alignment_path(level, index, "json"))
    return written
