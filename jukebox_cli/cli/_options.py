"""Options shared by several commands (Annotated aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="demo (the bundled model's VQ-VAE), a preset name (tiny: random weights), a released model "
        "(1b_lyrics, 5b, 5b_lyrics or jukebox: the released VQ-VAE, downloaded on first use), a native "
        ".safetensors file or folder, or a released checkpoint file (vqvae.pth.tar, or a hub-layout .bin).",
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
AudioIn = Annotated[
    Path, typer.Argument(help="Audio file (wav, flac, ogg, mp3, ...; any rate, any channels).")
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        envvar="JUKEBOX_CACHE",
        show_envvar=True,
        help="Model cache folder (downloads and converted weights); default: the user cache folder.",
    ),
]
