"""Measures that judge generated samples: collapse to one code or to silence, code agreement, genre features.

A top-level sample "collapses" when the prior falls into repeating one code; the decoder then renders it as
near silence. Both symptoms are checked because either alone misses cases: a quiet but varied take is not
stuck, and a loud take can still be one repeated timbre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from jukebox_cli.engine.errors import ConfigError

# Frames of 2048 samples every 512: about 93 ms at 22.05 kHz, short enough to see gaps between notes.
FRAME, HOP = 2048, 512
COLLAPSE_LEVEL_DB = -35.0
COLLAPSE_CODE_SHARE = 0.5
# Added to the mean square so digital silence gives a finite level (-200 dBFS), not -inf.
_POWER_FLOOR = 1e-20


def power_db(power: np.ndarray) -> np.ndarray:
    """Mean-square power in dBFS, digital silence floored at -200 dBFS."""
    return 10.0 * np.log10(power + _POWER_FLOOR)


def frame_levels_db(audio: np.ndarray, frame: int = FRAME, hop: int = HOP) -> np.ndarray:
    """RMS level in dBFS of each frame of mono audio ``[T]`` (one frame if the audio is shorter)."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1 or audio.size == 0:
        raise ConfigError(f"Expected non-empty mono audio [T], got shape {list(audio.shape)}.")
    if audio.size < frame:
        frames = audio[None]
    else:
        frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    return power_db(np.mean(frames**2, axis=1))


def median_level_db(audio: np.ndarray) -> float:
    """Median frame level in dBFS: a take that is silent most of the time scores low even with loud bursts."""
    return float(np.median(frame_levels_db(audio)))


def dominant_code(codes: np.ndarray) -> tuple[int, float]:
    """The most frequent code of a 1-D code sequence and its share of the tokens."""
    codes = np.asarray(codes)
    if codes.ndim != 1 or codes.size == 0:
        raise ConfigError(f"Expected a non-empty 1-D code sequence, got shape {list(codes.shape)}.")
    values, counts = np.unique(codes, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), float(counts[best] / codes.size)


@dataclass(frozen=True)
class CollapseCheck:
    """Whether one top-level take collapsed, and the two numbers that decide it."""

    median_level_db: float
    dominant_code: int
    dominant_share: float
    collapsed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def check_collapse(
    codes: np.ndarray,
    audio: np.ndarray,
    *,
    level_db: float = COLLAPSE_LEVEL_DB,
    max_share: float = COLLAPSE_CODE_SHARE,
) -> CollapseCheck:
    """Collapsed: the decoded take's median frame level is below ``level_db``, or one code is above
    ``max_share`` of its tokens."""
    level = median_level_db(audio)
    code, share = dominant_code(codes)
    return CollapseCheck(level, code, share, bool(level < level_db or share > max_share))


def code_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of positions where two code sequences of equal shape hold the same code."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ConfigError(
            f"Code sequences must be non-empty and of equal shape: {list(a.shape)} vs {list(b.shape)}."
        )
    return float(np.mean(a == b))


# ---- a nearest-centroid genre classifier ------------------------------------------------------------------


def genre_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Timbre and harmony of mono audio: MFCC means and deviations, mean chroma, flatness and level.

    Deliberately plain: the classifier only has to tell four genres of game music apart, and a small
    feature set trains on an hour of audio without overfitting.
    """
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    mfcc = librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=20, n_fft=FRAME, hop_length=HOP)
    chroma = librosa.feature.chroma_stft(y=audio, sr=sample_rate, n_fft=FRAME, hop_length=HOP)
    flatness = librosa.feature.spectral_flatness(y=audio, n_fft=FRAME, hop_length=HOP)
    return np.concatenate(
        [mfcc.mean(axis=1), mfcc.std(axis=1), chroma.mean(axis=1), [flatness.mean(), median_level_db(audio)]]
    )


@dataclass(frozen=True)
class CentroidClassifier:
    """Per-class mean of z-scored features; predicts the nearest class mean (Euclidean)."""

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    centroids: np.ndarray  # [classes, features], in z-scored units

    @classmethod
    def fit(cls, features: np.ndarray, labels: list[str]) -> CentroidClassifier:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] != len(labels) or not labels:
            raise ConfigError(
                f"Need one label per feature row; got {features.shape} and {len(labels)} labels."
            )
        mean = features.mean(axis=0)
        # Constant features would divide by zero; they carry no information, so any scale will do.
        scale = np.where(features.std(axis=0) > 0, features.std(axis=0), 1.0)
        z = (features - mean) / scale
        classes = tuple(sorted(set(labels)))
        centroids = np.stack([z[[lab == c for lab in labels]].mean(axis=0) for c in classes])
        return cls(classes, mean, scale, centroids)

    def predict(self, features: np.ndarray) -> list[str]:
        z = (np.atleast_2d(np.asarray(features, dtype=np.float64)) - self.mean) / self.scale
        distances = np.linalg.norm(z[:, None, :] - self.centroids[None], axis=2)  # [rows, classes]
        return [self.classes[i] for i in distances.argmin(axis=1)]


def leave_one_group_out_accuracy(features: np.ndarray, labels: list[str], groups: list[str]) -> float:
    """Accuracy when each group (a song) is classified by a classifier fitted on the other groups only:
    clips of one song resemble each other, so a plain split would flatter the classifier."""
    features = np.asarray(features)
    right = 0
    for group in sorted(set(groups)):
        held = np.array([g == group for g in groups])
        rest = [lab for lab, h in zip(labels, held, strict=True) if not h]
        model = CentroidClassifier.fit(features[~held], rest)
        predicted = model.predict(features[held])
        right += sum(p == lab for p, lab in zip(predicted, np.array(labels)[held], strict=True))
    return right / len(labels)
