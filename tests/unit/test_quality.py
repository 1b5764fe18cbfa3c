"""Collapse detection, code agreement and the centroid classifier that judge generated samples."""

from __future__ import annotations

import numpy as np
import pytest

from jukebox_cli.engine.audio.quality import (
    CentroidClassifier,
    check_collapse,
    code_agreement,
    dominant_code,
    frame_levels_db,
    leave_one_group_out_accuracy,
    median_level_db,
)
from jukebox_cli.engine.errors import ConfigError

SR = 22050


def tone(amplitude: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def test_levels_of_a_sine_and_of_silence() -> None:
    assert median_level_db(tone(0.5)) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert median_level_db(np.zeros(SR)) == pytest.approx(-200.0)
    assert frame_levels_db(np.ones(100)).shape == (1,)  # shorter than a frame: one frame


def test_mostly_silent_take_has_a_low_median_despite_a_loud_burst() -> None:
    audio = np.concatenate([tone(0.8, 0.3), np.zeros(SR)])
    assert median_level_db(audio) < -100


def test_dominant_code_and_its_share() -> None:
    assert dominant_code(np.array([3, 7, 7, 7])) == (7, 0.75)


def test_collapse_by_silence_by_one_code_and_neither() -> None:
    varied = np.arange(100) % 50
    stuck = np.array([5] * 60 + list(range(100, 140)))
    loud, quiet = tone(0.5), tone(0.005)  # about -9 and -49 dBFS
    assert not check_collapse(varied, loud).collapsed
    assert check_collapse(varied, quiet).collapsed
    by_code = check_collapse(stuck, loud)
    assert by_code.collapsed and by_code.dominant_code == 5 and by_code.dominant_share == 0.6
    # The thresholds are strict inequalities: exactly half the tokens is not a collapse.
    assert not check_collapse(np.array([1, 1, 2, 3]), loud).collapsed


def test_code_agreement() -> None:
    assert code_agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    with pytest.raises(ConfigError):
        code_agreement(np.array([1, 2]), np.array([1, 2, 3]))


def test_centroid_classifier_separates_clusters_and_scales_features() -> None:
    rng = np.random.default_rng(0)
    # The second feature has a huge scale but no information; z-scoring keeps it from deciding.
    a = np.stack([rng.normal(0, 0.1, 10), rng.normal(0, 1000, 10)], axis=1)
    b = np.stack([rng.normal(1, 0.1, 10), rng.normal(0, 1000, 10)], axis=1)
    features, labels = np.concatenate([a, b]), ["a"] * 10 + ["b"] * 10
    model = CentroidClassifier.fit(features, labels)
    assert model.predict(np.array([[0.05, 500.0], [0.95, -500.0]])) == ["a", "b"]
    groups = [f"song{i % 5}{lab}" for i, lab in enumerate(labels)]
    assert leave_one_group_out_accuracy(features, labels, groups) == 1.0
