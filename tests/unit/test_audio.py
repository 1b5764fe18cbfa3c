"""Tests of jukebox_cli.engine.audio.io: round trips, mixing, resampling, streaming, errors, atomic saves."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from jukebox_cli.engine.audio.io import (
    SUPPORTED_WRITE_FORMATS,
    audio_info,
    check_finite,
    load_audio,
    resample,
    save_audio,
    to_mono,
)
from jukebox_cli.engine.errors import (
    AudioDecodeError,
    AudioNotFound,
    ConfigError,
    InvalidAudio,
    OutputDiskFull,
    OutputExistsError,
    UnsupportedAudioFormat,
)

SR = 44100


def sine(freq: float = 440.0, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    """A float32 sine [T]."""
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Band-limited-enough random audio [C, T] in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, size=(channels, round(seconds * sr))).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int = SR, **kwargs) -> Path:
    """Writes [T] or [C, T] with soundfile directly (for formats save_audio does not write)."""
    sf.write(str(path), np.asarray(audio).T, sr, **kwargs)
    return path


def corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def peak_freq(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("ext", "subtype", "atol"),
    [
        (".wav", "PCM_16", 2.0**-15),
        (".wav", "PCM_24", 2.0**-23),
        (".wav", "FLOAT", 0.0),
        (".flac", "PCM_16", 2.0**-15),
        (".flac", "PCM_24", 2.0**-23),
    ],
)
def test_lossless_round_trip_within_one_quantisation_step(tmp_path, ext, subtype, atol):
    x = sine()
    report = save_audio(tmp_path / f"a{ext}", x, SR, subtype=subtype)
    y = load_audio(report.path, None)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=0, atol=atol)
    info = audio_info(report.path)
    assert (info.sample_rate, info.channels, info.frames) == (SR, 1, len(x))
    assert info.format == SUPPORTED_WRITE_FORMATS[ext] and info.subtype == subtype
    assert info.duration == pytest.approx(len(x) / SR)


@pytest.mark.parametrize(("ext", "subtype"), [(".ogg", "VORBIS"), (".mp3", "MPEG_LAYER_III")])
def test_lossy_round_trip_correlates(tmp_path, ext, subtype):
    x = sine()
    path = write(tmp_path / f"a{ext}", x, subtype=subtype)
    y = load_audio(path, None)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 1152  # at most one MP3 frame of padding
    assert corr(x, y) > 0.95
    assert audio_info(path).format == ext[1:].upper()


def test_mp3_read_in_small_blocks_equals_a_whole_read(tmp_path):
    # libsndfile 1.2.2 garbles MP3 read in several calls; load_audio must not.
    x = sine(1000.0, seconds=1.0)
    path = write(tmp_path / "a.mp3", x)
    whole = load_audio(path, None)
    np.testing.assert_array_equal(load_audio(path, None, block_seconds=0.01), whole)
    assert corr(x, load_audio(path, SR, block_seconds=0.01)) > 0.95


def test_default_subtype_is_pcm16(tmp_path):
    path = save_audio(tmp_path / "a.wav", sine(), SR).path
    assert sf.info(str(path)).subtype == "PCM_16"


def test_load_and_save_accept_str_paths(tmp_path):
    path = str(tmp_path / "a.wav")
    save_audio(path, sine(), SR)
    assert load_audio(path, SR).shape == (SR,)


# --------------------------------------------------------------------------- mono


def test_stereo_file_loads_as_channel_mean(tmp_path):
    stereo = np.stack([sine(440), sine(1000, amp=0.3)])
    path = save_audio(tmp_path / "s.wav", stereo, SR, subtype="FLOAT").path
    assert audio_info(path).channels == 2
    np.testing.assert_allclose(load_audio(path, None), stereo.mean(axis=0), atol=1e-7)


def test_to_mono():
    x = noise(0.1, channels=3)
    np.testing.assert_allclose(to_mono(x), x.mean(axis=0), atol=1e-7)
    mono = x[0]
    out = to_mono(mono)
    assert out.dtype == np.float32 and out is not mono
    np.testing.assert_array_equal(out, mono)
    with pytest.raises(InvalidAudio):
        to_mono(np.zeros((1, 2, 3)))


# --------------------------------------------------------------------------- resampling


def test_resample_keeps_frequency_and_length():
    x = sine(1000.0, seconds=1.0, sr=48000)
    y = resample(x, 48000, 44100)
    assert y.dtype == np.float32
    assert abs(len(y) - round(len(x) * 44100 / 48000)) <= 1
    assert abs(peak_freq(y, 44100) - 1000.0) <= 44100 / len(y)


def test_resample_multichannel_equals_per_channel():
    x = noise(0.2, sr=48000, channels=2)
    y = resample(x, 48000, 44100)
    assert y.shape[0] == 2
    for c in range(2):
        np.testing.assert_allclose(y[c], resample(x[c], 48000, 44100), atol=1e-6)


def test_resample_identity_is_a_float32_copy():
    x = noise(0.01, channels=2).astype(np.float64)
    y = resample(x, SR, SR)
    assert y.dtype == np.float32 and not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, x.astype(np.float32))


@pytest.mark.parametrize("bad", [0, -1, 44100.5, None])
def test_resample_rejects_bad_rates(bad):
    with pytest.raises(ConfigError):
        resample(sine(), SR, bad)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("channels", [1, 2])
def test_chunked_load_equals_one_shot_resample(tmp_path, channels):
    x = noise(1.0, sr=48000, channels=channels)
    path = save_audio(tmp_path / "n.wav", x, 48000, subtype="FLOAT").path
    mono = to_mono(x)
    one_shot = soxr.resample(mono, 48000, SR, quality="HQ")
    # 0.0123 s blocks: odd-sized, and not a multiple of the rate ratio.
    chunked = load_audio(path, SR, block_seconds=0.0123)
    assert chunked.shape == one_shot.shape
    np.testing.assert_allclose(chunked, one_shot, atol=1e-5)
    np.testing.assert_allclose(load_audio(path, SR), one_shot, atol=1e-5)
    np.testing.assert_allclose(load_audio(path, None, block_seconds=0.0123), mono, atol=1e-7)


# --------------------------------------------------------------------------- offset / duration


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
def test_offset_and_duration_select_the_same_samples_as_a_full_decode(tmp_path, ext):
    sr = 22050
    x = sine(330.0, seconds=3.0, sr=sr)
    path = write(tmp_path / f"a{ext}", x, sr)
    full = load_audio(path, None)
    offset, duration = 1.25, 0.5
    start, n = round(offset * sr), round(duration * sr)
    part = load_audio(path, None, offset=offset, duration=duration, block_seconds=0.1)
    np.testing.assert_allclose(part, full[start : start + n], atol=1e-6)
    tail = load_audio(path, None, offset=offset)
    np.testing.assert_allclose(tail, full[start:], atol=1e-6)


def test_offset_is_applied_before_resampling(tmp_path):
    x = sine(1000.0, seconds=1.0, sr=48000)
    path = save_audio(tmp_path / "a.wav", x, 48000, subtype="FLOAT").path
    got = load_audio(path, SR, offset=0.25, duration=0.5)
    np.testing.assert_allclose(got, resample(x[12000:36000], 48000, SR), atol=1e-5)


def test_duration_past_the_end_is_clamped(tmp_path):
    path = save_audio(tmp_path / "a.wav", sine(seconds=1.0), SR).path
    assert len(load_audio(path, None, offset=0.5, duration=10.0)) == SR - SR // 2


# --------------------------------------------------------------------------- read errors


def assert_raises_naming(exc_type, path, fn, *args, **kwargs):
    """Asserts fn raises exactly the engine type (no raw soundfile/librosa error) naming ``path``."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert str(path) in str(info.value)
    assert not isinstance(info.value, sf.SoundFileError)
    return info.value


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    assert_raises_naming(AudioNotFound, path, load_audio, path, SR)
    assert_raises_naming(AudioNotFound, path, audio_info, path)


