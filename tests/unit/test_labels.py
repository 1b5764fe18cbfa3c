"""Artist/genre ids, lyric tokens, lyric windows and label vectors, checked against the original's ids."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources

import pytest

from jukebox_cli.engine.errors import ConfigError, LabelError
from jukebox_cli.engine.models.labels import (
    LABEL_SETS,
    MODEL_LABELS,
    Labeller,
    LyricsTokens,
    label_set_for_model,
    load_label_set,
    normalize_v2,
    search_labels,
)

DATA = resources.files("jukebox_cli").joinpath("data", "labels")

# the released priors: (label set, genre slots, lyric tokens)
UPSAMPLER = ("v2", 5, 0)
PRIOR_5B_LYRICS = ("v2", 5, 512)
PRIOR_1B_LYRICS = ("v3", 1, 384)


@pytest.fixture(scope="module")
def v2() -> Labeller:
    return Labeller(*UPSAMPLER)


@pytest.fixture(scope="module")
def v3() -> Labeller:
    return Labeller(*PRIOR_1B_LYRICS)


# ---- the shipped files


@pytest.mark.parametrize(
    "name", ["v2_artist_ids.txt", "v2_genre_ids.txt", "v3_artist_ids.txt", "v3_genre_ids.txt"]
)
def test_id_files_are_the_released_ones(name: str) -> None:
    expected = json.loads(DATA.joinpath("lyrics_vocab.json").read_text(encoding="utf-8"))["id_files"][name]
    data = DATA.joinpath(name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    assert data.count(b"\n") == expected["entries"]


def test_notice_names_the_source() -> None:
    notice = DATA.joinpath("NOTICE").read_text(encoding="utf-8")
    assert "github.com/openai/jukebox" in notice and "MIT" in notice


@pytest.mark.parametrize(
    ("version", "n_artists", "n_genres", "n_vocab"),
    [("v2", 4111, 120, 80), ("v3", 7898, 604, 79), ("tiny", 8, 6, 79)],
)
def test_table_sizes(version: str, n_artists: int, n_genres: int, n_vocab: int) -> None:
    label_set = load_label_set(version)
    assert (label_set.n_artists, label_set.n_genres, label_set.n_vocab) == (n_artists, n_genres, n_vocab)
    assert label_set.vocab[0] == ""
    assert label_set.artists["unknown"] == 0 and label_set.genres["unknown"] == 0
    assert all(name == name.lower() for name in (*label_set.artists, *label_set.genres))


def test_label_sets_are_cached_and_immutable() -> None:
    assert load_label_set("v3") is load_label_set("v3")
    with pytest.raises(TypeError):
        load_label_set("v3").artists["new artist"] = 1  # type: ignore[index]


def test_unknown_label_set() -> None:
    with pytest.raises(ConfigError, match="v2, v3, tiny"):
        load_label_set("v4")
    with pytest.raises(ConfigError):
        Labeller("v1", 1, 0)


def test_model_labels() -> None:
    assert MODEL_LABELS == {"1b_lyrics": "v3", "5b": "v2", "5b_lyrics": "v2", "tiny-random": "tiny"}
    assert set(MODEL_LABELS.values()) <= set(LABEL_SETS)
    assert label_set_for_model("5b_lyrics") == "v2"
    with pytest.raises(ConfigError, match="'1b_lyrics'"):
        label_set_for_model("1b-lyrics")


def test_vocabularies() -> None:
    v2_vocab, v3_vocab = load_label_set("v2").vocab, load_label_set("v3").vocab
    assert v3_vocab[1:27] == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert v3_vocab[27:53] == tuple("abcdefghijklmnopqrstuvwxyz")
    assert v3_vocab[53:63] == tuple("0123456789")
    assert v3_vocab[63:] == (".", ",", ":", ";", "!", "?", "-", "'", '"', "(", ")", "[", "]", " ", "\t", "\n")
    # v2 = v3 plus "+" after "-" (the README: "in v3 we missed `+`")
    assert v2_vocab == (*v3_vocab[:70], "+", *v3_vocab[70:])
    assert load_label_set("tiny").vocab == v3_vocab


# ---- artists and genres


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Alan Jackson", 6785),
        ("The Beatles", 7026),
        ("Frank Sinatra", 3085),
        ("Ella Fitzgerald", 1595),
        ("Céline Dion", 5220),
        ("Joe Bonamassa", 6332),
        ("Zac Brown Band", 7169),
        ("speaker", 7896),  # listed twice (3675, then 7896): the later line wins, as in a dict
        ("unknown", 0),
    ],
)
def test_v3_artists(v3: Labeller, name: str, expected: int) -> None:
    assert v3.artist_id(name) == expected


@pytest.mark.parametrize(
    ("genre", "expected"),
    [
        ("Country", 507),
        ("rock", 40),
        ("Pop", 497),
        ("jazz", 230),
        ("blues", 236),
        ("classical", 34),
        ("Hip Hop", 54),
        ("R&B", 219),
        ("soul", 135),
        ("reggae", 402),
        ("folk", 370),
        ("electronic", 524),
    ],
)
def test_v3_genres(v3: Labeller, genre: str, expected: int) -> None:
    assert v3.genre_ids(genre) == [expected]


def test_v3_genre_marks_are_kept() -> None:
    """The visible text finds the plain entry; the 31 U+200E/U+200F-marked names keep their own ids."""
    labeller = Labeller(*PRIOR_1B_LYRICS)
    genres = load_label_set("v3").genres
    assert labeller.genre_ids("psychedelic rock") == [185]
    assert labeller.genre_ids("Psychedelic Rock") == [185]
    assert genres["psychedelic rock\u200e"] == 7
    assert genres["pop rock"] == 4 and genres["pop rock\u200e"] == 600
    assert genres["dark wave\u200f\u200e"] == 19
    assert sum(1 for name in genres if "\u200e" in name or "\u200f" in name) == 31
    assert load_label_set("v3").genre_names(7) == "psychedelic rock\u200e"


def test_v3_genre_slots_pad_with_minus_one() -> None:
    assert Labeller("v3", 3, 0).genre_ids("Country") == [507, -1, -1]


def test_v3_lookup_is_exact() -> None:
    labeller = Labeller(*PRIOR_1B_LYRICS)
    with pytest.raises(LabelError):
        labeller.artist_id("alan_jackson")  # the v2 spelling
    with pytest.raises(LabelError):
        labeller.artist_id("Celine Dion")  # the accent is part of the v3 name
    with pytest.raises(LabelError):
        labeller.genre_ids("country ")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Alan Jackson", 145),
        ("alan_jackson", 145),
        ("The Beatles", 278),
        ("Frank Sinatra", 121),
        ("Ella Fitzgerald", 1042),
        ("Céline Dion", 557),
        ("Joe Bonamassa", 454),
        ("Zac Brown Band", 1069),
        ("  zac -- brown   band!", 1069),
        ("Various", 0),
        ("", 0),
    ],
)
def test_v2_artists(v2: Labeller, name: str, expected: int) -> None:
    assert v2.artist_id(name) == expected


def test_v2_normalisation() -> None:
    assert normalize_v2("Céline Dion") == "c_line_dion"
    assert normalize_v2("R&B") == "r_b"
    assert normalize_v2("  Zac -- Brown  Band!") == "zac_brown_band"
    assert normalize_v2("__A__") == "a"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("classical", 1),
        ("blues", 2),
        ("hip", 3),
        ("hop", 4),
        ("rock", 8),
        ("jazz", 9),
        ("country", 11),
        ("pop", 14),
    ],
)
def test_v2_genre_words(v2: Labeller, word: str, expected: int) -> None:
    assert v2.genre_ids(word) == [expected, -1, -1, -1, -1]


def test_v2_genres_split_into_words(v2: Labeller) -> None:
    genres = load_label_set("v2").genres
    assert (genres["r"], genres["b"]) == (17, 18)
    assert v2.genre_ids("Blues Rock") == [2, 8, -1, -1, -1]
    assert v2.genre_ids("Hip Hop") == [3, 4, -1, -1, -1]
    assert v2.genre_ids("Hip-Hop") == [3, 4, -1, -1, -1]
    assert v2.genre_ids("R&B") == [17, 18, -1, -1, -1]
    assert v2.genre_ids("Country Rock") == [11, 8, -1, -1, -1]  # not transformers' single unknown word
    assert v2.genre_ids("country rock pop jazz blues") == [11, 8, 14, 9, 2]


def test_more_genre_words_than_slots(v2: Labeller) -> None:
    with pytest.raises(LabelError, match="6 words"):
        v2.genre_ids("country rock pop jazz blues classical")
    with pytest.raises(LabelError):
        v2.genre_ids("country rock pop jazz blues classical", allow_unknown=True)
    with pytest.raises(LabelError, match="at most 2"):
        Labeller("v2", 2, 0).genre_ids("Blues Rock Pop")


def test_unknown_artist_suggests_close_matches(v2: Labeller, v3: Labeller) -> None:
    with pytest.raises(LabelError, match="unknown artist") as info:
        v3.artist_id("Alan Jakson")
    assert "'alan jackson'" in str(info.value) and "close matches" in str(info.value)
    with pytest.raises(LabelError) as info:
        v3.artist_id("beatles")
    assert "'the beatles'" in str(info.value)
    with pytest.raises(LabelError) as info:
        v2.artist_id("Alan Jakson")
    assert "'alan_jackson'" in str(info.value) and "'alan_jakson'" in str(info.value)
    assert str(info.value).count("', '") <= 4  # at most 5 suggestions
    with pytest.raises(LabelError, match="no close match"):
        v3.artist_id("qqqqqqqqqqqqqqqqqqqq")


def test_suggestions_offer_marked_names_as_their_plain_twins(v3: Labeller) -> None:
    """A U+200E-marked genre looks like its plain twin; offering both would show an escape the user can't type."""
    with pytest.raises(LabelError) as info:
        v3.genre_ids("psychedelic roc")
    message = str(info.value)
    assert "'psychedelic rock'" in message and "\\u200e" not in message and "\u200e" not in message
    assert message.count("'psychedelic rock'") == 1


