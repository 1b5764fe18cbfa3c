"""Streaming analysis, reconstruction and I/O give the whole-file numbers on a short clip, in any blocks."""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from jukebox_cli.cli.analyze import figure_names
from jukebox_cli.engine import build_vqvae
from jukebox_cli.engine.audio import io as audio_io
from jukebox_cli.engine.audio.analysis import SummaryStream, _entropy_bits, analyze_file
from jukebox_cli.engine.audio.features import FeatureStream, spectral_features
from jukebox_cli.engine.audio.frames import FramePool
from jukebox_cli.engine.audio.reconstruct import reconstruct, reconstruct_stream
from tests.conftest import music_like

SR = 22050


def _blocks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def test_streamed_summary_equals_the_whole_file_computation() -> None:
    audio = music_like(5.0, SR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flatness = librosa.feature.spectral_flatness(y=audio, n_fft=2048, hop_length=512).mean()
        chroma = librosa.feature.chroma_stft(y=audio, sr=SR, n_fft=2048, hop_length=512)
    stream = SummaryStream(SR)
    for block in _blocks(audio, 777):  # blocks shorter than a frame, not a multiple of the hop
        stream.push(block)
    summary = stream.finish()
    # float64 sums over frames vs librosa's float32 means: within 1e-6 relative.
    assert np.isclose(summary.spectral_flatness, flatness, rtol=1e-6)
    assert np.isclose(summary.chroma_entropy_bits, _entropy_bits(chroma.mean(axis=1)), rtol=1e-6)
    assert np.isclose(summary.frame_chroma_entropy_bits, _entropy_bits(chroma, axis=0).mean(), rtol=1e-6)
    assert np.isclose(summary.rms_dbfs, 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))


