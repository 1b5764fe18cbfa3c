"""Training data: scan, decoded-audio cache, skipped files, metadata, splits and deterministic sampling."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox_cli.engine.audio.io import load_audio, stream_audio
from jukebox_cli.engine.audio.quality import median_level_db
from jukebox_cli.engine.errors import ConfigError, TrainingError
from jukebox_cli.engine.progress import Advanced, StageFinished, StageStarted
from jukebox_cli.engine.train import data
from jukebox_cli.engine.train.data import AudioCorpus
from tests.conftest import music_like

SR = 22050
LENGTH = 4096  # 0.19 s at SR


def write(path: Path, seconds: float, sample_rate: int = SR, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, music_like(seconds, sample_rate, channels, seed), sample_rate)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three good songs (one stereo 44.1 kHz FLAC, one in a subfolder), a short, a corrupt and ignored files."""
    folder = tmp_path / "songs"
    write(folder / "a.wav", 1.0, seed=1)
    write(folder / "b.flac", 0.8, sample_rate=44100, channels=2, seed=2)
    write(folder / "sub" / "c.wav", 2.0, sample_rate=44100, seed=3)
    write(folder / "short.wav", 0.1, seed=4)
    (folder / "bad.wav").write_bytes(b"this is not audio at all " * 40)
    (folder / "notes.txt").write_text("not a song")
    write(folder / ".hidden" / "d.wav", 1.0)
    return folder


def scan(root: Path, tmp_path: Path, **kwargs) -> AudioCorpus:
    kwargs = {"cache_dir": tmp_path / "cache", "held_out": 0.0, **kwargs}
    return AudioCorpus.scan(root, sample_rate=SR, sample_length=LENGTH, **kwargs)


@pytest.fixture
def decoder_calls(monkeypatch) -> list[str]:
    """Records which files the scan decodes (cache misses), still decoding them for real."""
    calls: list[str] = []

    def counting(path, sample_rate, **kwargs):
        calls.append(Path(path).name)
        return stream_audio(path, sample_rate, **kwargs)

    monkeypatch.setattr(data, "stream_audio", counting)
    return calls


def relative(corpus: AudioCorpus, root: Path) -> list[str]:
    return [s.path.relative_to(root).as_posix() for s in corpus.songs]


def test_scan_decodes_recursively_at_the_model_rate(root: Path, tmp_path: Path) -> None:
    events = []
    corpus = scan(root, tmp_path, progress=events.append)

    assert relative(corpus, root) == ["a.wav", "b.flac", "sub/c.wav"]
    assert all(s.path.is_absolute() for s in corpus.songs)
    for song, seconds in zip(corpus.songs, (1.0, 0.8, 2.0), strict=True):
        assert abs(song.n_samples - seconds * SR) <= 1
        assert (song.artist, song.genre, song.lyrics, song.split) == ("unknown", "unknown", "", "train")
    expected = load_audio(root / "sub" / "c.wav", SR)  # mono mix + resample, as load_audio does it
    chunk = corpus.chunk(2, 1000)
    assert chunk.audio.dtype == torch.float32 and chunk.audio.shape == (LENGTH,)
    np.testing.assert_array_equal(chunk.audio.numpy(), expected[1000 : 1000 + LENGTH])
    assert (chunk.song, chunk.offset, chunk.total_length) == (2, 1000, corpus.songs[2].n_samples)
    assert events[0] == StageStarted("decode", 5, "file")
    assert events[1:] == [Advanced("decode")] * 5 + [StageFinished("decode")]


def test_songs_are_cached_block_by_block_and_equal_a_whole_decode(
    root: Path, tmp_path: Path, monkeypatch
) -> None:
    # Short blocks, so that every song spans many: the cache must not depend on how the stream is cut.
    monkeypatch.setattr(data, "stream_audio", lambda path, rate: stream_audio(path, rate, block_seconds=0.07))
    corpus = scan(root, tmp_path)
    for index, song in enumerate(corpus.songs):
        whole = load_audio(song.path, SR)
        assert song.n_samples == len(whole)
        np.testing.assert_array_equal(
            corpus.chunk(index, song.n_samples - LENGTH).audio.numpy(), whole[-LENGTH:]
        )
        np.testing.assert_array_equal(corpus.chunk(index, 0).audio.numpy(), whole[:LENGTH])