def test_unknown_genre(v2: Labeller, v3: Labeller) -> None:
    with pytest.raises(LabelError, match="'blues'"):
        v2.genre_ids("Bluez Rock")
    with pytest.raises(LabelError, match="'country'"):
        v3.genre_ids("Contry")


def test_a_small_table_is_listed_whole() -> None:
    tiny = Labeller("tiny", 1, 0)
    with pytest.raises(LabelError) as info:
        tiny.genre_ids("polka")
    message = str(info.value)
    assert message.endswith("it knows classical, country, electronic, jazz, rock, unknown.")
    assert "jukebox labels" not in message  # nothing more to list
    assert "did you mean" not in message
    with pytest.raises(LabelError, match=r"did you mean 'rock'\? it knows classical"):
        tiny.genre_ids("rokc")


def test_allow_unknown_gives_id_zero(v2: Labeller, v3: Labeller) -> None:
    assert v3.artist_id("Nobody Has This Name", allow_unknown=True) == 0
    assert v2.artist_id("Nobody Has This Name", allow_unknown=True) == 0
    assert v3.genre_ids("no such genre", allow_unknown=True) == [0]
    # an unknown word is id 0, which the prior does not mask, unlike the -1 padding
    assert v2.genre_ids("Bluez Rock", allow_unknown=True) == [0, 8, -1, -1, -1]