def test_directory(tmp_path):
    err = assert_raises_naming(AudioNotFound, tmp_path, load_audio, tmp_path, SR)
    assert "directory" in str(err)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    assert "empty" in str(assert_raises_naming(AudioDecodeError, path, load_audio, path, SR))
    assert_raises_naming(AudioDecodeError, path, audio_info, path)


def test_zero_frame_file(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, np.float32))
    assert "empty" in str(assert_raises_naming(AudioDecodeError, path, load_audio, path, SR))
    assert audio_info(path).frames == 0  # described, not refused


def wav_bytes(tmp_path: Path) -> bytes:
    return write(tmp_path / "src.wav", sine(seconds=0.5)).read_bytes()


def test_wav_header_followed_by_garbage(tmp_path):
    # RIFF/WAVE magic, then garbage where the fmt and data chunks should be. (Garbage *inside* a valid
    # data chunk is valid PCM and cannot be detected.)
    path = tmp_path / "garbage.wav"
    path.write_bytes(wav_bytes(tmp_path)[:12] + np.random.default_rng(0).bytes(2000))
    assert_raises_naming(AudioDecodeError, path, load_audio, path, SR)
    assert_raises_naming(AudioDecodeError, path, audio_info, path)


def test_random_bytes_with_wav_name(tmp_path):
    path = tmp_path / "random.wav"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    err = assert_raises_naming(AudioDecodeError, path, load_audio, path, SR)
    assert err.__cause__ is not None  # the decoder's error is chained, not lost