def test_short_and_corrupt_files_are_skipped_with_reasons(root: Path, tmp_path: Path) -> None:
    reasons = {path.name: why for path, why in scan(root, tmp_path).skipped}

    assert reasons["short.wav"] == "too short: 0.10 s < 0.19 s"
    assert reasons["bad.wav"].startswith("unreadable: Cannot decode bad.wav: ")
    assert "\n" not in reasons["bad.wav"] and str(root) not in reasons["bad.wav"]
    assert set(reasons) == {"short.wav", "bad.wav"}


def test_second_scan_hits_the_cache_and_a_changed_file_is_decoded_again(
    root: Path, tmp_path: Path, decoder_calls: list[str]
) -> None:
    first = scan(root, tmp_path)
    assert sorted(decoder_calls) == ["a.wav", "b.flac", "bad.wav", "c.wav", "short.wav"]
    assert not list((tmp_path / "cache" / "audio").glob(".*"))  # no temporary files left behind

    decoder_calls.clear()
    second = scan(root, tmp_path)
    assert decoder_calls == ["bad.wav"]  # only the file that never decoded is tried again
    assert second.fingerprint() == first.fingerprint()

    decoder_calls.clear()
    write(root / "a.wav", 1.5, seed=9)
    third = scan(root, tmp_path)
    assert sorted(decoder_calls) == ["a.wav", "bad.wav"]
    assert abs(third.songs[0].n_samples - 1.5 * SR) <= 1
    np.testing.assert_array_equal(third.chunk(0, 0).audio.numpy(), load_audio(root / "a.wav", SR)[:LENGTH])


def test_cache_under_root_is_not_scanned(root: Path, tmp_path: Path) -> None:
    cache = root / "cache"
    corpus = AudioCorpus.scan(root, sample_rate=SR, sample_length=LENGTH, cache_dir=cache, held_out=0)
    write(cache / "stray.wav", 1.0)  # audio inside the cache folder is not a song

    again = AudioCorpus.scan(root, sample_rate=SR, sample_length=LENGTH, cache_dir=cache, held_out=0)
    assert relative(again, root) == relative(corpus, root) == ["a.wav", "b.flac", "sub/c.wav"]


def test_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        scan(tmp_path / "missing", tmp_path)
    write(tmp_path / "file.wav", 1.0)
    with pytest.raises(ConfigError, match="is not a folder"):
        scan(tmp_path / "file.wav", tmp_path)

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("no songs")
    with pytest.raises(TrainingError, match=r"No audio files \(wav, flac, ogg, mp3, \.\.\.\) under .*empty"):
        scan(empty, tmp_path)

    bad = tmp_path / "bad"
    write(bad / "short.wav", 0.05)
    (bad / "broken.flac").write_bytes(b"\0" * 100)
    with pytest.raises(TrainingError, match="None of the 2 audio files") as info:
        scan(bad, tmp_path)
    assert "broken.flac: unreadable" in str(info.value) and "short.wav: too short" in str(info.value)
    assert ".;" not in str(info.value)


def test_bad_arguments_raise_config_error(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="held_out"):
        scan(root, tmp_path, held_out=1.0)
    with pytest.raises(ConfigError, match="sample_length"):
        AudioCorpus.scan(root, sample_rate=SR, sample_length=0, cache_dir=tmp_path / "cache")
    corpus = scan(root, tmp_path)
    with pytest.raises(ConfigError, match="Offset"):
        corpus.chunk(0, corpus.songs[0].n_samples - LENGTH + 1)
    with pytest.raises(ConfigError, match="split"):
        corpus.split("test")


def test_csv_metadata_labels_songs(root: Path, tmp_path: Path) -> None:
    meta = tmp_path / "meta.csv"
    meta.write_text(
        'Path,artist,genre,lyrics\na.wav,Alice,jazz,"la la\nla"\n\n'
        f"{root / 'sub' / 'c.wav'},Carol,,\nshort.wav,Sam,pop,\n",
        encoding="utf-8",
    )
    songs = scan(root, tmp_path, metadata=meta).songs

    assert (songs[0].artist, songs[0].genre, songs[0].lyrics) == ("Alice", "jazz", "la la\nla")
    assert (songs[1].artist, songs[1].genre, songs[1].lyrics) == ("unknown", "unknown", "")  # no row
    assert (songs[2].artist, songs[2].genre, songs[2].lyrics) == ("Carol", "unknown", "")  # absolute path


