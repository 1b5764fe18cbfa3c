"""``jukebox reconstruct``: round-trip a song through each VQ-VAE level, with metrics and a figure.

Engine imports sit inside the command functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jukebox_cli.cli._options import (
    SUBTYPES,
    AudioFormat,
    AudioIn,
    BitDepth,
    BitDepthOpt,
    CacheDir,
    Device,
    Force,
    Format,
    Json,
    Model,
    Quiet,
    deprecated,
)
from jukebox_cli.cli._progress import RichProgress


def reconstruct(
    song: AudioIn,
    *,
    model: Model = "demo",
    levels: Annotated[
        str | None, typer.Option(help="Levels to use, e.g. 2,1,0 (default: all, top first).")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("reconstruction"),
    audio_format: Format = AudioFormat.wav,
    bit_depth: BitDepthOpt = BitDepth.pcm16,
    figure: Annotated[bool, typer.Option(help="Write the chromagram/spectrogram comparison figure.")] = True,
    block_seconds: Annotated[
        float,
        typer.Option(min=0.1, help="Read and process long audio in blocks of this length (bounded memory)."),
    ] = 12.0,
    # --chunk-seconds is train's length of a training example: this memory knob's old name is a hidden alias.
    old_chunk_seconds: Annotated[float | None, typer.Option("--chunk-seconds", min=0.1, hidden=True)] = None,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Encode SONG through each VQ-VAE level and decode it again, to hear what each level keeps.

    Writes level_N.wav per level, input.wav (the model's view of the input: mono, resampled),
    metrics.json and reconstruction.png (chromagram + spectrogram of the input beside each level).

    Examples:

        jukebox reconstruct song.flac --model demo -o out/

        jukebox reconstruct song.mp3 -m vqvae.pth.tar --levels 2,0 -o out/ --force
    """
    from jukebox_cli.engine.audio import io as audio_io
    from jukebox_cli.engine.audio.reconstruct import parse_levels, reconstruct_stream
    from jukebox_cli.engine.devices import resolve_device
    from jukebox_cli.engine.errors import ConfigError, OutputExistsError, OutputIsFolder
    from jukebox_cli.engine.files import write_json
    from jukebox_cli.engine.weights.loading import load_vqvae

    console = Console(stderr=True, soft_wrap=True)
    if old_chunk_seconds is not None:
        deprecated(
            "reconstruct --chunk-seconds", "--block-seconds (--chunk-seconds is a training example's length)"
        )
        block_seconds = old_chunk_seconds
    info = audio_io.audio_info(song)  # fail on a bad input before loading a model
    if output.exists() and not output.is_dir():
        raise ConfigError(f"Output {output} exists and is not a folder.")
    with RichProgress(enabled=not quiet) as progress:
        loaded = load_vqvae(model, device=resolve_device(device), cache_dir=cache_dir, download=True,
                            progress=progress)  # fmt: skip
    vqvae = loaded.model
    level_list = (
        parse_levels(levels, vqvae.levels) if levels is not None else list(range(vqvae.levels - 1, -1, -1))
    )
    ext = audio_format.value
    targets = [output / f"level_{lv}.{ext}" for lv in level_list] + [
        output / f"input.{ext}",
        output / "metrics.json",
    ]
    if figure:
        targets.append(output / "reconstruction.png")
    folders = [p for p in targets if p.is_dir()]
    if folders:  # refused with or without --force, so say so before "already exists" suggests it
        raise OutputIsFolder(f"Cannot write {folders[0]}: it is a directory.")
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{existing[0]} already exists"
            + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
            + "."
        )

    # Streamed in, written out block by block: memory stays that of a chunk or two whatever the length.
    subtype, sr = SUBTYPES[bit_depth], vqvae.sample_rate
    created = not output.exists()
    writers = {"input": audio_io.AudioWriter(output / f"input.{ext}", sr, subtype=subtype, overwrite=force)}
    try:
        for lv in level_list:
            writers[lv] = audio_io.AudioWriter(
                output / f"level_{lv}.{ext}", sr, subtype=subtype, overwrite=force
            )
        chunk = int(block_seconds * sr)
        with RichProgress(enabled=not quiet) as progress:
            result = reconstruct_stream(
                vqvae,
                audio_io.stream_audio(song, sr, block_seconds=block_seconds),
                level_list,
                chunk_samples=chunk,
                sinks={key: writer.write for key, writer in writers.items()},
                figure_features=figure,
                expected_samples=round(info.frames * sr / info.sample_rate),
                progress=progress,
            )
        reports = {key: writer.close() for key, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        if created:  # a failed run leaves no empty folder behind (rmdir refuses a non-empty one)
            with contextlib.suppress(OSError):
                output.rmdir()
        raise
    written = [report.path for report in reports.values()]
    clipped = [
        (report.path, report.n_clipped, report.peak)
        for key, report in reports.items()
        if key != "input" and report.n_clipped
    ]
    summary = {
        "input": str(song),
        "model": loaded.source,
        "pretrained": loaded.pretrained,
        "sample_rate": vqvae.sample_rate,
        "duration": result.n_input_samples / vqvae.sample_rate,
        "levels": [item.summary() for item in result.levels.values()],
    }
    written.append(write_json(output / "metrics.json", summary, overwrite=force))
    if figure:
        from jukebox_cli.engine.audio import plots

        assert result.input_features is not None
        fig = plots.plot_reconstruction_features(
            result.input_features,
            {lv: item.features for lv, item in result.levels.items() if item.features is not None},
            metrics={
                lv: {"sc_db": item.spectral_convergence_db, "snr_db": item.snr_db}
                for lv, item in result.levels.items()
            },
            hop_lengths=dict(enumerate(vqvae.hop_lengths)),
            title=f"{song.name} through {Path(loaded.source).name}",
        )
        written.append(plots.save_figure(fig, output / "reconstruction.png", overwrite=force))

    if not loaded.pretrained and not quiet:
        console.print(
            f"[yellow]note:[/] model {loaded.source!r} has untrained random weights: the output shows the "
            "pipeline, not the sound quality of a trained model."
        )
    for path, count, peak in clipped:
        console.print(
            f"[yellow]warning:[/] {path}: {count} samples beyond full scale were clipped (peak {peak:.2f}); "
            "use --bit-depth float to keep them."
        )
    if json_output:
        typer.echo(json.dumps({**summary, "files": [str(p) for p in written]}, indent=2))
    elif not quiet:
        _print_table(summary)
        for path in written:
            Console(soft_wrap=True).print(f"wrote {path}", highlight=False)


def _print_table(summary: dict) -> None:
    table = Table(title=f"VQ-VAE round trip ({summary['duration']:.1f} s at {summary['sample_rate']} Hz)")
    for column in (
        "level",
        "hop",
        "codes",
        "spectral conv. (dB)",
        "SNR (dB)",
        "codes used",
        "entropy (bits)",
    ):
        table.add_column(column, justify="right")
    for row in summary["levels"]:
        table.add_row(
            str(row["level"]),
            str(row["hop_length"]),
            f"{row['n_codes']:,}",
            f"{row['spectral_convergence_db']:.2f}",
            f"{row['snr_db']:.2f}",
            f"{row['codes_used']} ({100 * row['codebook_usage']:.0f}%)",
            f"{row['code_entropy_bits']:.2f}",
        )
    Console().print(table)
