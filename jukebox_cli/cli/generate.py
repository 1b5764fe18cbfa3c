"""``jukebox generate``, ``continue`` and ``upsample``: parse the options, call the generation API
(``engine.sampling.generation``), render its plan, progress and result.

Engine imports sit inside the command functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from jukebox_cli.cli._job import prepare_and_execute
from jukebox_cli.cli._options import (
    Adapters,
    CacheDir,
    Device,
    Force,
    Json,
    Model,
    OptionalBitDepth,
    OptionalFormat,
    OptionalModel,
    Quiet,
    deprecated,
    parse_seconds,
)

Artist = Annotated[
    str,
    typer.Option(rich_help_panel="Labels", help="Artist to condition on (see `jukebox labels --artists`)."),
]
Genre = Annotated[
    str, typer.Option(rich_help_panel="Labels", help="Genre to condition on (see `jukebox labels --genres`).")
]
Lyrics = Annotated[
    str | None, typer.Option(rich_help_panel="Labels", help="Lyrics text (lyrics models only).")
]
Alignment = Annotated[
    bool,
    typer.Option(
        "--alignment/--no-alignment",
        rich_help_panel="Labels",
        help="Lyrics models: write which lyrics each moment attends to (level_2/item_N.alignment.json, .png).",
    ),
]
LyricsFile = Annotated[
    Path | None, typer.Option(rich_help_panel="Labels", help="Read the lyrics from this UTF-8 file.")
]
# Float options carry no min/max here: the engine checks them, and names NaN for what it is.
Duration = Annotated[
    float,
    typer.Option(
        parser=parse_seconds,
        metavar="SECONDS",
        rich_help_panel="Length and sampling",
        help="Seconds of audio to generate (10, 10s, 1:30 or 1m30s).",
    ),  # fmt: skip
]
TotalDuration = Annotated[
    float | None,
    typer.Option(
        parser=parse_seconds,
        metavar="SECONDS",
        rich_help_panel="Length and sampling",
        help="Length of the whole song in seconds (conditions timing and lyrics); default: --duration, "
        "raised to the model's minimum.",
    ),  # fmt: skip
]
Samples = Annotated[
    int,
    typer.Option(
        "--samples",
        "-n",
        min=1,
        rich_help_panel="Length and sampling",
        help="How many samples (takes) to generate.",
    ),
]
Levels = Annotated[
    str,
    typer.Option(rich_help_panel="Length and sampling", help="Levels to sample, top first: 2, 2,1 or 2,1,0."),
]
Temperature = Annotated[
    str,
    typer.Option(
        rich_help_panel="Length and sampling",
        help="Sampling temperature: one value, or one per sampled level (top first), e.g. 0.98,0.99,0.99.",
    ),
]
TopK = Annotated[
    int,
    typer.Option(
        min=0, rich_help_panel="Length and sampling", help="Keep only the k most likely codes (0: off)."
    ),
]
TopP = Annotated[
    float, typer.Option(rich_help_panel="Length and sampling", help="Nucleus sampling threshold (0: off).")
]
Seed = Annotated[
    int,
    typer.Option(
        rich_help_panel="Length and sampling",
        help="Random seed; the same command and seed give the same codes.",
    ),
]
Dtype = Annotated[
    str,
    typer.Option(
        rich_help_panel="Speed and memory",
        help="auto (bf16/fp16 on GPUs, fp32 on the CPU), fp32, fp16 or bf16.",
    ),
]
MaxBatch = Annotated[
    str,
    typer.Option(
        rich_help_panel="Speed and memory",
        help="Samples per prior call: auto (as many as free memory holds) or a number, one value or one per "
        "sampled level, e.g. 3,16,16. It does not change the samples.",
    ),
]
ChunkSize = Annotated[
    int,
    typer.Option(
        min=1,
        rich_help_panel="Speed and memory",
        help="Known codes pushed through the prior at once when priming.",
    ),
]
Takes = Annotated[
    str | None,
    typer.Option("--takes", help="Which takes of the run to use, e.g. 0,3 (default: all)."),
]
AllowUnknown = Annotated[
    bool,
    typer.Option(
        "--allow-unknown",
        rich_help_panel="Labels",
        help="Map an unknown artist or genre to id 0 instead of failing.",
    ),
]


class CompileChoice(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


Compile = Annotated[
    CompileChoice,
    typer.Option(
        "--compile",
        rich_help_panel="Speed and memory",
        help="auto (a compiled, graph-captured decode step on GPUs and for long levels on the CPU), on, or "
        "off (the eager step). The codes are the same either way up to float rounding.",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        rich_help_panel="Output",
        help="Print the plan (tokens, windows, memory per level) and stop.",
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        rich_help_panel="Output",
        help="Run folder (re-running the same command resumes it).",
    ),
]


def _take_numbers(takes: str | None) -> list[int] | None:
    """``--takes 0,3`` as [0, 3]; None when not given (every take)."""
    from jukebox_cli.engine.errors import ConfigError

    if not takes:
        return None
    try:
        return [int(p) for p in takes.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--takes must be take numbers like 0,3; got {takes!r}.") from None


def _read_lyrics(lyrics: str | None, lyrics_file: Path | None) -> str | None:
    from jukebox_cli.engine.errors import ConfigError

    if lyrics is not None and lyrics_file is not None:
        raise ConfigError("Give --lyrics or --lyrics-file, not both.")
    if lyrics_file is None:
        return lyrics
    if lyrics_file.is_dir():
        raise ConfigError(f"Lyrics file {lyrics_file} is a folder, not a text file.")
    if not lyrics_file.is_file():
        raise ConfigError(f"Lyrics file {lyrics_file} does not exist.")
    try:
        return lyrics_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"Lyrics file {lyrics_file} is not UTF-8 text.") from err
    except OSError as err:
        raise ConfigError(f"Cannot read lyrics file {lyrics_file}: {err.strerror or err}.") from err


def generate(
    ctx: typer.Context,
    *,
    model: Model = "demo",
    adapter: Adapters = None,
    artist: Artist = "unknown",
    genre: Genre = "unknown",
    lyrics: Lyrics = None,
    lyrics_file: LyricsFile = None,
    duration: Duration = 10.0,
    total_duration: TotalDuration = None,
    samples: Samples = 1,
    levels: Levels = "2,1,0",
    temperature: Temperature = "0.99",
    top_k: TopK = 0,
    top_p: TopP = 0.0,
    seed: Seed = 0,
    prime: Annotated[
        Path | None, typer.Option(readable=False, help="Start from this audio file (primed sampling).")
    ] = None,
    prompt_seconds: Annotated[float, typer.Option(help="Seconds of --prime to keep.")] = 5.0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    dtype: Dtype = "auto",
    max_batch_size: MaxBatch = "auto",
    chunk_size: ChunkSize = 32,
    allow_unknown: AllowUnknown = False,
    alignment: Alignment = True,
    output: Output = None,
    audio_format: OptionalFormat = None,
    bit_depth: OptionalBitDepth = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --output with its settings (a setting given must match; --format, "
            "--bit-depth, --device, --compile may differ).",
        ),
    ] = False,
    compile: Compile = CompileChoice.auto,
    dry_run: DryRun = False,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Generate music: sample the top level, then upsample, writing audio per level into a run folder.

    The top level's audio (level_2/item_N.wav) is written as soon as it is done, long before the
    upsampling finishes. Codes are saved after every window: re-run the same command (or --resume -o RUN) to
    continue an interrupted run with identical results.

    Examples:

        jukebox generate --model demo --genre rock --duration 10 -o runs/rock

        jukebox generate -m 1b_lyrics --artist "zac brown band" --genre country \\
            --lyrics-file l.txt --duration 20

        jukebox generate --resume -o runs/demo

    Several GPUs share the takes (rank 0 writes the run; the codes are one process's):

        torchrun --nproc-per-node 4 -m jukebox_cli generate -n 8 -o runs/eight
    """
    from jukebox_cli.engine.errors import ConfigError

    if ctx.args:  # `--resume RUN`, the old spelling, leaves RUN as an extra argument
        if not resume or len(ctx.args) != 1 or output is not None:
            raise ConfigError(
                f"jukebox generate takes no arguments, got {' '.join(ctx.args)!r}: every setting is a named "
                f"option (--genre {shlex.quote(ctx.args[0])}, --artist ..., --lyrics-file FILE, -o RUN)."
            )
        deprecated("--resume RUN", "--resume -o RUN (--resume means the same in every command)")
        output = Path(ctx.args[0])
    if resume and output is None:
        raise ConfigError("--resume continues the run in --output: add -o RUN.")
    text = None if resume else _read_lyrics(lyrics, lyrics_file)

    def prepare(progress):
        from jukebox_cli.engine.sampling.generation import prepare_generate, prepare_resume

        if resume:  # a released model's download shows its bytes
            return prepare_resume(output, asked=_asked(ctx), cache_dir=cache_dir, progress=progress)
        return prepare_generate(
            _adapted(model, adapter, cache_dir, progress), artist=artist, genre=genre, lyrics=text or "",
            duration=duration,
            total_duration=total_duration, samples=samples, levels=levels, temperature=temperature,
            top_k=top_k, top_p=top_p, seed=seed, prime=prime, prompt_seconds=prompt_seconds,
            dtype=dtype, max_batch_size=max_batch_size, chunk_size=chunk_size,
            allow_unknown=allow_unknown, output=output, cache_dir=cache_dir, progress=progress,
        )  # fmt: skip

    # A resume's settings are the run's own: --force can only mean starting a run with unreadable codes over.
    prepare_and_execute(device, prepare, force=force, dry_run=dry_run, quiet=quiet, json_output=json_output,
                         alignment=alignment, compile=compile.value, audio_format=audio_format,
                         bit_depth=bit_depth)  # fmt: skip