def test_jsonl_metadata_labels_songs(root: Path, tmp_path: Path) -> None:
    meta = tmp_path / "meta.jsonl"
    rows = [{"path": "b.flac", "artist": "Bob", "lyrics": "oh"}, {"path": "sub/c.wav", "genre": "rock"}]
    meta.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    songs = scan(root, tmp_path, metadata=meta).songs

    assert [(s.artist, s.genre, s.lyrics) for s in songs] == [
        ("unknown", "unknown", ""),
        ("Bob", "unknown", "oh"),
        ("unknown", "rock", ""),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "m.csv",
            "path,artist\na.wav,A\nnope.wav,B\ngone/x.wav,C\n",
            r"2 file\(s\) that do not exist.*nope\.wav",
        ),
        ("m.csv", "file,artist\na.wav,A\n", "line 1: the header must name a 'path' column"),
        ("m.csv", "path,artist\na.wav,A\nb.flac,B,extra\n", "line 3: 3 fields but the header has 2"),
        ("m.csv", 'path,lyrics\na.wav,"two\nlines"\n\nb.flac,B,x\n', "line 5: 3 fields"),
        ("m.csv", "path,artist\na.wav,A\na.wav,B\n", "line 3: a.wav is labelled a second time"),
        ("m.jsonl", '{"path": "a.wav"}\n{"path": "b.flac",}\n', "line 2: bad JSON"),
        ("m.jsonl", '{"path": "a.wav"}\n\n["b.flac"]\n', "line 3: expected a JSON object"),
        ("m.jsonl", '{"path": "a.wav", "artist": 3}\n', "line 1: 'artist' is not text"),
        ("m.jsonl", '{"artist": "A"}\n', "line 1: the 'path' is missing"),
        ("m.txt", "path\n", "must be a .csv, .jsonl or .json"),
    ],
)
def test_bad_metadata_raises_config_error(
    root: Path, tmp_path: Path, name: str, text: str, message: str
) -> None:
    meta = tmp_path / name
    meta.write_text(text)
    with pytest.raises(ConfigError, match=message):
        scan(root, tmp_path, metadata=meta)


def test_missing_metadata_files_are_counted_and_listed(root: Path, tmp_path: Path) -> None:
    meta = tmp_path / "m.csv"
    meta.write_text("path,genre\n" + "".join(f"x{i}.wav,g\n" for i in range(5)))
    with pytest.raises(ConfigError, match=r"5 file\(s\).*x0\.wav, x1\.wav, x2\.wav \(and 2 more\)"):
        scan(root, tmp_path, metadata=meta)
    with pytest.raises(ConfigError, match="does not exist"):
        scan(root, tmp_path, metadata=tmp_path / "none.csv")


def test_sample_batch_is_a_pure_function_of_its_arguments(root: Path, tmp_path: Path) -> None:
    corpus = scan(root, tmp_path)
    again = scan(root, tmp_path)

    def key(chunks):
        return [(c.song, c.offset) for c in chunks]

    batch = corpus.sample_batch("train", 16, seed=3, step=7)
    assert key(batch) == key(again.sample_batch("train", 16, seed=3, step=7, rank=0))
    assert all(
        torch.equal(a.audio, b.audio)
        for a, b in zip(batch, corpus.sample_batch("train", 16, seed=3, step=7), strict=True)
    )
    assert key(batch) != key(corpus.sample_batch("train", 16, seed=3, step=8))
    assert key(batch) != key(corpus.sample_batch("train", 16, seed=3, step=7, rank=1))
    assert key(batch) != key(corpus.sample_batch("train", 16, seed=4, step=7))
    for chunk in corpus.sample_batch("train", 64, seed=0, step=0):
        song = corpus.songs[chunk.song]
        assert chunk.audio.shape == (LENGTH,)
        assert 0 <= chunk.offset <= song.n_samples - LENGTH and chunk.total_length == song.n_samples
    with pytest.raises(TrainingError, match="eval split has no songs"):
        corpus.sample_batch("eval", 2, seed=0, step=0)


def test_longer_songs_are_drawn_more_often(root: Path, tmp_path: Path) -> None:
    corpus = scan(root, tmp_path)
    counts = np.bincount([c.song for c in corpus.sample_batch("train", 600, seed=1, step=0)], minlength=3)
    assert counts[2] > counts[0] > counts[1]  # 2.0 s > 1.0 s > 0.8 s


