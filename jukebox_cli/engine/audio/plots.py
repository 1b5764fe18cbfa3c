"""Analysis figures: chromagrams and log spectrograms of inputs and their per-level reconstructions.

The reconstruction figure is the report's picture of what each VQ-VAE level keeps: the top level (hop 128)
keeps the essentials (pitch classes, visible in the chromagram) and the bottom level (hop 8) the detail
(visible in the spectrogram's upper bands).

No GUI is touched: figures are plain `matplotlib.figure.Figure` objects with an Agg canvas attached, never
registered with pyplot, so this works headless and in threads. The figures draw `features.SpectralFeatures`,
which a stream of any length reduces to a bounded size; the array functions compute them in one go.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import librosa
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from jukebox_cli.engine.audio.features import (
    SpectralFeatures,
    analysis_hop,  # noqa: F401  (re-exported: train/logging.py and the tests find it here)
    chroma_frames,
    magnitude_frames,
    short_n_fft,
    spectral_features,
    stft_sizes,
)
from jukebox_cli.engine.audio.features import check_rate as _check_rate
from jukebox_cli.engine.errors import ConfigError, OutputExistsError
from jukebox_cli.engine.files import atomic_write

# Dynamic range shown by the spectrograms; quieter bins are clipped to the floor.
TOP_DB = 80.0
_SAVE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
# Metric keys of `plot_reconstruction` with a nicer label than the key itself.
_METRIC_LABELS = {"sc_db": "SC {:.1f} dB", "snr_db": "SNR {:.1f} dB", "sc": "SC {:.3f}"}


def _as_mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)  # accept [1, T] and [T, 1]
    if audio.ndim != 1:
        raise ConfigError(f"Expected mono audio of shape [T], got {list(audio.shape)}.")
    if audio.size == 0:
        raise ConfigError("Cannot analyse empty audio.")
    if not np.all(np.isfinite(audio)):
        raise ConfigError("Audio contains NaN or infinite samples.")
    return audio


def chromagram(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Chromagram of mono audio (librosa ``chroma_stft``), hop as in `analysis_hop`.

    Args:
        audio: Mono audio ``[T]``.
        sample_rate: Its sample rate in Hz.

    Returns:
        ``[12, frames]`` with rows C, C#, ..., B, each frame normalised to a maximum of 1;
        ``frames = T // hop + 1``.

    Raises:
        ConfigError: On non-mono, empty or non-finite audio, or a bad sample rate.
    """
    audio = _as_mono(audio)
    hop, n_fft, _ = stft_sizes(sample_rate)
    return chroma_frames(audio, sample_rate, short_n_fft(n_fft, audio.size), hop, center=True)


