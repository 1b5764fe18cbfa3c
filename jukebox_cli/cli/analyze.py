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

from jukebox_cli.cli._options import Force, Json, Quiet
from jukebox_cli.cli._progress import RichProgress


def figure_names(songs: list[Path]) -> list[str]:
    """A distinct figure name per song: SONG_analysis.png, with as many parent folders' names added as it
    takes to tell songs that share a stem apart (a/x.wav and b/x.wav give a_x_analysis.png and
    b_x_analysis.png), then a counter. A take in a run always gets its run and level: every run's takes are
    item_N.wav, so runs/rock/level_0/item_0.wav gives rock_level_0_item_0_analysis.png."""
    names = []
    for song in songs:
        twins = [other for other in songs if other.stem == song.stem]
        parents = list(song.parent.parts)
        depth = least = _run_depth(song)
        while len(twins) > 1 and depth < len(parents) and len({_tail(t, depth) for t in twins}) < len(twins):
            depth += 1
        prefix = _tail(song, depth if len(twins) > 1 else least)
        names.append("_".join([*prefix, song.stem]).lstrip("/_") or song.stem)
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return [f"{name}_analysis.png" for name in unique]


def _run_depth(song: Path) -> int:
    """2 for a take in a run (RUN/level_N/item_M.wav: its name needs RUN and level_N), else 0."""
    # lazy: the engine stays out of `jukebox --help`
    from jukebox_cli.engine.sampling.runs import is_run_dir

    level = song.absolute().parent
    return 2 if level.name.startswith("level_") and is_run_dir(level.parent) else 0


def _tail(song: Path, depth: int) -> tuple[str, ...]:
    """The names of the last ``depth`` folders above ``song``."""
    parts = song.parent.parts
    if depth > len(parts):  # level_0/item_0.wav read inside its run: the run's name is above the cwd
        parts = song.absolute().parent.parts
    return tuple(parts[len(parts) - depth :]) if depth else ()


def analyze(
    songs: Annotated[
        list[Path],
        typer.Argument(
            readable=False,
            metavar="AUDIO_OR_RUN",
            help="Audio files (wav, flac, ogg, mp3, ...; any rate, any channels), or run folders (every level "
            "of every take in one figure).",
        ),
    ],
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Figure path (.png, .pdf, .svg) for one song, or a folder (for several songs, or ending "
            "in /). Default: SONG_analysis.png here (a run's take: RUN_level_N_item_M_analysis.png); songs "
            "of the same name get their folder's name added.",
        ),
    ] = None,
    sample_rate: Annotated[int, typer.Option(min=1000, help="Analyse at this sample rate.")] = 22050,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Plot the chromagram and log spectrogram of each SONG and print loudness, flatness and chroma measures.

    The file is read in blocks, so memory does not grow with its length. A run folder gets one figure of
    chromagrams: its levels as rows (top first), its takes as columns, so a column shows how the upsamplers
    refine one take and a row compares the takes.

    Examples:

        jukebox analyze song.flac

        jukebox analyze out/level_2.wav -o level2.png --force

        jukebox analyze a/x.wav b/x.wav -o figures/

        jukebox analyze runs/rock -o rock.png
    """
    from jukebox_cli.engine.audio import io as audio_io
    from jukebox_cli.engine.audio import plots
    from jukebox_cli.engine.audio.analysis import analyze_file
    from jukebox_cli.engine.errors import OutputExistsError, OutputIsFolder
    from jukebox_cli.engine.sampling.runs import is_run_dir

    # Every input is checked before any work; a run folder is checked when it is read (it may be partial).
    infos = [None if is_run_dir(song) else audio_io.audio_info(song) for song in songs]
    to_folder = output is not None and (len(songs) > 1 or output.is_dir() or str(output).endswith("/"))
    if output is not None and not to_folder:
        figures = [output]
    else:
        folder = output if output is not None else Path()
        figures = [folder / name for name in figure_names(songs)]
    folders = [p for p in figures if p.is_dir()]
    if folders:  # refused with or without --force, so say so before "already exists" suggests it
        raise OutputIsFolder(f"Cannot write {folders[0]}: it is a directory.")
    existing = [str(p) for p in figures if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]} already exists.")

    results = []
    for song, info, figure_path in zip(songs, infos, figures, strict=True):
        if info is None:
            results.append(
                _analyze_run(song, figure_path, sample_rate, force=force, show=not (json_output or quiet))
            )
            continue
        with RichProgress(enabled=not (json_output or quiet)) as progress:
            analysis = analyze_file(song, sample_rate, progress=progress)
        fig = plots.plot_analysis_features(analysis.features, title=song.name)
        plots.save_figure(fig, figure_path, overwrite=force)
        data = {
            "input": str(song),
            "file_sample_rate": info.sample_rate,
            "channels": info.channels,
            **analysis.summary.to_dict(),
            "figure": str(figure_path),
        }
        results.append(data)
        if not json_output and not quiet:
            _print_table(song, info, analysis.summary, figure_path)
    if json_output:
        typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))


def _print_table(song: Path, info, summary, figure_path: Path) -> None:
    table = Table(title=f"{song}", show_header=False)
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
    console.print(f"wrote {figure_path} (for {song})", highlight=False)


def _analyze_run(run_dir: Path, figure_path: Path, sample_rate: int, *, force: bool, show: bool) -> dict:
    from jukebox_cli.engine.audio import plots
    from jukebox_cli.engine.sampling.run_analysis import analyze_run

    with RichProgress(enabled=show) as progress:
        analysis = analyze_run(run_dir, sample_rate, progress=progress)
    plots.save_figure(analysis.figure(), figure_path, overwrite=force)
    rows = [
        {"level": level, "take": take, "input": str(path), **result.summary.to_dict()}
        for level, takes in analysis.files.items()
        for take, (path, result) in sorted(takes.items())
    ]
    if show:
        table = Table(title=f"{run_dir} ({analysis.run.status})")
        for column in ("level", "take", "duration", "RMS", "flatness", "chroma entropy", "pitch class"):
            table.add_column(column, justify="right")
        for row in rows:
            table.add_row(str(row["level"]), str(row["take"]), f"{row['duration']:.2f} s", f"{row['rms_dbfs']:.1f} dBFS",
                          f"{row['spectral_flatness']:.3f}", f"{row['frame_chroma_entropy_bits']:.2f} bits",
                          row["dominant_pitch_class"])  # fmt: skip
        console = Console(soft_wrap=True)
        console.print(table)
        console.print(f"wrote {figure_path} (for {run_dir})", highlight=False)
    return {"run": str(run_dir), "status": analysis.run.status, "files": rows, "figure": str(figure_path)}