def test_same_names_differ_between_priors(v2: Labeller, v3: Labeller) -> None:
    """With 1b_lyrics the top prior (v3) and the upsamplers (v2) get different ids."""
    assert (v3.artist_id("Alan Jackson"), v2.artist_id("Alan Jackson")) == (6785, 145)
    assert (v3.genre_ids("Country"), v2.genre_ids("Country")) == ([507], [11, -1, -1, -1, -1])


def test_tiny_label_set() -> None:
    labeller = Labeller("tiny", 1, 16)
    tiny = load_label_set("tiny")
    assert set(tiny.genres) >= {"unknown", "country", "rock", "jazz", "classical", "electronic"}
    assert labeller.genre_ids("Rock") == [tiny.genres["rock"]]
    assert labeller.artist_id("Béla and the Bits") == tiny.artists["béla and the bits"]
    with pytest.raises(LabelError):
        labeller.genre_ids("rock jazz")  # v3-style: one whole genre


def test_reverse_lookup() -> None:
    v2_set, v3_set = load_label_set("v2"), load_label_set("v3")
    assert v2_set.artist_names(0) == "_unknown_various"  # "", "unknown", "various", sorted and joined
    assert v2_set.artist_names(145) == "alan_jackson"
    assert v3_set.artist_names(6785) == "alan jackson"
    assert v3_set.artist_names(3675) == ""  # "speaker" moved to 7896
    assert v3_set.genre_names(507) == "country"
    with pytest.raises(LabelError):
        v3_set.genre_names(-1)
    with pytest.raises(LabelError):
        v3_set.artist_names(7898)