def _asked(ctx: typer.Context) -> dict:
    """The settings options the user gave (command line or environment), by prepare_generate's names: with
    --resume those must match the run, and the options left at their defaults must not count."""
    # By name: typer bundles its own click, whose ParameterSource is not click's.
    sources = {name: getattr(ctx.get_parameter_source(name), "name", "") for name in ctx.params}
    given = {
        name: value for name, value in ctx.params.items() if sources[name] in ("COMMANDLINE", "ENVIRONMENT")
    }
    asked = {name: given[name] for name in _RESUME_SETTINGS if name in given}
    if "adapter" in given:
        asked["adapters"] = given["adapter"]
    if "lyrics" in given or "lyrics_file" in given:
        asked["lyrics"] = _read_lyrics(given.get("lyrics"), given.get("lyrics_file")) or ""
    return asked


# generate's options that decide a run's codes (the rest, like --device or --format, may change on a resume).
_RESUME_SETTINGS = ("model", "artist", "genre", "duration", "total_duration", "samples", "levels", "temperature",
                    "top_k", "top_p", "seed", "prime", "prompt_seconds", "dtype", "max_batch_size", "chunk_size",
                    "allow_unknown")  # fmt: skip


def continue_(
    source: Annotated[
        Path,
        typer.Argument(
            readable=False, metavar="SOURCE", help="An audio file to continue, or a run folder to extend."
        ),
    ],
    *,
    model: OptionalModel = None,
    adapter: Adapters = None,
    prompt_seconds: Annotated[
        float | None,
        typer.Option(help="Seconds of the source to keep (default: 5 s of audio, or all of a run)."),
    ] = None,
    prompt_start: Annotated[
        float | None,
        typer.Option(
            help="Audio: where the prompt starts in the file, in seconds (default: its last "
            "--prompt-seconds, so the continuation follows the song's end)."
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option(help="Seconds of audio in the result, the prompt included.")
    ] = 10.0,
    total_duration: TotalDuration = None,
    artist: Annotated[str | None, typer.Option(help="Artist (default: the run's, or unknown).")] = None,
    genre: Annotated[str | None, typer.Option(help="Genre (default: the run's, or unknown).")] = None,
    lyrics: Lyrics = None,
    lyrics_file: LyricsFile = None,
    samples: Samples = 1,
    takes: Takes = None,
    levels: Levels = "2,1,0",
    temperature: Temperature = "0.99",
    top_k: TopK = 0,
    top_p: TopP = 0.0,
    seed: Seed = 0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    dtype: Dtype = "auto",
    max_batch_size: MaxBatch = "auto",
    chunk_size: ChunkSize = 32,
    allow_unknown: AllowUnknown = False,
    alignment: Alignment = True,
    output: Output = None,
    audio_format: OptionalFormat = None,
    bit_depth: OptionalBitDepth = None,
    compile: Compile = CompileChoice.auto,
    dry_run: DryRun = False,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Continue a song: keep the prompt's codes verbatim and sample what follows, up to --duration.

    SOURCE is an audio file (encoded with the model's VQ-VAE) or a run folder (its codes are reused, e.g.
    to extend a top-level take a few seconds at a time before upsampling it).

    Examples:

        jukebox continue song.wav --prompt-seconds 5 --duration 15 -o runs/cont

        jukebox continue runs/demo --levels 2 --duration 12 -o runs/demo-longer

        jukebox continue runs/takes --takes 3 --levels 2 --duration 8 -o runs/take3
    """
    text = _read_lyrics(lyrics, lyrics_file)
    rows = _take_numbers(takes)

    def prepare(progress):
        from jukebox_cli.engine.sampling.generation import prepare_continue

        return prepare_continue(
            source, model=_adapted(model, adapter, cache_dir, progress, run=source),
            prompt_seconds=prompt_seconds, prompt_start=prompt_start,
            duration=duration, total_duration=total_duration, artist=artist, genre=genre, lyrics=text,
            samples=samples, takes=rows, levels=levels, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, dtype=dtype, max_batch_size=max_batch_size, chunk_size=chunk_size,
            allow_unknown=allow_unknown, output=output, cache_dir=cache_dir, progress=progress,
        )  # fmt: skip

    prepare_and_execute(device, prepare, announce=_prompt_line, force=force, dry_run=dry_run, quiet=quiet,
                         json_output=json_output, alignment=alignment, compile=compile.value,
                         audio_format=audio_format, bit_depth=bit_depth)  # fmt: skip


def _adapted(model: str | None, adapters: list[Path] | None, cache_dir, progress, *, run: Path | None = None):
    """``model`` itself, or with ``--adapter``s the loaded bundle of ``model`` (default: ``run``'s) with them."""
    if not adapters:
        return model
    from jukebox_cli.engine.errors import ConfigError
    from jukebox_cli.engine.sampling.runs import Run
    from jukebox_cli.engine.weights.loading import load_bundle

    if model is None:
        if run is None or not Path(run).is_dir():
            raise ConfigError("--adapter needs --model BASE (the model the adapter was trained on).")
        model = Run.open(Path(run)).settings["model"]
    return load_bundle(
        model, cache_dir=cache_dir, download=True, defer=True, adapters=adapters, progress=progress
    )


def _prompt_line(job) -> str:
    """What of the source is kept and how much is new, in seconds (the prompt counts in --duration)."""
    bundle, request = job.bundle, job.request
    prompt = request.settings().get("prompt") or {}
    top = bundle.top_level
    codes = job.initial_codes.get(top)
    kept = 0.0 if codes is None else codes.shape[1] * bundle.vqvae.hop_lengths[top] / bundle.sample_rate
    total = request.sample_length / bundle.sample_rate
    if "file" in prompt:
        source = f"{Path(prompt['file']).name} from {prompt.get('start', 0):.1f} s"
    else:
        takes = prompt.get("takes")
        chosen = "" if not takes else f" (take{'s' if len(takes) > 1 else ''} {', '.join(map(str, takes))})"
        source = f"{prompt.get('run')}{chosen}"
    line = f"prompt: {kept:.1f} s of {source}; {max(total - kept, 0):.1f} s new, {total:.1f} s in all"
    return f"{line}; {_labels(request.samples)}"


def _labels(samples) -> str:
    """The genres and artists the takes are conditioned on: a run's own unless given, so say which."""
    parts = []
    for kind in ("genre", "artist"):
        names = list(dict.fromkeys(getattr(s, kind) for s in samples))
        parts.append(f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}")
    return ", ".join(parts)


def upsample(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder whose top level is finished.")],
    *,
    takes: Takes = None,
    adapter: Adapters = None,
    # --samples is a count everywhere else (generate -n): this selection's old name is a hidden alias.
    old_samples: Annotated[str | None, typer.Option("--samples", hidden=True)] = None,
    temperature: Temperature = "0.99",
    top_k: TopK = 0,
    top_p: TopP = 0.0,
    seed: Seed = 0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    dtype: Dtype = "auto",
    max_batch_size: MaxBatch = "auto",
    chunk_size: ChunkSize = 32,
    output: Output = None,
    audio_format: OptionalFormat = None,
    bit_depth: OptionalBitDepth = None,
    compile: Compile = CompileChoice.auto,
    dry_run: DryRun = False,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Upsample the chosen top-level takes of a run (levels 1 and 0) into a new run folder.

    Co-composition: sample many short top-level takes (generate --levels 2), keep the ones you like, extend
    them with `continue`, then upsample only those.

    Examples:

        jukebox upsample runs/demo --takes 0,2 -o runs/demo-final
    """
    from jukebox_cli.engine.errors import ConfigError

    if old_samples is not None:
        if takes is not None:
            raise ConfigError("Give --takes alone (--samples is its old name).")
        deprecated("upsample --samples", "--takes (--samples counts takes in generate and continue)")
        takes = old_samples
    rows = _take_numbers(takes)

    def prepare(progress):
        from jukebox_cli.engine.sampling.generation import prepare_upsample

        return prepare_upsample(
            run_dir, takes=rows, model=_adapted(None, adapter, cache_dir, progress, run=run_dir),
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, dtype=dtype,
            max_batch_size=max_batch_size, chunk_size=chunk_size, output=output, cache_dir=cache_dir,
            progress=progress,
        )  # fmt: skip

    prepare_and_execute(device, prepare, force=force, dry_run=dry_run, quiet=quiet, json_output=json_output,
                         compile=compile.value, audio_format=audio_format, bit_depth=bit_depth)  # fmt: skip
