"""Label vectors: each sample's artist, genre and lyrics as the ids one prior is conditioned on, per window.

A prior's label vector for a window holds the song's total length, the window's offset and length (timing),
the artist id, the genre ids and, for lyrics priors, the lyric tokens the window can see (``Labeller``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from jukebox_cli.engine.models.labels import Labeller
from jukebox_cli.engine.models.prior import PriorConfig
from jukebox_cli.engine.sampling.request import SampleMeta
from jukebox_cli.engine.sampling.windows import Window


@dataclass
class SampleLabels:
    """One sample's ids under one prior's label set."""

    artist: int
    genres: list[int]
    tokens: list[int]


def encode_metadata(
    labeller: Labeller, samples: Sequence[SampleMeta], *, allow_unknown: bool
) -> tuple[list[SampleLabels], list[str]]:
    """Ids for every sample under one prior's label set, and warnings about dropped lyric characters.

    Raises:
        LabelError: an unknown artist or genre (unless ``allow_unknown``).
    """
    encoded, warnings = [], []
    for meta in samples:
        tokens = labeller.tokenize(meta.lyrics) if labeller.n_tokens else None
        if tokens is not None and tokens.dropped:
            warnings.append(f"lyrics characters not in the vocabulary were dropped: {tokens.dropped!r}")
        encoded.append(
            SampleLabels(
                artist=labeller.artist_id(meta.artist, allow_unknown=allow_unknown),
                genres=labeller.genre_ids(meta.genre, allow_unknown=allow_unknown),
                tokens=list(tokens.ids) if tokens is not None else [],
            )
        )
    return encoded, sorted(set(warnings))


def labels_for(
    labeller: Labeller,
    encoded: list[SampleLabels],
    config: PriorConfig,
    total_length: int,
    device: torch.device | str,
) -> Callable[[Window], torch.Tensor]:
    """A function from a window to the label vectors [N, label_length] of every sample, on ``device``."""

    def labels(window: Window) -> torch.Tensor:
        offset = window.start * config.hop_length
        rows = [
            labeller.label_vector(e.artist, e.genres, e.tokens, total_length=total_length, offset=offset,
                                  length=config.window_samples)
            for e in encoded
        ]  # fmt: skip
        return torch.tensor(rows, dtype=torch.long, device=device)

    return labels