# ---- lyrics


def test_old_town_road_v3(v3: Labeller) -> None:
    tokens = v3.tokenize("old town road")
    assert tokens.ids[:4] == (41, 38, 30, 76)
    assert tokens.ids == (41, 38, 30, 76, 46, 41, 49, 40, 76, 44, 41, 27, 30)
    assert tokens == LyricsTokens(ids=tokens.ids, cleaned="old town road", dropped="")
    assert v3.detokenize(tokens.ids) == "old town road"


def test_plus_is_kept_in_v2_and_dropped_in_v3(v3: Labeller) -> None:
    lyrics_v2 = Labeller(*PRIOR_5B_LYRICS)
    assert lyrics_v2.tokenize("1+1").ids == (54, 70, 54)
    assert lyrics_v2.tokenize("1+1").dropped == ""
    v3_tokens = v3.tokenize("1+1")
    assert v3_tokens.ids == (54, 54)
    assert (v3_tokens.cleaned, v3_tokens.dropped) == ("11", "+")
    assert v3.tokenize("'").ids == (70,) and lyrics_v2.tokenize("'").ids == (71,)
    assert v3.tokenize(" \t\n").ids == (76, 77, 78) and lyrics_v2.tokenize(" \t\n").ids == (77, 78, 79)


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("wait—what", "wait--what"),
        ("\u201cquoted\u201d", '"quoted"'),
        ("it\u2019s", "it's"),
        ("Céline", "Celine"),
        ("Straße", "Strasse"),
        ("ÆON", "AEON"),
    ],
)
def test_unidecode_transliterates(v3: Labeller, text: str, cleaned: str) -> None:
    tokens = v3.tokenize(text)
    assert tokens.cleaned == cleaned and tokens.dropped == ""
    assert v3.detokenize(tokens.ids) == cleaned


def test_backslash_becomes_newline_and_case_is_kept(v3: Labeller) -> None:
    tokens = v3.tokenize("Line One\\line two")
    assert tokens.cleaned == "Line One\nline two"
    assert tokens.ids[0] == 12 and tokens.ids[9] == 38 and 78 in tokens.ids


def test_out_of_vocabulary_characters_are_reported(v3: Labeller) -> None:
    tokens = v3.tokenize("a*b#c{d}e+f")
    assert tokens.cleaned == "abcdef"
    assert tokens.dropped == "*#{}+"
    assert len(tokens.ids) == len(tokens.cleaned)
    assert v3.tokenize("").ids == ()


# ---- lyric windows


def test_short_lyrics_are_padded_at_the_front() -> None:
    labeller = Labeller("v3", 1, 8)
    tokens, indices = labeller.lyric_window([41, 38, 30], total_length=1000, offset=500, duration=100)
    assert tokens == [0, 0, 0, 0, 0, 41, 38, 30]
    assert indices == [-1, -1, -1, -1, -1, 0, 1, 2]
    assert labeller.lyric_window([], 1000, 0, 100) == ([0] * 8, [-1] * 8)


