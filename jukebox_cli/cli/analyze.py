"""``jukebox analyze``: chromagram and log spectrogram of any audio file, with summary measures.

Engine imports sit inside the command functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jukebox_cli.cli._options import AudioIn, Force, Json, Quiet


def analyze(
    song: AudioIn,
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Figure path (.png, .pdf, .svg). Default: SONG_analysis.png here."
        ),
    ] = None,
    sample_rate: Annotated[int, typer.Option(min=1000, help="Analyse at this sample rate.")] = 22050,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Plot the chromagram and log spectrogram of SONG and print loudness, flatness and chroma measures.

    Examples:

        jukebox analyze song.flac

        jukebox analyze out/level_2.wav -o level2.png --force
    """
    from jukebox_cli.engine.audio import io as audio_io
    from jukebox_cli.engine.audio import plots
    from jukebox_cli.engine.audio.analysis import summarize
    from jukebox_cli.engine.errors import OutputExistsError

    info = audio_io.audio_info(song)
    figure_path = output if output is not None else Path(f"{song.stem}_analysis.png")
    if figure_path.exists() and not force:
        raise OutputExistsError(f"{figure_path} already exists.")
    samples = audio_io.load_audio(song, sample_rate)
    summary = summarize(samples, sample_rate)
    fig = plots.plot_analysis(samples, sample_rate, title=song.name)
    plots.save_figure(fig, figure_path, overwrite=force)

    data = {
        "input": str(song),
        "file_sample_rate": info.sample_rate,
        "channels": info.channels,
        **summary.to_dict(),
        "figure": str(figure_path),
    }
    if json_output:
        typer.echo(json.dumps(data, indent=2))
    elif not quiet:
        table = Table(title=f"{song.name}", show_header=False)
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("duration", f"{summary.duration:.2f} s")
        table.add_row("file", f"{info.sample_rate} Hz, {info.channels} channel(s), {info.format}")
        table.add_row("peak", f"{summary.peak_dbfs:.1f} dBFS")
        table.add_row("RMS", f"{summary.rms_dbfs:.1f} dBFS")
        table.add_row("spectral flatness", f"{summary.spectral_flatness:.3f} (0 tonal .. 1 noise)")
        table.add_row("chroma entropy", f"{summary.chroma_entropy_bits:.2f} bits (max 3.58)")
        table.add_row("chroma entropy per frame", f"{summary.frame_chroma_entropy_bits:.2f} bits (max 3.58)")
        table.add_row("strongest pitch class", summary.dominant_pitch_class)
        console = Console(soft_wrap=True)
        console.print(table)
        console.print(f"wrote {figure_path}", highlight=False)
