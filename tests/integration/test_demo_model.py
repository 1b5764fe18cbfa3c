"""The bundled ``demo`` model as a new user meets it: generate, continue, reconstruct and labels, offline.

These run the trained weights shipped in ``jukebox_cli/data/models/demo`` (``scripts/train_demo.sh``), so
they check what a user will hear: the top level is music-like (neither silence nor noise), the codec
reconstructs unseen audio, and the card describes exactly the files that ship.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from jukebox_cli.engine.audio.analysis import summarize
from jukebox_cli.engine.weights.shipped import shipped_folder

DEMO = shipped_folder("demo")
CARD = json.loads((DEMO / "card.json").read_text())
GENRE = CARD["genres"][0]
COMMON = ("--model", "demo", "--device", "cpu", "--quiet")


def test_shipped_files_are_those_the_card_describes() -> None:
    total = 0
    for name, record in CARD["files"].items():
        data = (DEMO / name).read_bytes()
        assert len(data) == record["bytes"] and hashlib.sha256(data).hexdigest() == record["sha256"], name
        total += len(data)
    assert total <= 25 * 1000 * 1000
    card = (DEMO / "MODEL_CARD.md").read_text()
    for level in ("0", "1", "2"):  # every held-out number in card.json is the one printed in the card
        assert f"{CARD['metrics']['vqvae']['spectral_convergence'][level]:.3f}" in card
        assert f"{CARD['metrics']['priors'][level]['bits_per_token']:.3f}" in card
    assert sorted((DEMO / "licenses").iterdir())


def test_labels_lists_the_corpus_genres(run_cli) -> None:
    result = run_cli("labels", "--genres", "--model", "demo", "--limit", "0", "--json")
    assert result.exit_code == 0, result.stderr
    names = {row["name"] for row in json.loads(result.stdout)["items"]}
    assert set(CARD["genres"]) <= names


def test_generate_all_levels_music_like(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli("generate", *COMMON, "--genre", GENRE, "--duration", "3", "-o", run)
    assert result.exit_code == 0, result.stderr
    for level in (2, 1, 0):
        audio, rate = sf.read(run / f"level_{level}" / "item_0.wav")
        assert rate == 22050 and len(audio) >= 2.9 * rate
    top, rate = sf.read(run / "level_2" / "item_0.wav", dtype="float32")
    summary = summarize(top, rate)
    noise = summarize(np.random.default_rng(0).normal(0, 0.1, len(top)).astype(np.float32), rate)
    assert summary.rms_dbfs > -50  # not silence
    assert summary.spectral_flatness < noise.spectral_flatness / 4  # not white noise
    assert summary.frame_chroma_entropy_bits < noise.frame_chroma_entropy_bits


def test_unknown_genre_is_one_line_error(run_cli, tmp_path: Path) -> None:
    result = run_cli("generate", *COMMON, "--genre", "polka", "--duration", "3", "-o", tmp_path / "run")
    assert result.exit_code != 0
    assert "polka" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "level_2").exists()


def test_reconstruct_unseen_audio(run_cli, tmp_path: Path) -> None:
    from tests.conftest import music_like

    song = tmp_path / "song.wav"
    sf.write(song, music_like(3.0, 44100), 44100)
    result = run_cli("reconstruct", song, "--model", "demo", "--json", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    levels = {row["level"]: row for row in json.loads(result.stdout)["levels"]}
    # trained codec: level 0 keeps most of the spectrum, and finer levels are better
    assert levels[0]["spectral_convergence"] < 0.5
    assert levels[0]["spectral_convergence"] < levels[2]["spectral_convergence"]


def test_continue_a_song(run_cli, tmp_path: Path) -> None:
    from tests.conftest import music_like

    song = tmp_path / "song.wav"
    sf.write(song, music_like(3.0, 44100), 44100)
    run = tmp_path / "more"
    result = run_cli("continue", song, *COMMON, "--genre", GENRE, "--prompt-seconds", "2", "--duration", "4",
                     "-o", run)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    audio, rate = sf.read(run / "level_0" / "item_0.wav")
    assert len(audio) >= 3.9 * rate and np.abs(audio).max() > 0.01


def test_lyrics_without_lyrics_conditioning_are_noted(run_cli, tmp_path: Path) -> None:
    args = ("--model", "demo", "--device", "cpu", "--genre", GENRE, "--levels", "2", "--duration", "3")
    result = run_cli("generate", *args, "--lyrics", "la la la", "-o", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert "no lyrics conditioning" in result.stderr
    assert (tmp_path / "run" / "level_2" / "item_0.wav").is_file()