def test_window_follows_the_chunk_midpoint() -> None:
    labeller = Labeller("v3", 1, 10)
    full = list(range(100))
    # midpoint = int(100 * (450 + 100 / 2) / 1000) = 50 -> characters 45..54
    tokens, indices = labeller.lyric_window(full, total_length=1000, offset=450, duration=100)
    assert tokens == list(range(45, 55)) and indices == list(range(45, 55))
    # midpoint 0 is clamped to n/2: the first n characters
    assert labeller.lyric_window(full, 1000, 0, 10)[1] == list(range(0, 10))
    # midpoint int(100 * 1040 / 1000) = 104 is clamped to M - n/2: the last n characters
    assert labeller.lyric_window(full, 1000, 990, 100)[1] == list(range(90, 100))
    # exactly n characters: the whole list, whatever the offset
    assert labeller.lyric_window(full[:10], 1000, 990, 100) == (list(range(10)), list(range(10)))


def test_window_in_the_middle_of_a_long_song() -> None:
    """A 1b_lyrics window (786,432 samples) in the middle of a 3-minute song with 2,000 characters."""
    labeller = Labeller(*PRIOR_1B_LYRICS)
    total, duration = 180 * 44100, 786_432
    offset = total // 2 - duration // 2
    full = [27 + i % 26 for i in range(2000)]
    tokens, indices = labeller.lyric_window(full, total, offset, duration)
    midpoint = int(2000 * (offset + duration / 2) / total)
    assert midpoint == 1000
    assert indices == list(range(1000 - 192, 1000 + 192))
    assert tokens == full[1000 - 192 : 1000 + 192]


def test_odd_window_length() -> None:
    labeller = Labeller("v3", 1, 5)
    for offset in (0, 500, 999):
        tokens, indices = labeller.lyric_window(list(range(10)), 1000, offset, 10)
        assert len(tokens) == 5 and indices == list(range(indices[0], indices[0] + 5))
        assert indices[0] >= 0 and indices[-1] <= 9


@pytest.mark.parametrize("offset", [-1, 1000, 2000])
def test_offset_must_lie_in_the_song(offset: int) -> None:
    with pytest.raises(ConfigError, match="offset"):
        Labeller("v3", 1, 10).lyric_window(list(range(100)), 1000, offset, 100)
    with pytest.raises(ConfigError, match="offset"):
        Labeller(*UPSAMPLER).label_vector(0, [], [], total_length=1000, offset=offset, length=100)


# ---- label vectors


def test_label_vector_upsampler(v2: Labeller) -> None:
    y = v2.label_vector(
        v2.artist_id("Alan Jackson"),
        v2.genre_ids("Blues Rock"),
        v2.tokenize("ignored").ids,
        total_length=7_938_000,
        offset=262_144,
        length=1_048_576,
    )
    assert len(y) == v2.label_length == 9
    assert y == [7_938_000, 262_144, 1_048_576, 145, 2, 8, -1, -1, -1]


def test_label_vector_5b_lyrics() -> None:
    labeller = Labeller(*PRIOR_5B_LYRICS)
    full = labeller.tokenize("old town road").ids
    y = labeller.label_vector(
        labeller.artist_id("Alan Jackson"),
        labeller.genre_ids("Country"),
        full,
        total_length=7_938_000,
        offset=0,
        length=1_048_576,
    )
    assert len(y) == labeller.label_length == 521
    assert y[:9] == [7_938_000, 0, 1_048_576, 145, 11, -1, -1, -1, -1]
    assert y[9:] == [0] * (512 - len(full)) + list(full)


def test_label_vector_1b_lyrics(v3: Labeller) -> None:
    full = [27 + i % 26 for i in range(2000)]
    total, offset, length = 180 * 44100, 3_000_000, 786_432
    y = v3.label_vector(6785, [507], full, total_length=total, offset=offset, length=length)
    assert len(y) == v3.label_length == 389
    assert y[:5] == [total, offset, length, 6785, 507]
    assert y[5:] == v3.lyric_window(full, total, offset, length)[0]