def test_wav_cut_in_half_loads_the_part_that_is_there(tmp_path):
    # Deliberate: libsndfile clamps the data chunk to the bytes present, and every sample is real.
    data = wav_bytes(tmp_path)
    path = tmp_path / "half.wav"
    path.write_bytes(data[: len(data) // 2])
    full = load_audio(tmp_path / "src.wav", None)
    half = load_audio(path, None)
    assert 0 < len(half) < len(full)
    np.testing.assert_array_equal(half, full[: len(half)])


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_flac_cut_short_is_a_decode_error(tmp_path, fraction):
    data = save_audio(tmp_path / "src.flac", noise(1.0), SR).path.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_raises_naming(AudioDecodeError, path, load_audio, path, SR)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_ogg_cut_short_loads_a_prefix_or_is_a_decode_error(tmp_path, fraction):
    # libsndfile takes an Ogg's length from its last complete page: what is there, or nothing.
    full_path = write(tmp_path / "src.ogg", noise(1.0)[0])
    data = full_path.read_bytes()
    path = tmp_path / "cut.ogg"
    path.write_bytes(data[: int(len(data) * fraction)])
    try:
        cut = load_audio(path, None)
    except AudioDecodeError as err:
        assert str(path) in str(err)
        return
    full = load_audio(full_path, None)
    assert 0 < len(cut) < len(full)
    np.testing.assert_allclose(cut[:-2048], full[: len(cut) - 2048], atol=1e-6)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_mp3_cut_short_is_a_decode_error(tmp_path, fraction):
    data = write(tmp_path / "src.mp3", noise(1.0)[0]).read_bytes()
    path = tmp_path / "cut.mp3"
    path.write_bytes(data[: int(len(data) * fraction)])
    err = assert_raises_naming(AudioDecodeError, path, load_audio, path, SR)
    assert "truncated" in str(err)


def test_decoder_error_mid_stream_is_wrapped(tmp_path, monkeypatch):
    path = save_audio(tmp_path / "a.flac", sine(), SR).path

    def failing_read(self, *args, **kwargs):
        raise sf.LibsndfileError(0, prefix="Error : ")

    monkeypatch.setattr(sf.SoundFile, "read", failing_read)
    err = assert_raises_naming(AudioDecodeError, path, load_audio, path, SR)
    assert isinstance(err.__cause__, sf.LibsndfileError)


@pytest.mark.parametrize("name", ["notes.txt", "song.m4a"])
def test_unknown_format_is_unsupported(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not audio\n" * 50)
    err = assert_raises_naming(UnsupportedAudioFormat, path, load_audio, path, SR)
    assert path.suffix in str(err) and "wav" in str(err) and "flac" in str(err)
    assert_raises_naming(UnsupportedAudioFormat, path, audio_info, path)


def test_librosa_fallback_is_used_when_libsndfile_cannot_open(tmp_path, monkeypatch):
    librosa = pytest.importorskip("librosa")
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))
    decoded = sine(1000.0, seconds=0.5, sr=22050)
    calls = []

    def fake_load(p, **kwargs):
        calls.append((p, kwargs))
        return decoded, 22050

    monkeypatch.setattr(librosa, "load", fake_load)
    y = load_audio(path, SR, offset=0.5, duration=1.0)
    assert calls == [(path, {"sr": None, "mono": True, "offset": 0.5, "duration": 1.0})]
    np.testing.assert_allclose(y, resample(decoded, 22050, SR), atol=1e-6)


def test_nan_in_float_wav_is_invalid_audio(tmp_path):
    x = sine()
    x[[SR // 2, SR // 2 + 10]] = np.nan
    x[SR - 1] = np.inf
    path = write(tmp_path / "nan.wav", x, subtype="FLOAT")
    err = assert_raises_naming(InvalidAudio, path, load_audio, path, SR, block_seconds=0.1)
    assert "3 non-finite" in str(err) and "0.500 s" in str(err)


def test_offset_beyond_end_is_a_config_error(tmp_path):
    path = save_audio(tmp_path / "a.wav", sine(seconds=1.0), SR).path
    assert_raises_naming(ConfigError, path, load_audio, path, SR, offset=1.0)
    assert_raises_naming(ConfigError, path, load_audio, path, SR, offset=5.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"offset": -1.0}, {"duration": 0.0}, {"block_seconds": 0.0}, {"sample_rate": 0}, {"sample_rate": 1.5}],
)
def test_bad_load_arguments(tmp_path, kwargs):
    path = save_audio(tmp_path / "a.wav", sine(), SR).path
    args = {"sample_rate": SR, **kwargs}
    with pytest.raises(ConfigError):
        load_audio(path, **args)


# --------------------------------------------------------------------------- check_finite


def test_check_finite_reports_count_and_first_position():
    x = np.zeros((2, 1000), np.float32)
    x[1, 250] = np.inf
    x[0, 700] = np.nan
    with pytest.raises(InvalidAudio, match=r"2 non-finite .*1 NaN, 1 inf.*sample 250"):
        check_finite(x, "prompt")
    with pytest.raises(InvalidAudio, match=r"prompt.*0\.250 s"):
        check_finite(x, "prompt", sample_rate=1000)
    check_finite(np.zeros(10, np.float32))


# --------------------------------------------------------------------------- save


def test_pcm_clipping_is_counted_not_silent(tmp_path):
    x = sine(amp=0.5)
    x[:5] = [1.5, -2.0, 1.0, -1.0, 1.0001]
    report = save_audio(tmp_path / "c.wav", x, SR)
    assert report.n_clipped == int(np.sum(np.abs(x) > 1.0)) == 3
    assert report.peak == pytest.approx(2.0)
    y = load_audio(report.path, None)
    assert np.abs(y).max() <= 1.0


def test_float_wav_keeps_out_of_range_samples(tmp_path):
    x = sine()
    x[0] = 1.5
    report = save_audio(tmp_path / "f.wav", x, SR, subtype="FLOAT")
    assert report.n_clipped == 0 and report.peak == pytest.approx(1.5)
    assert load_audio(report.path, None)[0] == pytest.approx(1.5)


@pytest.mark.parametrize("name", ["a.mp3", "a.ogg", "a"])
def test_save_unsupported_extension(tmp_path, name):
    path = tmp_path / name
    err = assert_raises_naming(UnsupportedAudioFormat, path, save_audio, path, sine(), SR)
    assert all(ext in str(err) for ext in SUPPORTED_WRITE_FORMATS)
    assert not path.exists()


def test_save_flac_float_is_unsupported(tmp_path):
    path = tmp_path / "a.flac"
    assert_raises_naming(UnsupportedAudioFormat, path, save_audio, path, sine(), SR, subtype="FLOAT")


def test_overwrite_refused_unless_asked(tmp_path):
    path = save_audio(tmp_path / "a.wav", sine(440), SR).path
    before = path.read_bytes()
    assert_raises_naming(OutputExistsError, path, save_audio, path, sine(880), SR)
    assert path.read_bytes() == before
    save_audio(path, sine(880), SR, overwrite=True)
    assert path.read_bytes() != before


def test_save_creates_parents_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "new" / "dir" / "a.flac"
    save_audio(path, noise(0.1, channels=2), SR)
    assert os.listdir(path.parent) == ["a.flac"]
    assert audio_info(path).channels == 2


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = save_audio(tmp_path / "a.wav", sine(440), SR).path
    before = path.read_bytes()

    real_write_bytes = Path.write_bytes

    def half_write(self, data):
        real_write_bytes(self, b"RIFF partial")  # the disk fills up after some bytes hit it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_write)
    assert_raises_naming(OutputDiskFull, path, save_audio, path, sine(880), SR, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.wav"]


def test_save_refuses_nan_and_writes_nothing(tmp_path):
    x = sine()
    x[100] = np.nan
    path = tmp_path / "a.wav"
    assert_raises_naming(InvalidAudio, path, save_audio, path, x, SR)
    assert not path.exists()


@pytest.mark.parametrize("shape", [(SR, 2), (0,), (1, 2, 3)])
def test_save_refuses_bad_shapes(tmp_path, shape):
    path = tmp_path / "a.wav"
    assert_raises_naming(InvalidAudio, path, save_audio, path, np.zeros(shape, np.float32), SR)


def test_save_accepts_torch_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(noise(0.1, channels=2)).requires_grad_()
    report = save_audio(tmp_path / "t.wav", x * 1.0, SR, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(str(report.path), dtype="float32")[0].T, x.detach().numpy())
    mono = save_audio(tmp_path / "m.wav", x[0].to(torch.bfloat16), SR)
    assert audio_info(mono.path).channels == 1


def test_module_does_not_import_torch_or_librosa():
    code = (
        "import sys, jukebox_cli.engine.audio.io; "
        "assert 'torch' not in sys.modules and 'librosa' not in sys.modules, sorted(sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_audio_info_falls_back_to_audioread(tmp_path, monkeypatch):
    audioread = pytest.importorskip("audioread")
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(100))

    class FakeFile:
        samplerate, channels, duration = 48000, 2, 1.5

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(audioread, "audio_open", lambda p: FakeFile())
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (48000, 2, 72000)
    assert info.format == "M4A" and info.subtype is None


def test_save_to_a_directory_is_refused(tmp_path):
    target = tmp_path / "out.wav"
    target.mkdir()
    assert_raises_naming(OutputExistsError, target, save_audio, target, sine(), SR, overwrite=True)


def test_c_stderr_is_silenced_only_inside_and_restored_after_an_error(capfd) -> None:
    from jukebox_cli.engine.audio.quiet import c_stderr_silenced

    with pytest.raises(RuntimeError), c_stderr_silenced():
        os.write(2, b"hidden from C\n")
        with c_stderr_silenced():  # nested: still silent, and the outer block restores
            os.write(2, b"hidden too\n")
        os.write(2, b"still hidden\n")
        raise RuntimeError("the decoder failed")
    os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"
