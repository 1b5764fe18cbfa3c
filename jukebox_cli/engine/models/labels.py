"""Artist/genre ids, lyric tokenisation and lyric windows: the label vector ``y`` of a prior.

Every prior has its own :class:`Labeller`, because the label set depends on the prior: with ``1b_lyrics`` the
top prior uses the ``v3`` ids (one genre slot, 384 lyric tokens) and the two upsamplers the ``v2`` ids (five
genre slots, no lyrics), so the same artist becomes two different ids.

The id files ship unchanged in ``jukebox_cli/data/labels`` (see the NOTICE there). They are read exactly as
the original loader reads them, quirks included: names are lower-cased, a later line with the same
name wins (``speaker`` is 7896 in v3, not 3675), and the invisible U+200E/U+200F marks that follow 31 v3
genre names are kept, so typing ``psychedelic rock`` gives the plain entry 185 and not the marked one (7).

This module must not import torch: ``jukebox labels`` uses it.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from types import MappingProxyType
from typing import Literal

from unidecode import unidecode

from jukebox_cli.engine.errors import ConfigError, LabelError

logger = logging.getLogger(__name__)

LABEL_SETS = ("v2", "v3", "tiny")

# The label set of each known model's TOP prior; the released upsamplers always use v2.
MODEL_LABELS = {"1b_lyrics": "v3", "5b": "v2", "5b_lyrics": "v2", "tiny-random": "tiny"}

# file names and lyric vocabulary of each label set; "tiny" (invented, for the untrained test model) is
# looked up the v3 way and uses the v3 vocabulary
_FILES = {
    "v2": ("v2_artist_ids.txt", "v2_genre_ids.txt", "v2"),
    "v3": ("v3_artist_ids.txt", "v3_genre_ids.txt", "v3"),
    "tiny": ("tiny_artist_ids.txt", "tiny_genre_ids.txt", "v3"),
}
# Rows of the released models' embedding tables, (artists, genres) = y_bins reversed. The v2
# artist table has two more rows (4111) than its file's largest id + 1 (4109); other sets use max id + 1.
_TABLE_ROWS = {"v2": (4111, 120), "v3": (7898, 604)}
_DATA_PACKAGE = "jukebox_cli"
_DATA_PATH = ("data", "labels")
_N_LISTED = 12  # label tables this small are listed whole in errors
_N_SUGGESTIONS = 5


# ---------------------------------------------------------------------------------------------------------
# pure helpers


def normalize_v2(text: str) -> str:
    """The v2 name normalisation: lower-case, non-ASCII-alphanumerics to ``_``, runs collapsed, ends stripped.

    ``"Céline Dion"`` -> ``"c_line_dion"``, ``"R&B"`` -> ``"r_b"``. No transliteration: an accented
    letter becomes ``_`` like any other non-ASCII character, as in the original.
    """
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _fold(text: str) -> str:
    """Case- and accent-insensitive form of a name, for searching only (never for id lookup)."""
    return unidecode(text).lower()


def _read_data(name: str) -> str:
    return resources.files(_DATA_PACKAGE).joinpath(*_DATA_PATH, name).read_text(encoding="utf-8")


def _parse_ids(text: str, source: str) -> dict[str, int]:
    """Parse ``name;id`` lines the way the original loader does.

    Each line is stripped of surrounding whitespace (str.strip does not remove U+200E/U+200F, which are format
    characters, so marked names stay distinct), the name is lower-cased, and a later duplicate overwrites an
    earlier one, as assigning into a dict does.
    """
    table: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.rpartition(";")
        if not sep:
            raise ConfigError(f"{source} line {number}: expected 'name;id', got {raw!r}.")
        try:
            table[name.lower()] = int(value)
        except ValueError:
            raise ConfigError(f"{source} line {number}: id {value!r} is not an integer.") from None
    return table


def _reverse(table: Mapping[str, int]) -> dict[int, str]:
    names: dict[int, list[str]] = {}
    for name, index in table.items():
        names.setdefault(index, []).append(name)
    return {index: "_".join(sorted(group)) for index, group in names.items()}


def _check_version(version: str) -> None:
    if version not in LABEL_SETS:
        raise ConfigError(f"unknown label set {version!r}; choose one of {', '.join(LABEL_SETS)}.")


# ---------------------------------------------------------------------------------------------------------
# label sets


@dataclass(frozen=True)
class LabelSet:
    """One set of artist/genre ids plus its lyric vocabulary.

    Attributes:
        version: ``"v2"``, ``"v3"`` or ``"tiny"``.
        artists: lower-cased name -> id (several names may share an id).
        genres: lower-cased name (v3) or word (v2) -> id.
        vocab: ``vocab[i]`` is the character of lyric id ``i``; ``vocab[0] == ""`` is ``<unk>`` and padding.
    """

    version: str
    artists: Mapping[str, int]
    genres: Mapping[str, int]
    vocab: tuple[str, ...]
    lookup: str | None = None  # a custom set looks names up like this released set ("v2" or "v3")
    rows: tuple[int, int] = (0, 0)  # a custom set's minimum table rows (artists, genres), kept from its base

    @property
    def normalized(self) -> bool:
        """True when names are looked up after the v2 normalisation (and genres split into words)."""
        return (self.lookup or self.version) == "v2"

    @property
    def n_artists(self) -> int:
        """Rows of the artist embedding table: 4111 (v2, largest id 4108), 7898 (v3), else max id + 1."""
        rows = _TABLE_ROWS.get(self.version, self.rows)[0]
        return max(rows, max(self.artists.values()) + 1)

    @property
    def n_genres(self) -> int:
        """Rows of the genre embedding table: 120 (v2), 604 (v3), else max id + 1."""
        rows = _TABLE_ROWS.get(self.version, self.rows)[1]
        return max(rows, max(self.genres.values()) + 1)

    def key(self, name: str) -> str:
        """How a name is looked up: v2-normalised or lower-cased."""
        return normalize_v2(name) if self.normalized else name.lower()

    def genre_keys(self, text: str) -> list[str]:
        """The genre keys of ``text``: its v2 words, or the whole lower-cased text."""
        return normalize_v2(text).split("_") if self.normalized else [text.lower()]

    def to_dict(self) -> dict:
        """JSON-friendly form (stored in a trained prior's config, so the tables travel with the weights)."""
        return {"version": self.version, "lookup": self.lookup or self.version, "rows": list(self.rows),
                "artists": dict(self.artists), "genres": dict(self.genres), "vocab": list(self.vocab)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelSet:
        return cls(version=data["version"], artists=MappingProxyType(dict(data["artists"])),
                   genres=MappingProxyType(dict(data["genres"])), vocab=tuple(data["vocab"]),
                   lookup=data.get("lookup"), rows=tuple(data.get("rows", (0, 0))))  # fmt: skip

    def extended(self, artists: Iterable[str], genres: Iterable[str]) -> LabelSet:
        """A custom set with this one's ids plus new ids for the names it lacks (for training on new music).

        Existing names keep their ids, so a fine-tuned prior keeps the embeddings it learnt for them; new
        names get ids after the table's last row. Looked up like this set; id 0 stays ``unknown``.
        """
        new_artists, new_genres = dict(self.artists), dict(self.genres)
        next_artist, next_genre = self.n_artists, self.n_genres
        for name in artists:
            if self.key(name) not in new_artists:
                new_artists[self.key(name)] = next_artist
                next_artist += 1
        for text in genres:
            for key in self.genre_keys(text):
                if key not in new_genres:
                    new_genres[key] = next_genre
                    next_genre += 1
        return LabelSet("custom", MappingProxyType(new_artists), MappingProxyType(new_genres), self.vocab,
                        lookup="v2" if self.normalized else "v3", rows=(self.n_artists, self.n_genres))  # fmt: skip

    @property
    def n_vocab(self) -> int:
        """Lyric vocabulary size including ``<unk>``: 80 (v2), 79 (v3 and tiny)."""
        return len(self.vocab)

    @cached_property
    def _artist_names(self) -> dict[int, str]:
        return _reverse(self.artists)

    @cached_property
    def _genre_names(self) -> dict[int, str]:
        return _reverse(self.genres)

    def artist_names(self, artist_id: int) -> str:
        """All names of ``artist_id`` joined with ``_``, sorted ("" for an id that no name maps to).

        Raises:
            LabelError: if the id is outside the table.
        """
        return self._names(artist_id, self._artist_names, self.n_artists, "artist")

    def genre_names(self, genre_id: int) -> str:
        """All names of ``genre_id`` joined with ``_``, sorted ("" for an id that no name maps to).

        Raises:
            LabelError: if the id is outside the table (the padding id -1 included).
        """
        return self._names(genre_id, self._genre_names, self.n_genres, "genre")

    def _names(self, index: int, names: Mapping[int, str], n: int, kind: str) -> str:
        if not 0 <= index < n:
            raise LabelError(f"{kind} id {index} is outside the {self.version} table (0..{n - 1}).")
        return names.get(index, "")


def new_label_set(artists: Iterable[str], genres: Iterable[str], *, lookup: str = "v3") -> LabelSet:
    """A label set of just these names (``unknown`` is id 0), for a prior trained from scratch."""
    vocab = json.loads(_read_data("lyrics_vocab.json"))["v3"]["tokens"]
    empty = LabelSet("custom", {"unknown": 0}, {"unknown": 0}, tuple(vocab), lookup=lookup, rows=(1, 1))
    return empty.extended(sorted(set(artists)), sorted(set(genres)))


@functools.cache
def _load(version: str) -> LabelSet:
    artist_file, genre_file, vocab_version = _FILES[version]
    vocab = json.loads(_read_data("lyrics_vocab.json"))[vocab_version]["tokens"]
    return LabelSet(
        version=version,
        artists=MappingProxyType(_parse_ids(_read_data(artist_file), artist_file)),
        genres=MappingProxyType(_parse_ids(_read_data(genre_file), genre_file)),
        vocab=tuple(vocab),
    )


def load_label_set(version: str) -> LabelSet:
    """The label set ``version`` from the package data, read once per process.

    Args:
        version: one of :data:`LABEL_SETS`.

    Returns:
        The (immutable, cached) label set.

    Raises:
        ConfigError: for an unknown version.
    """
    _check_version(version)
    return _load(version)


def label_set_for_model(model: str) -> str:
    """The label set of a known model's top prior (``MODEL_LABELS``).

    Raises:
        ConfigError: for an unknown model name, suggesting the known ones.
    """
    if model in MODEL_LABELS:
        return MODEL_LABELS[model]
    close = difflib.get_close_matches(model, list(MODEL_LABELS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown model {model!r}; {hint}known models: {', '.join(MODEL_LABELS)}.")


def search_labels(
    label_set: LabelSet, kind: Literal["artists", "genres"], text: str | None
) -> list[tuple[str, int]]:
    """Names (and ids) of ``kind`` whose name contains ``text``, sorted by name.

    Matching ignores case and accents (both sides go through unidecode), so ``celine`` finds ``céline dion``.
    For v2 the normalised form of ``text`` is tried too, so ``alan jackson`` finds ``alan_jackson``.

    Args:
        label_set: from :func:`load_label_set`.
        kind: ``"artists"`` or ``"genres"``.
        text: the substring to look for; ``None`` or ``""`` lists everything.

    Returns:
        ``(name, id)`` pairs sorted by the folded name, then the name itself.

    Raises:
        ConfigError: for another ``kind``.
    """
    if kind == "artists":
        table = label_set.artists
    elif kind == "genres":
        table = label_set.genres
    else:
        raise ConfigError(f"kind must be 'artists' or 'genres', not {kind!r}.")
    needles = []
    if text:
        needles.append(_fold(text))
        if label_set.normalized and normalize_v2(text):
            needles.append(normalize_v2(text))
    found = [
        (name, index)
        for name, index in table.items()
        if not needles or any(needle in _fold(name) for needle in needles)
    ]
    return sorted(found, key=lambda item: (_fold(item[0]), item[0], item[1]))


def hidden_marks(name: str) -> list[str]:
    """The invisible format characters in a name, each as ``"U+200E LEFT-TO-RIGHT MARK"``.

    OpenAI's v3 genre table holds 31 names twice, once plain and once with a trailing U+200E (some with U+200F
    too), under different ids; on screen the two look the same, so a listing has to say which is which.
    """
    return [f"U+{ord(c):04X} {unicodedata.name(c, 'FORMAT CHARACTER')}" for c in name if _is_mark(c)]


def typed_id(label_set: LabelSet, kind: Literal["artists", "genres"], name: str) -> int | None:
    """The id a user gets by typing ``name`` as it looks, without its invisible marks (None: no such name).

    A lookup matches exactly, so the plain spelling always finds the plain entry; the marked one is reached
    only by typing its marks too.
    """
    plain = _visible(name)
    table = label_set.artists if kind == "artists" else label_set.genres
    return table.get(label_set.key(plain))


def _is_mark(char: str) -> bool:
    return unicodedata.category(char) == "Cf"


def _visible(name: str) -> str:
    return "".join(c for c in name if not _is_mark(c))


# ---------------------------------------------------------------------------------------------------------
# one prior's labeller


@dataclass(frozen=True)
class LyricsTokens:
    """Lyrics after cleaning (see `Labeller.tokenize`).

    Attributes:
        ids: one lyric id per character of ``cleaned`` (no padding, no end token).
        cleaned: the transliterated text that was kept.
        dropped: the characters removed because they are not in the vocabulary (after transliteration), in
            order, for a warning; ``""`` when nothing was removed.
    """

    ids: tuple[int, ...]
    cleaned: str
    dropped: str


class Labeller:
    """Builds one prior's label vectors: artist id, genre slots and the lyric window.

    Args:
        version: the prior's label set (``"v2"``, ``"v3"``, ``"tiny"``, or ``"custom"`` with ``label_set``).
        max_genres: genre slots in the vector (``max_bow_genre_size``: 5 for v2 priors, 1 for 1b_lyrics).
        n_tokens: lyric tokens in the vector (384 for 1b_lyrics, 512 for 5b_lyrics, 0 otherwise).
        label_set: the tables of a trained prior (its config's ``labels``); default: the package's ``version``.

    Raises:
        ConfigError: for an unknown version, ``max_genres < 1`` or ``n_tokens < 0``.
    """

    def __init__(
        self, version: str, max_genres: int, n_tokens: int, label_set: LabelSet | None = None
    ) -> None:
        if max_genres < 1:
            raise ConfigError(f"max_genres must be at least 1, got {max_genres}.")
        if n_tokens < 0:
            raise ConfigError(f"n_tokens must be 0 or more, got {n_tokens}.")
        self.label_set = label_set if label_set is not None else load_label_set(version)
        self.version = version
        self.max_genres = max_genres
        self.n_tokens = n_tokens
        self._char_ids = {char: index for index, char in enumerate(self.label_set.vocab) if char}

    def __repr__(self) -> str:
        return f"Labeller({self.version!r}, max_genres={self.max_genres}, n_tokens={self.n_tokens})"

    @property
    def label_length(self) -> int:
        """Length of a label vector: 4 + max_genres + n_tokens (9, 389 or 521 for the released priors)."""
        return 4 + self.max_genres + self.n_tokens

    # ---- artists and genres

    def artist_id(self, name: str, *, allow_unknown: bool = False) -> int:
        """The artist id of ``name``.

        v2 normalises the name (``"Alan Jackson"`` -> ``alan_jackson``); v3 and tiny only lower-case it and
        need an exact match (``"Alan Jackson"`` -> 6785 in v3).

        Args:
            name: the artist as a user writes it.
            allow_unknown: map an unknown name to id 0 (``unknown``), as the original does with a warning.

        Returns:
            The id.

        Raises:
            LabelError: for an unknown name (unless ``allow_unknown``), listing up to 5 close matches.
        """
        key = self._key(name)
        table = self.label_set.artists
        if key in table:
            return table[key]
        if allow_unknown:
            logger.debug("unknown %s artist %r (key %r): using id 0", self.version, name, key)
            return 0
        raise LabelError(self._unknown_message("artist", name, key, table))

    def genre_ids(self, text: str, *, allow_unknown: bool = False) -> list[int]:
        """The genre slots for ``text``, padded with -1 to ``max_genres``.

        v2: the normalised text is split on ``_`` into words, each looked up (``"Blues Rock"`` -> ``[2, 8, -1,
        -1, -1]``; ``"R&B"`` -> ``[17, 18, ...]``). v3 and tiny: the whole lower-cased text is one genre
        (``"Country"`` -> ``[507]``).

        Args:
            text: the genre as a user writes it.
            allow_unknown: map unknown genres (words) to id 0, which the prior does *not* mask (only -1
                padding is masked; id 0 is the real "unknown" embedding).

        Returns:
            ``max_genres`` ids.

        Raises:
            LabelError: for an unknown genre or word (unless ``allow_unknown``), or more words than slots.
        """
        table = self.label_set.genres
        keys = self.label_set.genre_keys(text)
        if len(keys) > self.max_genres:
            raise LabelError(
                f"genre {text!r} has {len(keys)} words ({', '.join(keys)}) but this prior takes at most "
                f"{self.max_genres}; use fewer words."
            )
        ids = []
        for key in keys:
            if key in table:
                ids.append(table[key])
            elif allow_unknown:
                logger.debug("unknown %s genre %r in %r: using id 0", self.version, key, text)
                ids.append(0)
            else:
                what = "genre word" if self.label_set.normalized else "genre"
                raise LabelError(self._unknown_message(what, text, key, table))
        return ids + [-1] * (self.max_genres - len(ids))

    def _key(self, name: str) -> str:
        return self.label_set.key(name)

    def _unknown_message(self, what: str, text: str, key: str, table: Mapping[str, int]) -> str:
        shown = f"{text!r}" if key == text.lower() else f"{text!r} (looked up as {key!r})"
        head = f"unknown {what} {shown} in the {self.version} label set"
        if len(table) <= _N_LISTED:  # a model trained on a small corpus: every name fits on the line
            close = difflib.get_close_matches(key, list(table), n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            return f"{head}; {guess}it knows {', '.join(sorted(table))}."
        # A name with an invisible mark is offered as its plain twin, which is what a user can type.
        names = [n for n in table if _visible(n) == n or _visible(n) not in table]
        close = difflib.get_close_matches(key, names, n=_N_SUGGESTIONS)
        if not close:  # fall back to names that contain what was typed, e.g. "beatles" -> "the beatles"
            needle = _fold(key)
            close = sorted(n for n in names if needle and needle in _fold(n))[:_N_SUGGESTIONS]
        kind = "artists" if what == "artist" else "genres"
        suggestion = f"close matches: {', '.join(repr(c) for c in close)}" if close else "no close match"
        where = "--search TEXT" if self.version != "custom" else "--model MODEL"
        return f"{head}; {suggestion}. List names with `jukebox labels --{kind} {where}`."

    # ---- lyrics

    def tokenize(self, lyrics: str) -> LyricsTokens:
        """Clean and tokenise lyrics as the original does.

        Transliterate with unidecode ("—" -> "--", curly quotes -> straight, "é" -> "e", "ß" -> "ss"), turn
        each backslash into a newline, delete every character outside the vocabulary (case is kept; v3 has no
        ``+``), and map the rest to ids.

        Args:
            lyrics: the full lyrics of the song.

        Returns:
            The ids, the kept text and the removed characters.
        """
        text = unidecode(lyrics).replace("\\", "\n")
        kept = [char for char in text if char in self._char_ids]
        dropped = "".join(char for char in text if char not in self._char_ids)
        return LyricsTokens(
            ids=tuple(self._char_ids[char] for char in kept), cleaned="".join(kept), dropped=dropped
        )

    def cut(self, lyrics: str, limit: int) -> str:
        """The longest start of ``lyrics`` whose cleaned text (see :meth:`tokenize`) has at most ``limit`` characters.

        Cut in the raw text, so that what is kept reads as the user wrote it; each character is cleaned on its
        own, as :meth:`tokenize` does, and the scan stops at the limit however long the lyrics are.
        """
        kept = 0
        for i, char in enumerate(lyrics):
            kept += sum(c in self._char_ids for c in unidecode(char).replace("\\", "\n"))
            if kept > limit:
                return lyrics[:i]
        return lyrics

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of lyric ids (id 0, ``<unk>``/padding, decodes to "")."""
        vocab = self.label_set.vocab
        return "".join(vocab[i] for i in ids)

    def lyric_window(
        self, full: Sequence[int], total_length: int, offset: int, duration: int
    ) -> tuple[list[int], list[int]]:
        """The ``n_tokens`` lyric ids a chunk sees, and their positions in ``full``.

        Characters are assumed to be spread uniformly over the song: the window is centred on the character at
        the chunk's midpoint, ``int(M * (offset + duration / 2) / total_length)``, clamped so that the window
        stays inside ``full``. When the song has fewer than ``n_tokens`` characters, the window is ``full``
        padded at the front with id 0 (index -1).

        Args:
            full: every lyric id of the song (``tokenize(...).ids``), length M.
            total_length: length of the whole song in samples.
            offset: where the chunk starts, in samples.
            duration: the chunk length in samples.

        Returns:
            ``(tokens, indices)``, each of length ``n_tokens``.

        Raises:
            ConfigError: unless ``0 <= offset < total_length``.
        """
        if not 0 <= offset < total_length:
            raise ConfigError(
                f"the offset ({offset} samples) must be at least 0 and less than the song's total length "
                f"({total_length} samples)."
            )
        n, m = self.n_tokens, len(full)
        if m < n:
            return [0] * (n - m) + list(full), [-1] * (n - m) + list(range(m))
        midpoint = int(m * (offset + duration / 2.0) / total_length)
        # for odd n the extra token goes after the midpoint (the released models all use even n)
        midpoint = min(max(midpoint, n // 2), m - (n - n // 2))
        start = midpoint - n // 2
        return list(full[start : start + n]), list(range(start, start + n))

    # ---- the whole vector

    def label_vector(
        self,
        artist_id: int,
        genre_ids: Sequence[int],
        full_tokens: Sequence[int],
        *,
        total_length: int,
        offset: int,
        length: int,
    ) -> list[int]:
        """The label vector y of one chunk or window (a window's offset: `sampling.windows.window_offset`).

        Args:
            artist_id: from :meth:`artist_id`.
            genre_ids: from :meth:`genre_ids` (a shorter list is padded with -1).
            full_tokens: every lyric id of the song (ignored when ``n_tokens`` is 0).
            total_length: the whole song's length in samples (not the generated length).
            offset: where this chunk starts in the song, in samples.
            length: the chunk length in samples (the prior's sample_length when sampling).

        Returns:
            ``[total_length, offset, length, artist, genres..., lyric ids...]``, of length
            :attr:`label_length`.

        Raises:
            ConfigError: for ids outside the tables, too many genres, or an offset outside the song.
        """
        label_set = self.label_set
        if not 0 <= artist_id < label_set.n_artists:
            raise ConfigError(f"artist id {artist_id} is outside the {self.version} table.")
        if len(genre_ids) > self.max_genres:
            raise ConfigError(f"{len(genre_ids)} genre ids given; this prior has {self.max_genres} slots.")
        bad = [g for g in genre_ids if not -1 <= g < label_set.n_genres]
        if bad:
            raise ConfigError(f"genre ids {bad} are outside the {self.version} table (or -1 for padding).")
        if any(not 0 <= t < label_set.n_vocab for t in full_tokens):
            raise ConfigError(f"lyric ids must lie in 0..{label_set.n_vocab - 1}.")
        genres = list(genre_ids) + [-1] * (self.max_genres - len(genre_ids))
        tokens, _ = self.lyric_window(full_tokens, total_length, offset, length)
        return [total_length, offset, length, artist_id, *genres, *tokens]