def test_label_vector_pads_genres_and_checks_ids(v2: Labeller, v3: Labeller) -> None:
    assert v2.label_vector(1, [2], [], total_length=10, offset=0, length=5)[4:] == [2, -1, -1, -1, -1]
    with pytest.raises(ConfigError):
        v3.label_vector(7898, [0], [], total_length=10, offset=0, length=5)
    with pytest.raises(ConfigError):
        v3.label_vector(0, [0, 1], [], total_length=10, offset=0, length=5)
    with pytest.raises(ConfigError):
        v3.label_vector(0, [604], [], total_length=10, offset=0, length=5)
    with pytest.raises(ConfigError):
        v3.label_vector(0, [0], [79], total_length=10, offset=0, length=5)


def test_bad_labeller_arguments() -> None:
    with pytest.raises(ConfigError):
        Labeller("v2", 0, 0)
    with pytest.raises(ConfigError):
        Labeller("v3", 1, -1)


# ---- search (for `jukebox labels`)


def test_search_ignores_case_and_accents() -> None:
    v3_set = load_label_set("v3")
    assert ("céline dion", 5220) in search_labels(v3_set, "artists", "CELINE")
    assert ("céline dion", 5220) in search_labels(v3_set, "artists", "Céline")
    found = search_labels(v3_set, "artists", "jackson")
    assert ("alan jackson", 6785) in found
    assert all("jackson" in name for name, _ in found)
    assert [name for name, _ in found] == sorted(name for name, _ in found)


def test_search_v2_accepts_display_names() -> None:
    v2_set = load_label_set("v2")
    assert search_labels(v2_set, "artists", "Alan Jackson") == [("alan_jackson", 145)]
    assert ("c_line_dion", 557) in search_labels(v2_set, "artists", "Céline Dion")
    assert ("hip", 3) in search_labels(v2_set, "genres", "hip")


def test_search_everything_and_marked_names() -> None:
    v3_set = load_label_set("v3")
    assert len(search_labels(v3_set, "artists", None)) == len(v3_set.artists) == 7897
    assert len(search_labels(v3_set, "genres", "")) == len(v3_set.genres)
    found = search_labels(v3_set, "genres", "psychedelic rock")
    assert ("psychedelic rock", 185) in found and ("psychedelic rock\u200e", 7) in found
    assert search_labels(v3_set, "genres", "zzzzzz") == []
    with pytest.raises(ConfigError):
        search_labels(v3_set, "songs", None)  # type: ignore[arg-type]


def test_module_does_not_import_torch() -> None:
    code = "import sys, jukebox_cli.engine.models.labels as m; m.load_label_set('v3'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_extended_label_sets_keep_ids_and_add_rows() -> None:
    from jukebox_cli.engine.models.labels import LabelSet, load_label_set, new_label_set

    v3 = load_label_set("v3")
    extended = v3.extended(["Zac Brown Band", "My Garage Band"], ["country", "garage polka"])
    assert extended.version == "custom" and not extended.normalized
    assert extended.artists["zac brown band"] == v3.artists["zac brown band"], "known names keep their ids"
    assert extended.artists["my garage band"] == v3.n_artists == 7898, "new names start after the table"
    assert extended.genres["garage polka"] == 604 and extended.n_genres == 605
    again = LabelSet.from_dict(extended.to_dict())
    assert again == extended and Labeller("custom", 1, 0, again).artist_id("My Garage Band") == 7898

    v2 = load_label_set("v2").extended(["New Artist"], ["Blues Polka"])
    assert v2.normalized and v2.artists["new_artist"] == 4111 and "polka" in v2.genres
    assert v2.genres["blues"] == load_label_set("v2").genres["blues"]

    fresh = new_label_set(["b", "a", "b"], ["rock", "unknown"])
    assert dict(fresh.artists) == {"unknown": 0, "a": 1, "b": 2} and dict(fresh.genres) == {
        "unknown": 0,
        "rock": 1,
    }
    assert (fresh.n_artists, fresh.n_genres) == (3, 2)
