"""Options shared by several commands (Annotated aliases)."""

from __future__ import annotations

import re
import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

#: What any --model accepts (the engine's resolver, ``engine/weights/resolve.py``, reads it in this order).
MODEL_HELP = (
    "demo (shipped), tiny-random (for tests), 1b_lyrics, 5b, 5b_lyrics (downloaded), a model folder or "
    "file, a URL, a hub repo owner/name\\[@rev]; for a VQ-VAE alone also jukebox, tiny, small."
)
Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
OptionalModel = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Adapters = Annotated[
    list[Path] | None,
    typer.Option(
        "--adapter",
        metavar="RUN",
        readable=False,
        help="LoRA run or adapter file.",
    ),
]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
AudioIn = Annotated[
    Path,
    # readable=False: the engine reports an unreadable file as an audio error (exit 4), not a usage error.
    typer.Argument(
        readable=False, metavar="AUDIO", help="Audio file (wav, flac, ogg, mp3, ...; any rate, any channels)."
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        envvar="JUKEBOX_CACHE",
        show_envvar=True,
        help="Model cache folder (downloads and converted weights); default: the user cache folder.",
    ),
]


class AudioFormat(str, Enum):
    wav = "wav"
    flac = "flac"


class BitDepth(str, Enum):
    pcm16 = "16"
    pcm24 = "24"
    float32 = "float"


#: ``--bit-depth`` -> the libsndfile subtype the engine writes.
SUBTYPES = {BitDepth.pcm16: "PCM_16", BitDepth.pcm24: "PCM_24", BitDepth.float32: "FLOAT"}
_FORMAT_HELP = "Audio file format."
_BIT_DEPTH_HELP = "Sample format (float keeps peaks above 0 dBFS; WAV only)."
Format = Annotated[AudioFormat, typer.Option("--format", help=_FORMAT_HELP)]
BitDepthOpt = Annotated[BitDepth, typer.Option("--bit-depth", help=_BIT_DEPTH_HELP)]
# The sampling commands' defaults are None: a resumed run keeps the format it was started with.
OptionalFormat = Annotated[
    AudioFormat | None, typer.Option("--format", help=_FORMAT_HELP + " Default: wav, or the run's own.")
]
OptionalBitDepth = Annotated[
    BitDepth | None, typer.Option("--bit-depth", help=_BIT_DEPTH_HELP + " Default: 16, or the run's own.")
]


def deprecated(old: str, new: str) -> None:
    """One line on stderr for an option spelled the old way (kept working, hidden from --help)."""
    from rich.console import Console

    Console(stderr=True, soft_wrap=True, highlight=False).print(f"[yellow]note:[/] {old} is now {new}.")


_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)")  # [h:]m:s
_UNITS = re.compile(
    r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m(?!s))?(?:(\d+(?:\.\d*)?)s)?"
)  # 1h2m3s, 90s, 2m


def parse_seconds(text: str | float) -> float:
    """A length in seconds as a user writes it: ``10``, ``10.5``, ``10s``, ``2m``, ``1m30s``, ``1:30``,
    ``1:02:03``. ``nan`` and negatives pass through as numbers, for the engine to name what is wrong."""
    if isinstance(text, int | float):
        return float(text)
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    if match := _CLOCK.fullmatch(value):
        hours, minutes, seconds = match.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    if value and (match := _UNITS.fullmatch(value)):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    raise typer.BadParameter(f"{text!r} is not a length of time (write seconds: 10, 10s, 1:30 or 1m30s).")


#: The running command's arguments (set by ``app.main``), for messages that say what to run again.
INVOCATION: list[str] = []


def rerun_command(*extra: str) -> str:
    """The running command as a shell line, with ``extra`` arguments added where it lacks them."""
    args = [*INVOCATION, *(a for a in extra if a not in INVOCATION)]
    return shlex.join(["jukebox", *args])
