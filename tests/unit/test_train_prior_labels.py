"""Prior training tasks: label dropout (how many chunks lose their artist and genre, what stays) and the
logged sample."""

from __future__ import annotations

import dataclasses

import pytest
import soundfile as sf

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_vqvae
from jukebox_cli.engine.models.labels import new_label_set
from jukebox_cli.engine.models.prior import Prior
from jukebox_cli.engine.train.data import AudioCorpus
from jukebox_cli.engine.train.prior import PriorTask, training_prior_config
from tests.conftest import music_like

SR = 22050
ARTIST, GENRE = 3, 4  # columns of a label vector: [total_length, offset, length, artist, genre, lyrics...]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple:
    """A tiny VQ-VAE, a lyrics-conditioned top prior for it, and two labelled songs with lyrics."""
    folder = tmp_path_factory.mktemp("songs")
    vqvae = build_vqvae("tiny", "cpu", 0).eval()
    labels = new_label_set(["ann", "bob"], ["rock", "jazz"])
    config = training_prior_config("tiny", vqvae.config, vqvae.levels - 1, labels)
    prior = Prior(dataclasses.replace(config, n_tokens=16, single_enc_dec=True))
    for name, seed in (("a", 1), ("b", 2)):
        sf.write(folder / f"{name}.wav", music_like(3.0, SR, seed=seed), SR)
    (folder / "meta.csv").write_text(
        "path,artist,genre,lyrics\na.wav,ann,rock,la la la\nb.wav,bob,jazz,oh oh\n"
    )
    corpus = AudioCorpus.scan(folder, sample_rate=SR, sample_length=prior.config.window_samples,
                              metadata=folder / "meta.csv", cache_dir=folder / "cache", held_out=0.0)  # fmt: skip
    return vqvae, prior, corpus


def task(parts: tuple, **kwargs) -> PriorTask:
    vqvae, prior, corpus = parts
    return PriorTask(prior, vqvae, corpus, batch_size=64, **kwargs)


def test_dropout_share_and_untouched_columns(parts) -> None:
    plain, dropping = task(parts), task(parts, label_dropout=0.1, artist_dropout=0.3)
    no_artist = no_genre = total = 0
    for step in range(20):
        _, kept = plain.train_batch(step, 0, 0, 1)
        audio, labels = dropping.train_batch(step, 0, 0, 1)
        assert (labels[:, ARTIST] != 0).any() and (kept[:, ARTIST] != 0).all()  # the corpus' names are not 0
        artist_gone, genre_gone = labels[:, ARTIST] == 0, labels[:, GENRE] == 0
        assert not (genre_gone & ~artist_gone).any()  # a chunk without its genre lacks its artist too
        no_artist, no_genre, total = (
            no_artist + int(artist_gone.sum()),
            no_genre + int(genre_gone.sum()),
            total + len(labels),
        )
        # Timing and lyrics untouched, and the same chunks as without dropout.
        others = [i for i in range(labels.shape[1]) if i not in (ARTIST, GENRE)]
        assert (labels[:, others] == kept[:, others]).all()
        assert (labels[:, others[3:]] != 0).any()  # the lyric columns hold lyrics
        assert (audio == plain.train_batch(step, 0, 0, 1)[0]).all()
        assert (labels[~artist_gone] == kept[~artist_gone]).all()
    assert abs(no_artist / total - 0.3) < 0.05 and abs(no_genre / total - 0.1) < 0.04  # 1280 draws
    again = task(parts, label_dropout=0.1, artist_dropout=0.3).train_batch(7, 0, 0, 1)[1]
    assert (again == dropping.train_batch(7, 0, 0, 1)[1]).all()  # a resumed run drops the same labels


def test_held_out_keeps_labels_and_config_records_dropout(parts) -> None:
    dropping = task(parts, label_dropout=0.5)
    assert dropping.artist_dropout == 0.5  # the artist share defaults to the label share
    chunks = dropping.corpus.sample_batch("train", 16, seed=0, step=0)  # as evaluate() labels its chunks
    assert (dropping._labels(chunks)[:, ARTIST] != 0).all()
    assert dropping.config()["label_dropout"] == 0.5 and "label_dropout" not in task(parts).config()


@pytest.mark.parametrize(("label", "artist"), [(-0.1, None), (1.0, None), (0.3, 0.1)])
def test_bad_dropout_is_refused(parts, label: float, artist: float | None) -> None:
    with pytest.raises(ConfigError, match="dropout"):
        task(parts, label_dropout=label, artist_dropout=artist)


def test_media_samples_a_window(parts) -> None:
    """The sample logged at evaluation time goes through the sampling API (it once passed an old argument)."""
    vqvae, prior, corpus = parts
    held = AudioCorpus.scan(corpus.root, sample_rate=SR, sample_length=corpus.sample_length,
                            cache_dir=corpus.root / "cache", held_out=0.5)  # fmt: skip
    items = PriorTask(prior.eval(), vqvae, held, batch_size=2).media(prior, step=3)
    assert items["sample_T1"].samples.shape == items["truth"].samples.shape
