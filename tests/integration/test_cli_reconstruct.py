"""``jukebox reconstruct`` and ``jukebox analyze`` as a user runs them: files, audio, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jukebox_cli.engine import build_vqvae
from jukebox_cli.engine.checkpoints.layouts import export_state_dict
from jukebox_cli.engine.checkpoints.native import save_native
from tests.conftest import manifest, music_like


def _assert_clean_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("error:") and fragment in first, result.stderr
    assert "Traceback" not in result.stderr
    # A usage error (2) is its one line; other errors add one hint line.
    assert len(rest) == (0 if code == 2 else 1), result.stderr


def test_reconstruct_writes_every_level(run_cli, song: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("reconstruct", song, "--model", "tiny", "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    for level, hop in zip((0, 1, 2), (8, 32, 128), strict=True):
        audio, rate = sf.read(out / f"level_{level}.wav")
        assert rate == 22050
        assert len(audio) == 44100 // hop * hop  # 2 s at 22.05 kHz, rounded down to whole codes
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert sf.info(out / "input.wav").frames == 44100
    summary = json.loads((out / "metrics.json").read_text())
    assert [row["level"] for row in summary["levels"]] == [2, 1, 0]
    assert all(np.isfinite(row["spectral_convergence_db"]) for row in summary["levels"])
    assert (out / "reconstruction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "untrained random weights" in result.stderr
    assert "spectral conv" in result.stdout and "wrote" in result.stdout
    assert not list(out.glob(".*tmp")), "no temporary files left"


def test_reconstruct_json_levels_and_flac(run_cli, song: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "reconstruct",
        song,
        "-m",
        "tiny",
        "-o",
        out,
        "--levels",
        "0,2",
        "--format",
        "flac",
        "--json",
        "--no-figure",
        "--bit-depth",
        "24",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [row["level"] for row in data["levels"]] == [0, 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "input.flac",
        "level_0.flac",
        "level_2.flac",
        "metrics.json",
    ]
    assert sf.info(out / "level_0.flac").subtype == "PCM_24"


def test_reconstruct_with_a_native_checkpoint_and_an_original_file(
    run_cli, song: Path, tmp_path: Path
) -> None:
    model = build_vqvae("tiny", seed=11)
    native = save_native(model, tmp_path / "model" / "vqvae.safetensors")
    original = tmp_path / "vqvae.pth.tar"
    torch.save({"model": export_state_dict(model, "original")}, original)
    hps_config = {"sr": 22050, "emb_width": 16, "l_bins": 64, "width": 8, "depth": 2}
    torch.save({"hps": hps_config, "model": export_state_dict(model, "original")}, original)
    outputs = []
    for spec in (native.parent, original):
        out = tmp_path / f"out_{len(outputs)}"
        result = run_cli("reconstruct", song, "-m", spec, "-o", out, "--levels", "1", "--no-figure", "-q")
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "" and "untrained" not in result.stderr
        outputs.append(sf.read(out / "level_1.wav")[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_existing_output_is_refused_then_forced(run_cli, song: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "level_2.wav").write_bytes(b"precious")
    result = run_cli("reconstruct", song, "-m", "tiny", "-o", out, "--levels", "2")
    _assert_clean_error(result, 7, "level_2.wav already exists")
    assert (out / "level_2.wav").read_bytes() == b"precious"
    assert run_cli("reconstruct", song, "-m", "tiny", "-o", out, "--levels", "2", "--force").exit_code == 0
    assert sf.info(out / "level_2.wav").frames > 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "code", "fragment"),
    [
        (lambda d: d / "missing.wav", 4, "missing.wav"),
        (lambda d: d, 4, "is a directory"),
        (lambda d: _write(d / "empty.wav", b""), 4, "empty"),
        (
            lambda d: _write(d / "corrupt.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4),
            4,
            "corrupt.wav",
        ),
        (lambda d: _write(d / "notes.txt", b"just some text\n" * 50), 4, "notes.txt"),
    ],
    ids=["missing", "directory", "empty", "corrupt", "unsupported"],
)
def test_unreadable_input(run_cli, tmp_path: Path, make, code: int, fragment: str) -> None:
    out = tmp_path / "out"
    result = run_cli("reconstruct", make(tmp_path), "-m", "tiny", "-o", out)
    _assert_clean_error(result, code, fragment)
    assert not out.exists(), "nothing written on failure"


def test_unusable_audio(run_cli, tmp_path: Path) -> None:
    nan = tmp_path / "nan.wav"
    data = music_like(1.0, 22050)
    data[100] = np.nan
    sf.write(nan, data, 22050, subtype="FLOAT")
    _assert_clean_error(run_cli("reconstruct", nan, "-m", "tiny", "-o", tmp_path / "a"), 6, "NaN")
    short = tmp_path / "short.wav"
    sf.write(short, music_like(0.004, 22050), 22050)  # 88 samples < one top-level code (128)
    _assert_clean_error(
        run_cli("reconstruct", short, "-m", "tiny", "-o", tmp_path / "b"), 6, "shorter than one code"
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_models_and_options(run_cli, song: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _assert_clean_error(run_cli("reconstruct", song, "-m", "jukebox", "-o", out), 3, "offline mode is on")
    _assert_clean_error(run_cli("reconstruct", song, "-m", "nope", "-o", out), 3, "no model of that name")
    prior = tmp_path / "prior_level_0.pth.tar"
    keys = list(manifest("original/prior_level_0")["keys"])[:20]
    torch.save({"model": {k: torch.zeros(1) for k in keys}}, prior)
    _assert_clean_error(run_cli("reconstruct", song, "-m", prior, "-o", out), 3, "looks like a prior")
    _assert_clean_error(
        run_cli("reconstruct", song, "-m", "tiny", "-o", out, "--levels", "5"), 2, "levels 0..2"
    )
    _assert_clean_error(
        run_cli("reconstruct", song, "-m", "tiny", "-o", out, "--device", "cuda:7"), 5, "cuda:7"
    )
    assert not out.exists()


def test_debug_shows_the_traceback(run_cli, tmp_path: Path) -> None:
    from jukebox_cli.engine.errors import AudioNotFound

    with pytest.raises(AudioNotFound):
        run_cli("--debug", "reconstruct", tmp_path / "missing.wav")


def test_analyze(run_cli, song: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("analyze", song)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "song_analysis.png").read_bytes()[:4] == b"\x89PNG"
    assert "chroma entropy" in result.stdout
    _assert_clean_error(run_cli("analyze", song), 7, "song_analysis.png already exists")
    result = run_cli("analyze", song, "-o", tmp_path / "fig.png", "--json")
    data = json.loads(result.stdout)
    assert data["channels"] == 2 and data["file_sample_rate"] == 44100
    assert 0 <= data["spectral_flatness"] <= 1 and 0 <= data["chroma_entropy_bits"] <= np.log2(12) + 1e-6
    assert 0 <= data["frame_chroma_entropy_bits"] <= np.log2(12) + 1e-6


def test_analyze_two_songs_of_the_same_name(run_cli, song: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav"
    first.write_bytes(song.read_bytes())
    second.write_bytes(song.read_bytes())
    result = run_cli("analyze", first, second, "-o", tmp_path / "out", "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    figures = [row["figure"] for row in json.loads(result.stdout)]
    assert [Path(f).name for f in figures] == ["a_x_analysis.png", "b_x_analysis.png"]
    assert all(Path(f).read_bytes()[:4] == b"\x89PNG" for f in figures)