def _magnitude(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    hop, _, n_fft = stft_sizes(sample_rate)
    return magnitude_frames(audio, short_n_fft(n_fft, audio.size), hop, center=True)


def log_spectrogram(
    audio: np.ndarray, sample_rate: int, *, reference: np.ndarray | None = None, top_db: float = TOP_DB
) -> np.ndarray:
    """Magnitude spectrogram in dB (librosa ``amplitude_to_db``), hop as in `analysis_hop`.

    Args:
        audio: Mono audio ``[T]``.
        sample_rate: Its sample rate in Hz.
        reference: Optional mono audio whose loudest bin is 0 dB. Pass the original when plotting it next to
            reconstructions, so every panel shares one scale. Without it the signal's own maximum is 0 dB.
        top_db: Floor, in dB below the reference maximum.

    Returns:
        ``[1 + n_fft // 2, frames]`` in dB (at most 0 when ``reference`` is the signal itself or omitted).

    Raises:
        ConfigError: On bad audio or sample rate.
    """
    audio = _as_mono(audio)
    magnitude = _magnitude(audio, sample_rate)
    ref = float(np.max(_magnitude(_as_mono(reference), sample_rate))) if reference is not None else np.max
    db = librosa.amplitude_to_db(magnitude, ref=ref, top_db=None)
    # Floor relative to the shared reference (librosa's top_db floors relative to this signal's own maximum).
    ref_db = 0.0 if reference is not None else float(db.max())
    return np.maximum(db, ref_db - top_db)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas; no pyplot, no GUI
    return fig


def _draw_chroma(ax: Axes, chroma: np.ndarray, sample_rate: int, hop: int) -> QuadMesh:
    import librosa.display  # imports pyplot, so only when drawing; with ax given it never uses pyplot state

    return librosa.display.specshow(
        chroma,
        sr=sample_rate,
        hop_length=hop,
        x_axis="time",
        y_axis="chroma",  # note names C ... B on the y axis
        ax=ax,
        vmin=0.0,
        vmax=1.0,
        cmap="magma",
    )


def _draw_spectrogram(
    ax: Axes, db: np.ndarray, sample_rate: int, hop: int, vmin: float, vmax: float
) -> QuadMesh:
    import librosa.display

    return librosa.display.specshow(
        db,
        sr=sample_rate,
        hop_length=hop,
        n_fft=2 * (db.shape[0] - 1),
        x_axis="time",
        y_axis="log",
        ax=ax,
        vmin=vmin,
        vmax=vmax,
        cmap="magma",
    )


def plot_analysis(audio: np.ndarray, sample_rate: int, *, title: str | None = None) -> Figure:
    """A chromagram above a log-frequency spectrogram of one signal (see `plot_analysis_features`).

    Raises:
        ConfigError: On bad audio or sample rate.
    """
    return plot_analysis_features(spectral_features(_as_mono(audio), sample_rate), title=title)


def _db(features: SpectralFeatures, reference: SpectralFeatures) -> np.ndarray:
    """The magnitudes in dB relative to the loudest single frame of ``reference``."""
    return librosa.amplitude_to_db(features.magnitude, ref=max(reference.peak_magnitude, 1e-30), top_db=None)


def plot_analysis_features(features: SpectralFeatures, *, title: str | None = None) -> Figure:
    """A chromagram above a log-frequency spectrogram, drawn from a signal's features.

    Args:
        features: From `features.spectral_features` or a `features.FeatureStream`.
        title: Optional figure title.

    Returns:
        A `Figure` with four axes: chromagram, spectrogram, and a colour bar for each.
    """
    db = _db(features, features)
    top = float(db.max())
    db = np.maximum(db, top - TOP_DB)
    hop, rate = features.column_hop, features.sample_rate
    fig = _new_figure(10.0, 6.0)
    ax_chroma, ax_spec = fig.subplots(2, 1, sharex=True)
    fig.colorbar(_draw_chroma(ax_chroma, features.chroma, rate, hop), ax=ax_chroma, label="chroma energy")
    image = _draw_spectrogram(ax_spec, db, rate, hop, vmin=top - TOP_DB, vmax=top)
    fig.colorbar(image, ax=ax_spec, format="%+.0f dB")
    ax_chroma.set_title("chromagram")
    ax_spec.set_title("log-frequency spectrogram")
    ax_chroma.set_xlabel("")
    ax_spec.set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return fig


def _row_title(name: str, values: dict[str, float] | None) -> str:
    if not values:
        return name
    parts = [_METRIC_LABELS.get(key, key + " {:.3g}").format(value) for key, value in values.items()]
    return f"{name} \u2014 " + ", ".join(parts)


def plot_reconstruction(
    original: np.ndarray,
    reconstructions: dict[int, np.ndarray],
    sample_rate: int,
    *,
    metrics: dict[int, dict[str, float]] | None = None,
    hop_lengths: Mapping[int, int] | None = None,
    title: str | None = None,
) -> Figure:
    """Chromagram and spectrogram of an input and of its reconstruction from each VQ-VAE level.

    Rows: the input, then the levels from the top (coarsest) down to 0 (finest). Columns: chromagram,
    log-frequency spectrogram. Each column shares one colour scale: chroma in [0, 1], spectrograms in dB
    relative to the input's loudest bin, so a reconstruction's missing energy shows as darker panels.

    Args:
        original: Mono input audio ``[T]``.
        reconstructions: Level -> mono reconstruction ``[T']`` (decoded from that level alone).
        sample_rate: Sample rate of all signals in Hz.
        metrics: Optional level -> {metric name: value} for the row titles. ``sc_db``, ``snr_db`` and ``sc``
            get readable labels ("SC -8.1 dB"); other keys are shown as they are.
        hop_lengths: Optional level -> samples per code, shown in the row titles.
        title: Optional figure title.

    Returns:
        A `Figure` with ``2 * (1 + len(reconstructions))`` panels plus two colour bars (one per column).

    Raises:
        ConfigError: On bad audio, a negative level, or metrics for a level with no reconstruction.
    """
    original = _as_mono(original)
    _check_rate(sample_rate)
    return plot_reconstruction_features(
        spectral_features(original, sample_rate),
        {level: spectral_features(_as_mono(audio), sample_rate) for level, audio in reconstructions.items()},
        metrics=metrics,
        hop_lengths=hop_lengths,
        title=title,
    )


def plot_reconstruction_features(
    original: SpectralFeatures,
    reconstructions: Mapping[int, SpectralFeatures],
    *,
    metrics: Mapping[int, Mapping[str, float]] | None = None,
    hop_lengths: Mapping[int, int] | None = None,
    title: str | None = None,
) -> Figure:
    """`plot_reconstruction` drawn from features, so a long input need not be in memory.

    Raises:
        ConfigError: On a negative level, or metrics for a level with no reconstruction.
    """
    levels = sorted(reconstructions, reverse=True)  # top level first
    if any(level < 0 for level in levels):
        raise ConfigError(f"Levels must be non-negative, got {levels}.")
    unknown = set(metrics or {}) - set(levels)
    if unknown:
        raise ConfigError(f"Metrics given for levels {sorted(unknown)} that have no reconstruction.")

    rows = [("input", original, None)]
    rows += [
        (
            f"level {level}"
            + (f" (hop {hop_lengths[level]})" if hop_lengths and level in hop_lengths else ""),
            reconstructions[level],
            (metrics or {}).get(level),
        )
        for level in levels
    ]
    fig = _new_figure(12.0, 2.2 * len(rows) + 0.6)
    axes = np.asarray(fig.subplots(len(rows), 2, sharex=True, squeeze=False))  # (rows, 2)
    chroma_image = spec_image = None
    for row, (name, features, values) in enumerate(rows):
        ax_chroma, ax_spec = axes[row]
        hop, rate = features.column_hop, features.sample_rate
        chroma_image = _draw_chroma(ax_chroma, features.chroma, rate, hop)
        # Relative to the input's loudest frame, so a reconstruction's missing energy shows as darker panels.
        db = np.maximum(_db(features, original), -TOP_DB)
        spec_image = _draw_spectrogram(ax_spec, db, rate, hop, vmin=-TOP_DB, vmax=0.0)
        ax_chroma.set_title(_row_title(name, values), loc="left", fontsize="medium")
        if row < len(rows) - 1:
            ax_chroma.set_xlabel("")
            ax_spec.set_xlabel("")
        else:
            ax_chroma.set_xlabel("time (s)")
            ax_spec.set_xlabel("time (s)")
    fig.colorbar(chroma_image, ax=list(axes[:, 0]), label="chroma energy")
    fig.colorbar(spec_image, ax=list(axes[:, 1]), format="%+.0f dB", label="dB re input peak")
    if title:
        fig.suptitle(title)
    return fig


def plot_alignment(
    matrix: np.ndarray, lyrics: str, seconds_per_code: float, *, title: str | None = None
) -> Figure:
    """The lyric alignment: music time across, lyric characters down (the first at the top).

    Characters after the last one that any moment attends to are trimmed, as the original's HTML does, so a
    short excerpt of long lyrics is not a thin stripe. ``matrix`` is [codes, characters] (alignment.py).
    """
    if matrix.ndim != 2 or matrix.shape[1] != len(lyrics):
        raise ConfigError(
            f"An alignment of shape {matrix.shape} does not fit {len(lyrics)} lyric characters."
        )
    used = np.flatnonzero(matrix.max(axis=0, initial=0.0) > 0) if matrix.size else np.array([], dtype=int)
    shown = int(used[-1]) + 1 if used.size else len(lyrics)
    fig = _new_figure(10.0, 4.0)
    ax = fig.add_subplot()
    seconds = matrix.shape[0] * seconds_per_code
    image = ax.imshow(matrix[:, :shown].T, aspect="auto", origin="upper", interpolation="nearest",
                      extent=(0.0, seconds, shown - 0.5, -0.5), cmap="magma")  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.set_ylabel("lyric character")
    words = [(m.start(), m.group()) for m in re.finditer(r"\S+", lyrics[:shown])]
    if 0 < len(words) <= 40:  # beyond that the labels overlap into a smear
        ax.set_yticks([start for start, _ in words], [word for _, word in words], fontsize=7)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="attention")
    return fig


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, overwrite: bool = False, dpi: int = 120
) -> Path:
    """Write a figure atomically; the format follows the extension (.png, .pdf or .svg).

    The figure is rendered to a temporary file in the target directory and moved into place with `os.replace`,
    so a reader never sees a half-written file and a failure leaves nothing behind.

    Args:
        fig: The figure.
        path: Destination; its parent directories are created.
        overwrite: Replace an existing file instead of refusing.
        dpi: Resolution for the PNG (and rasterised parts of PDF/SVG).

    Returns:
        The destination path.

    Raises:
        ConfigError: On an unsupported extension, a non-positive dpi, or a path that is a directory.
        OutputExistsError: If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"Cannot save a figure as {path.name!r}: use one of {', '.join(_SAVE_FORMATS)}.")
    if dpi <= 0:
        raise ConfigError(f"dpi must be positive, got {dpi}.")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a file path.")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi), overwrite=True)
    return path


def plot_chroma_grid(
    rows: list[str],
    columns: list[str],
    features: Mapping[tuple[int, int], SpectralFeatures],
    *,
    title: str | None = None,
) -> Figure:
    """Chromagrams in a grid: ``features[(row, column)]`` drawn in that cell, an empty cell says "no audio".

    A run's figure (``jukebox analyze RUN/``) puts its levels in rows, top first, and its takes in columns, so a
    column reads as one take refined level by level and a row compares the takes. One colour scale ([0, 1]).
    """
    width = min(4.0 * len(columns) + 1.5, 40.0)  # a figure of many takes stays openable
    fig = _new_figure(width, 2.0 * len(rows) + 0.8)
    axes = np.asarray(fig.subplots(len(rows), len(columns), squeeze=False, sharex=True, sharey=True))
    image = None
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            ax = axes[r, c]
            cell = features.get((r, c))
            if cell is None:
                ax.text(0.5, 0.5, "no audio yet", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
            else:
                image = _draw_chroma(ax, cell.chroma, cell.sample_rate, cell.column_hop)
            ax.set_title(f"{row}, {column}", loc="left", fontsize="medium")
            if r < len(rows) - 1:
                ax.set_xlabel("")
            if c > 0:
                ax.set_ylabel("")
    if image is not None:
        fig.colorbar(image, ax=list(axes.ravel()), label="chroma energy")
    if title:
        fig.suptitle(title)
    return fig
