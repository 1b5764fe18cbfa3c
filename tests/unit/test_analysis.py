"""The audio measures used to tell music-like output from silence and noise."""

from __future__ import annotations

import numpy as np

from jukebox_cli.engine.audio.analysis import summarize
from tests.conftest import music_like

SR = 22050


def test_noise_is_flat_and_spread_over_pitch_classes() -> None:
    noise = summarize(np.random.default_rng(0).normal(0, 0.1, 5 * SR).astype(np.float32), SR)
    music = summarize(music_like(5.0, SR), SR)
    assert noise.spectral_flatness > 0.3 and music.spectral_flatness < 0.05
    assert noise.frame_chroma_entropy_bits > 3.4  # near log2(12) = 3.585
    assert music.frame_chroma_entropy_bits < noise.frame_chroma_entropy_bits - 0.5


def test_a_single_tone_has_one_pitch_class() -> None:
    t = np.arange(3 * SR) / SR
    tone = summarize((0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), SR)
    assert tone.dominant_pitch_class == "A"
    assert tone.chroma_entropy_bits < 2.0 and tone.frame_chroma_entropy_bits < 2.0
    assert abs(tone.rms_dbfs - 20 * np.log10(0.3 / np.sqrt(2))) < 0.05