def test_split_follows_the_path_hash_and_is_stable_when_songs_are_added(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(12):
        write(root / f"song{i:02d}.wav", 0.2, seed=i)
    before = scan(root, tmp_path, held_out=0.3)
    splits = dict(zip(relative(before, root), (s.split for s in before.songs), strict=True))
    for rel, split in splits.items():
        bucket = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 10_000
        assert split == ("eval" if bucket < 3000 else "train")
    assert "eval" in splits.values() and "train" in splits.values()
    assert before.split("eval") == [i for i, s in enumerate(before.songs) if s.split == "eval"]

    for i in range(12, 16):
        write(root / "new" / f"song{i:02d}.wav", 0.2, seed=i)
    after = scan(root, tmp_path, held_out=0.3)
    after_splits = dict(zip(relative(after, root), (s.split for s in after.songs), strict=True))
    assert {rel: after_splits[rel] for rel in splits} == splits


def test_small_corpora_still_have_an_eval_split(root: Path, tmp_path: Path) -> None:
    two = scan(root, tmp_path, held_out=0.0001)
    assert len(two.split("eval")) == 1 and len(two.split("train")) == 2

    lone = tmp_path / "lone"
    write(lone / "only.wav", 1.0)
    corpus = scan(lone, tmp_path, held_out=0.99)  # its hash says "eval", but it is all there is to train on
    assert corpus.songs[0].split == "train" and corpus.split("train") == corpus.split("eval") == [0]
    assert corpus.describe()["eval"]["same_as_train"] is True
    assert scan(lone, tmp_path, held_out=0).split("eval") == []


def test_eval_chunks_are_fixed_and_spread_over_the_eval_songs(root: Path, tmp_path: Path) -> None:
    corpus = scan(root, tmp_path, held_out=0.99)  # every song but one held out
    chunks = corpus.eval_chunks(8)
    again = scan(root, tmp_path, held_out=0.99).eval_chunks(8)

    assert len(chunks) == 8
    assert [(c.song, c.offset) for c in chunks] == [(c.song, c.offset) for c in again]
    assert {c.song for c in chunks} == set(corpus.split("eval"))
    assert all(c.audio.shape == (LENGTH,) and c.offset + LENGTH <= c.total_length for c in chunks)
    assert scan(root, tmp_path).eval_chunks(4) == []


def test_fingerprint_changes_with_labels_and_describe_is_json(root: Path, tmp_path: Path) -> None:
    meta = tmp_path / "m.csv"
    meta.write_text("path,artist\na.wav,Alice\n")
    labelled = scan(root, tmp_path, metadata=meta)
    assert labelled.fingerprint() == scan(root, tmp_path, metadata=meta).fingerprint()
    meta.write_text("path,artist\na.wav,Alicia\n")
    assert scan(root, tmp_path, metadata=meta).fingerprint() != labelled.fingerprint()
    assert scan(root, tmp_path, held_out=0.5).fingerprint() != scan(root, tmp_path).fingerprint()

    summary = json.loads(json.dumps(labelled.describe()))
    assert summary["songs"] == 3 and summary["train"]["songs"] == 3 and summary["eval"]["songs"] == 0
    assert summary["train"]["hours"] == pytest.approx(3.8 / 3600, abs=1e-4)
    assert summary["skipped"] == 2 and summary["skipped_by_reason"] == {"too short": 1, "unreadable": 1}


def test_corpus_pickles_for_dataloader_workers(root: Path, tmp_path: Path) -> None:
    import pickle

    corpus = scan(root, tmp_path)
    clone = pickle.loads(pickle.dumps(corpus))
    assert torch.equal(clone.chunk(1, 10).audio, corpus.chunk(1, 10).audio)
    assert os.fspath(clone.root) == os.fspath(corpus.root)


def test_quiet_training_chunks_are_drawn_again(tmp_path: Path) -> None:
    folder = tmp_path / "fade"
    folder.mkdir()
    loud = music_like(1.0, SR)
    sf.write(folder / "song.wav", np.concatenate([loud, 0.001 * loud]), SR)  # a second at about -60 dB
    plain = scan(folder, tmp_path)
    cleaned = scan(folder, tmp_path, min_level_db=-35.0)

    def levels(corpus: AudioCorpus) -> list[float]:
        batch = corpus.sample_batch("train", 32, seed=0, step=1)
        return [median_level_db(c.audio.numpy()) for c in batch]

    assert min(levels(plain)) < -35  # without the option, quiet chunks get through
    assert min(levels(cleaned)) >= -35
    assert levels(cleaned) == levels(scan(folder, tmp_path, min_level_db=-35.0))  # still deterministic
    assert plain.fingerprint() != cleaned.fingerprint()  # a resumed run notices the change
    assert cleaned.describe()["min_level_db"] == -35.0
    with pytest.raises(ConfigError, match="min_level_db"):
        scan(folder, tmp_path, min_level_db=6.0)


def test_loud_span_finds_where_the_music_crosses_the_level() -> None:
    loud = music_like(10.0, SR)
    hushed = 0.003  # about -50 dB
    song = np.concatenate([hushed * music_like(5.0, SR), loud, hushed * music_like(4.0, SR)])
    start, end = data.loud_span(song, SR, -30.0)
    # Within a frame or two of the crossings, not half a 3 s window before or after them.
    assert abs(start - 5 * SR) < 2 * data.HOP and abs(end - 15 * SR) < 2 * data.HOP
    assert data.loud_span(loud, SR, -30.0) == (0, loud.size)  # loud to both ends: nothing trimmed
    assert data.loud_span(0.003 * loud, SR, -30.0) is None
    assert data.loud_span(loud[: SR // 2], SR, -30.0) == (0, SR // 2)  # shorter than a window: judged whole
    assert data.loud_span(np.zeros(0), SR, -30.0) is None


def test_trimmed_edges_start_songs_with_their_music(tmp_path: Path) -> None:
    folder = tmp_path / "intros"
    folder.mkdir()
    loud = music_like(8.0, SR)
    intro, tail = 0.003 * music_like(6.0, SR), 0.003 * loud[: 4 * SR]
    sf.write(folder / "intro.wav", np.concatenate([intro, loud, tail]), SR)
    sf.write(folder / "plain.wav", loud, SR)
    sf.write(folder / "hushed.wav", 0.003 * loud, SR)  # never reaches the level
    brief = np.concatenate([0.003 * loud, loud[: LENGTH // 2]])  # loud too briefly
    sf.write(folder / "brief.wav", brief, SR)
    whole = scan(folder, tmp_path)
    assert [s.path.name for s in whole.songs] == ["brief.wav", "hushed.wav", "intro.wav", "plain.wav"]
    trimmed = scan(folder, tmp_path, trim_edges_db=-30.0, min_level_db=-35.0)

    assert [s.path.name for s in trimmed.songs] == ["intro.wav", "plain.wav"]
    reasons = {p.name: why.split(":")[0] for p, why in trimmed.skipped}
    assert reasons == {"brief.wav": "too quiet", "hushed.wav": "too quiet"}
    intro, plain = trimmed.songs
    assert abs(intro.start - 6 * SR) < 2 * data.HOP and abs(intro.n_samples - 8 * SR) < 4 * data.HOP
    assert (plain.start, plain.n_samples, plain.trimmed) == (0, loud.size, 0)
    assert intro.trimmed == 18 * SR - intro.n_samples  # the intro and the quiet tail
    assert trimmed.describe()["trimmed"] == {"songs": 1, "hours": round(intro.trimmed / SR / 3600, 4)}
    # Offsets and the timing label's total length count from the song's new start.
    chunk = trimmed.chunk(0, 0)
    assert chunk.total_length == intro.n_samples
    assert np.array_equal(chunk.audio.numpy(), whole.chunk(2, intro.start).audio.numpy())
    assert median_level_db(chunk.audio.numpy()) > -30
    every = [c for step in range(4) for c in trimmed.sample_batch("train", 16, seed=0, step=step)]
    assert min(median_level_db(c.audio.numpy()) for c in every) > -35
    assert trimmed.fingerprint() != scan(folder, tmp_path, min_level_db=-35.0).fingerprint()
    assert trimmed.describe()["trim_edges_db"] == -30.0 and whole.describe()["trim_edges_db"] is None
    with pytest.raises(ConfigError, match="trim_edges_db"):
        scan(folder, tmp_path, trim_edges_db=0.0)


def test_song_spans_are_found_once_and_kept_beside_the_decoded_audio(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "songs"
    folder.mkdir()
    sf.write(folder / "intro.wav", np.concatenate([0.003 * music_like(4.0, SR), music_like(4.0, SR)]), SR)
    first = scan(folder, tmp_path, trim_edges_db=-30.0)
    sidecars = list((tmp_path / "cache" / "audio").glob("*.span-30.json"))
    assert len(sidecars) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the span was found again")

    monkeypatch.setattr(data, "loud_span", fail)
    assert scan(folder, tmp_path, trim_edges_db=-30.0).songs == first.songs
    sidecars[0].write_text("{damaged")  # found again, not trusted
    monkeypatch.undo()
    assert scan(folder, tmp_path, trim_edges_db=-30.0).songs == first.songs