def test_streamed_figure_features_equal_the_whole_signal_ones() -> None:
    audio = music_like(3.0, SR)
    whole = spectral_features(audio, SR)
    stream = FeatureStream(SR)
    for block in _blocks(audio, 1000):
        stream.push(block)
    streamed = stream.finish()
    assert streamed.pool == 1 and streamed.chroma.shape == whole.chroma.shape
    np.testing.assert_allclose(streamed.chroma, whole.chroma, atol=1e-5)
    np.testing.assert_allclose(streamed.magnitude, whole.magnitude, rtol=1e-4, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = librosa.feature.chroma_stft(y=audio, sr=SR, n_fft=2048, hop_length=256, tuning=0.0)
    np.testing.assert_allclose(whole.chroma, reference, atol=1e-5)


def test_frame_pool_stays_bounded_and_averages() -> None:
    pool = FramePool(4)
    frames = np.arange(100, dtype=np.float64)[None]
    for i in range(0, 100, 7):
        pool.push(frames[:, i : i + 7])
    columns = pool.result()
    assert columns.shape[1] <= 8 + 1 and pool.pool == 16
    np.testing.assert_allclose(columns[0, :6], [7.5 + 16 * k for k in range(6)])
    assert columns[0, -1] == np.mean(np.arange(96, 100))


def test_analyze_file_streams_in_blocks(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, music_like(4.0, 44100, channels=2), 44100)
    whole = analyze_file(path, SR, block_seconds=100.0)
    events = []
    blocked = analyze_file(path, SR, block_seconds=0.3, progress=events.append)
    # A bar counted in seconds of audio, its total known before the first block.
    assert events[0].total == 4 and sum(e.n for e in events[1:-1]) == 4
    assert type(events[-1]).__name__ == "StageFinished" and len(events) > 10
    assert np.isclose(whole.summary.spectral_flatness, blocked.summary.spectral_flatness, rtol=1e-6)
    assert np.isclose(whole.summary.chroma_entropy_bits, blocked.summary.chroma_entropy_bits, rtol=1e-6)
    np.testing.assert_allclose(whole.features.chroma, blocked.features.chroma, atol=1e-5)


def test_streamed_reconstruction_equals_the_array_one() -> None:
    vqvae = build_vqvae("tiny").eval()
    audio = music_like(5.0, vqvae.sample_rate)
    chunk = 2 * vqvae.sample_rate
    whole = reconstruct(vqvae, audio, chunk_samples=chunk)
    streamed = reconstruct_stream(vqvae, _blocks(audio, 3001), chunk_samples=chunk, keep_arrays=True)
    for level, item in whole.levels.items():
        other = streamed.levels[level]
        np.testing.assert_array_equal(item.codes, other.codes)
        np.testing.assert_array_equal(item.audio, other.audio)
        assert np.isclose(item.spectral_convergence, other.spectral_convergence, rtol=1e-9)
        assert item.codebook == other.codebook
    # The streamed metrics are the whole-signal ones: spectral convergence to 1e-4 (the whole-signal
    # version sums a million float32 squares; ours sums in float64), SNR to 1e-5.
    from jukebox_cli.engine.audio import metrics

    item = whole.levels[0]
    ref, dec = torch.from_numpy(audio[: len(item.audio)])[None], torch.from_numpy(item.audio)[None]
    assert np.isclose(item.spectral_convergence, float(metrics.spectral_convergence(ref, dec)[0]), rtol=1e-4)
    assert np.isclose(item.snr_db, float(metrics.snr_db(ref, dec)[0]), rtol=1e-5)


def test_stream_audio_joins_to_load_audio_and_writer_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "in.flac"
    sf.write(path, music_like(3.0, 44100, channels=2), 44100)
    blocks = list(audio_io.stream_audio(path, SR, block_seconds=0.5))
    assert len(blocks) > 3
    np.testing.assert_array_equal(np.concatenate(blocks), audio_io.load_audio(path, SR))
    out = tmp_path / "out.wav"
    with audio_io.AudioWriter(out, SR, subtype="FLOAT") as writer:
        for block in blocks:
            writer.write(block)
    np.testing.assert_array_equal(sf.read(out, dtype="float32")[0], np.concatenate(blocks))
    assert not list(tmp_path.glob(".*tmp"))


def test_the_stream_gives_freed_memory_back_after_every_block(tmp_path: Path, monkeypatch) -> None:
    """Long audio stays bounded only if the heap's holes go back to the system as the stream goes: once per
    block, after the caller's work on it (see bench/audio_memory.py for the sizes)."""
    import platform

    from jukebox_cli.engine import heap

    path = tmp_path / "in.wav"
    sf.write(path, music_like(2.0, SR), SR)
    calls: list[int] = []
    monkeypatch.setattr(audio_io, "release_free_memory", lambda: calls.append(len(seen)) or True)
    seen = []
    for block in audio_io.stream_audio(path, SR, block_seconds=0.5):
        seen.append(block)
    assert len(seen) == 4 and calls == [1, 2, 3, 4]
    assert heap.release_free_memory() is (platform.libc_ver()[0] == "glibc")


def test_songs_of_the_same_name_get_distinct_figures() -> None:
    names = figure_names([Path("a/x.wav"), Path("b/x.wav"), Path("c/y.flac"), Path("a/x.flac")])
    assert len(set(names)) == 4
    assert names[:3] == ["a_x_analysis.png", "b_x_analysis.png", "y_analysis.png"]
    assert figure_names([Path("x.wav")]) == ["x_analysis.png"]
    takes = [Path("runs/a/level_0/item_0.wav"), Path("runs/b/level_0/item_0.wav")]
    assert figure_names(takes) == ["a_level_0_item_0_analysis.png", "b_level_0_item_0_analysis.png"]


def test_a_take_in_a_run_is_named_after_its_run_and_level(tmp_path: Path, monkeypatch) -> None:
    """Every run's takes are item_N.wav: the default figure of one take names its run and level, so two runs'
    item_0.wav analysed one after the other do not collide."""
    for run in ("rock", "jazz"):
        (tmp_path / run / "level_0").mkdir(parents=True)
        (tmp_path / run / "run.json").write_text("{}")
    assert figure_names([tmp_path / "rock/level_0/item_0.wav"]) == ["rock_level_0_item_0_analysis.png"]
    assert figure_names([tmp_path / "jazz/level_0/item_0.wav"]) == ["jazz_level_0_item_0_analysis.png"]
    monkeypatch.chdir(tmp_path / "rock")
    assert figure_names([Path("level_0/item_0.wav")]) == ["rock_level_0_item_0_analysis.png"]
    (tmp_path / "loose" / "level_0").mkdir(parents=True)  # a folder named like a level, outside any run
    assert figure_names([tmp_path / "loose/level_0/item_0.wav"]) == ["item_0_analysis.png"]
