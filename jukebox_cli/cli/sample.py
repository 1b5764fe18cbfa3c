"""``jukebox generate``, ``continue`` and ``upsample``: the sampling cascade, with durable run folders."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jukebox_cli.cli._options import CacheDir, Device, Force, Json, Quiet
from jukebox_cli.cli._progress import RichProgress

ModelName = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="demo (bundled, trained), tiny-random (untrained), 1b_lyrics/5b/5b_lyrics (downloaded on first "
        "use), a model folder (native layout, e.g. a training run), or a hub repo owner/name[@rev].",
    ),
]
Artist = Annotated[str, typer.Option(help="Artist to condition on (see `jukebox labels --artists`).")]
Genre = Annotated[str, typer.Option(help="Genre to condition on (see `jukebox labels --genres`).")]
Lyrics = Annotated[str | None, typer.Option(help="Lyrics text (lyrics models only).")]
Alignment = Annotated[
    bool,
    typer.Option(
        "--alignment/--no-alignment",
        help="Lyrics models: write which lyrics each moment attends to (level_2/item_N.alignment.json, .png).",
    ),
]
LyricsFile = Annotated[Path | None, typer.Option(help="Read the lyrics from this UTF-8 file.")]
Duration = Annotated[float, typer.Option(min=0.0, help="Seconds of audio to generate.")]
TotalDuration = Annotated[
    float | None,
    typer.Option(
        help="Length of the whole song in seconds (conditions timing and lyrics); default: --duration, "
        "raised to the model's minimum."
    ),  # fmt: skip
]
Samples = Annotated[int, typer.Option("--samples", "-n", min=1, help="How many samples (takes) to generate.")]
Levels = Annotated[str, typer.Option(help="Levels to sample, top first: 2, 2,1 or 2,1,0.")]
Temperature = Annotated[
    str,
    typer.Option(
        help="Sampling temperature: one value, or one per sampled level (top first), e.g. 0.98,0.99,0.99."
    ),
]
TopK = Annotated[int, typer.Option(min=0, help="Keep only the k most likely codes (0: off).")]
TopP = Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling threshold (0: off).")]
Seed = Annotated[int, typer.Option(help="Random seed; the same command and seed give the same codes.")]
Dtype = Annotated[str, typer.Option(help="auto (bf16/fp16 on GPUs, fp32 on the CPU), fp32, fp16 or bf16.")]
MaxBatch = Annotated[
    str,
    typer.Option(
        help="Samples per prior call: one value or one per sampled level, e.g. 3,16,16 (lower it when out of "
        "memory)."
    ),
]
ChunkSize = Annotated[
    int, typer.Option(min=1, help="Known codes pushed through the prior at once when priming.")
]
AllowUnknown = Annotated[
    bool, typer.Option(help="Map an unknown artist or genre to id 0 instead of failing.")
]
DryRun = Annotated[bool, typer.Option(help="Print the plan (tokens, windows, memory per level) and stop.")]
Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="Run folder (re-running the same command resumes it).")
]


def _load(model: str, cache_dir: Path | None, quiet: bool):
    """The bundle; a released model's missing parts are downloaded first, with byte progress."""
    from jukebox_cli.engine.bundle import load_bundle

    with RichProgress(enabled=not quiet) as progress:
        return load_bundle(model, cache_dir=cache_dir, download=True, progress=progress)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _parse_levels(text: str, top: int) -> tuple[int, ...]:
    from jukebox_cli.engine.errors import ConfigError

    try:
        levels = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"--levels must look like 2, 2,1 or 2,1,0; got {text!r}.") from None
    expected = tuple(range(top, top - len(levels), -1))
    if not levels or levels != expected or min(levels) < 0:
        raise ConfigError(
            f"--levels must run from the top level ({top}) down without gaps, e.g. {top},{top - 1}; got {text!r}."
        )
    return levels


def _per_level(text: str, levels: tuple[int, ...], name: str) -> dict[int, float]:
    from jukebox_cli.engine.errors import ConfigError

    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise ConfigError(f"--{name} must be a number or a comma-separated list; got {text!r}.") from None
    if len(values) == 1:
        values = values * len(levels)
    if len(values) != len(levels):
        raise ConfigError(f"--{name} needs one value or one per sampled level ({len(levels)}); got {text!r}.")
    return dict(zip(levels, values, strict=True))


def _read_lyrics(lyrics: str | None, lyrics_file: Path | None) -> str:
    from jukebox_cli.engine.errors import ConfigError

    if lyrics is not None and lyrics_file is not None:
        raise ConfigError("Give --lyrics or --lyrics-file, not both.")
    if lyrics_file is None:
        return lyrics or ""
    if not lyrics_file.is_file():
        raise ConfigError(f"Lyrics file {lyrics_file} does not exist.")
    try:
        return lyrics_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"Lyrics file {lyrics_file} is not UTF-8 text.") from err


def _print_plan(console: Console, bundle, request, plans) -> None:
    table = Table(title=f"Plan: {request.sample_length / bundle.sample_rate:.2f} s x {len(request.samples)} "
                        f"sample(s) with {bundle.name}")  # fmt: skip
    for column in ("level", "codes", "existing", "windows", "new tokens", "KV cache/sample", "weights"):
        table.add_column(column, justify="right")
    for p in plans:
        table.add_row(str(p.level), f"{p.total_codes:,}", f"{p.existing_codes:,}", str(p.windows),
                      f"{p.new_tokens:,}", _size(p.cache_bytes_per_sample), _size(p.weight_bytes))  # fmt: skip
    console.print(table)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _execute(bundle, request, output: Path, *, device: str, force: bool, dry_run: bool, quiet: bool,
             json_output: bool, initial_codes=None, seed_levels=None, alignment: bool = False) -> None:  # fmt: skip
    """Shared tail of the three commands: plan, create or resume the run, sample, report."""
    from jukebox_cli.engine.devices import resolve_device
    from jukebox_cli.engine.generate import (
        encode_metadata,
        plan_cascade,
        resolve_dtype,
        run_cascade,
        validate_request,
        write_level_audio,
    )
    from jukebox_cli.engine.runs import Run

    console = Console(stderr=True, soft_wrap=True)
    validate_request(bundle, request)
    for level in request.levels:  # unknown labels fail here, before any sampling
        _, warnings = encode_metadata(
            bundle.labellers[level], request.samples, allow_unknown=request.allow_unknown
        )
        for warning in warnings if not quiet else []:
            console.print(f"[yellow]warning:[/] level {level}: {warning}")
    torch_device = resolve_device(device)
    existing = {level: codes.shape[1] for level, codes in (initial_codes or {}).items()}
    plans = plan_cascade(bundle, request, existing, resolve_dtype(request.dtype, torch_device))
    if not quiet and not json_output:
        _print_plan(console, bundle, request, plans)
    if dry_run:
        if json_output:
            typer.echo(json.dumps({"plan": [p.__dict__ for p in plans]}, indent=2))
        return
    run, resumed = Run.create_or_resume(output, request.settings(), force=force)
    if resumed and not quiet:
        console.print(f"resuming {output} from its saved codes")
    run.update(device=str(torch_device), model=bundle.describe())
    for level, codes in (seed_levels or {}).items():  # given levels: finished as they are
        if run.load_codes(level)[0] is None:
            run.save_codes(level, codes, windows_done=0, finished=True)
            write_level_audio(run, bundle, level, codes)
    for level, codes in (initial_codes or {}).items():  # keep the starting point in the run for resumes
        if run.load_codes(level)[0] is None:
            run.save_codes(level, codes, windows_done=0)
    with RichProgress(enabled=not quiet) as progress:
        codes = run_cascade(bundle, run, request, device=torch_device, initial_codes=initial_codes,
                            progress=progress, alignment=alignment)  # fmt: skip
    files = sorted(str(p) for level in request.levels for p in run.level_dir(level).glob("item_*.wav"))
    alignments = sorted(str(p) for p in run.level_dir(bundle.top_level).glob("item_*.alignment.json"))
    summary = {
        "run": str(output),
        "model": bundle.name,
        "pretrained": bundle.pretrained,
        "sample_rate": bundle.sample_rate,
        "seconds": request.sample_length / bundle.sample_rate,
        "codes": {str(level): list(c.shape) for level, c in codes.items()},
        "files": files,
        "alignments": alignments,
    }
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        out = Console(soft_wrap=True)
        for level in request.levels:
            out.print(
                f"level {level}: {len(codes[level])} sample(s) in {run.level_dir(level)}/", highlight=False
            )
        if alignments:
            out.print(f"lyric alignment: {len(alignments)} sample(s), item_N.alignment.png/.json in "
                      f"{run.level_dir(bundle.top_level)}/", highlight=False)  # fmt: skip
        if not bundle.pretrained:
            console.print(
                f"[yellow]note:[/] {bundle.name} has untrained random weights: expect noise, not music."
            )


def _build_request(bundle, *, model: str, artist: str, genre: str, lyrics: str, duration: float,
                   total_duration: float | None, samples: int, levels: tuple[int, ...], temperature: str,
                   top_k: int, top_p: float, seed: int, dtype: str, max_batch_size: str, chunk_size: int,
                   allow_unknown: bool, prompt: dict | None = None):  # fmt: skip
    from jukebox_cli.engine.generate import DEFAULT_HOP_FRACTIONS, CascadeRequest, SampleMeta
    from jukebox_cli.engine.windows import sample_length

    sr = bundle.sample_rate
    top_hop = bundle.vqvae.hop_lengths[-1]
    length = sample_length(duration, sr, top_hop)
    top = bundle.prior_configs[bundle.top_level]
    minimum = int(top.min_duration * sr) if top.min_duration else 0
    total = sample_length(total_duration, sr, top_hop) if total_duration is not None else max(length, minimum)
    batches = _per_level(max_batch_size, levels, "max-batch-size")
    if any(b < 1 or b != int(b) for b in batches.values()):
        from jukebox_cli.engine.errors import ConfigError

        raise ConfigError(f"--max-batch-size must be positive whole numbers; got {max_batch_size!r}.")
    return CascadeRequest(
        model=model, samples=tuple(SampleMeta(artist, genre, lyrics) for _ in range(samples)),
        sample_length=length, total_length=total, levels=levels,
        temperature=_per_level(temperature, levels, "temperature"), top_k=top_k, top_p=top_p, seed=seed,
        chunk_size=chunk_size, max_batch_size={level: int(b) for level, b in batches.items()}, dtype=dtype,
        allow_unknown=allow_unknown, prompt=prompt,
        hop_fraction={level: DEFAULT_HOP_FRACTIONS[level] for level in levels},
    )  # fmt: skip


def generate(
    *,
    model: ModelName = "demo",
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
    prime: Annotated[Path | None, typer.Option(help="Start from this audio file (primed sampling).")] = None,
    prompt_seconds: Annotated[float, typer.Option(min=0.0, help="Seconds of --prime to keep.")] = 5.0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    dtype: Dtype = "auto",
    max_batch_size: MaxBatch = "16",
    chunk_size: ChunkSize = 32,
    allow_unknown: AllowUnknown = False,
    alignment: Alignment = True,
    output: Output = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run folder with its own settings.")
    ] = None,
    dry_run: DryRun = False,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Generate music: sample the top level, then upsample, writing audio per level into a run folder.

    The top level's audio (level_2/item_N.wav) is written as soon as it is done, long before the
    upsampling finishes. Codes are saved after every window: re-run the same command (or --resume RUN) to
    continue an interrupted run with identical results.

    Examples:

        jukebox generate --model demo --genre rock --duration 10 -o runs/rock

        jukebox generate -m 1b_lyrics --artist "zac brown band" --genre country --lyrics-file l.txt --duration 20

        jukebox generate --resume runs/demo
    """
    from jukebox_cli.engine.generate import CascadeRequest, encode_prompt
    from jukebox_cli.engine.runs import Run

    if resume is not None:
        run = Run.open(resume)
        request = CascadeRequest.from_settings(run.settings)
        bundle = _load(request.model, cache_dir, quiet)
        # Prompt codes were saved into the run when it started, so the run folder alone is enough.
        _execute(bundle, request, resume, device=device, force=False, dry_run=dry_run, quiet=quiet,
                 json_output=json_output, alignment=alignment)  # fmt: skip
        return
    text = _read_lyrics(lyrics, lyrics_file)
    if prime is not None:
        from jukebox_cli.engine import audio as audio_io

        audio_io.audio_info(prime)  # a bad prompt fails before the model loads
    bundle = _load(model, cache_dir, quiet)
    level_list = _parse_levels(levels, bundle.top_level)
    prompt = {"file": str(prime), "seconds": prompt_seconds} if prime is not None else None
    if prime is not None and prompt_seconds >= duration:
        from jukebox_cli.engine.errors import ConfigError

        raise ConfigError(
            f"--prompt-seconds ({prompt_seconds}) must be shorter than --duration ({duration})."
        )
    request = _build_request(
        bundle, model=model, artist=artist, genre=genre, lyrics=text, duration=duration,
        total_duration=total_duration, samples=samples, levels=level_list, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed, dtype=dtype, max_batch_size=max_batch_size, chunk_size=chunk_size,
        allow_unknown=allow_unknown, prompt=prompt,
    )  # fmt: skip
    if text and not bundle.prior_configs[bundle.top_level].n_tokens and not quiet:
        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]note:[/] {bundle.name} has no lyrics conditioning; the lyrics are ignored."
        )
    initial = encode_prompt(bundle, prime, prompt_seconds, samples, level_list) if prime is not None else None
    run_dir = output or Path("runs") / f"{_slug(Path(model).name)}-{_slug(genre)}-seed{seed}"
    _execute(bundle, request, run_dir, device=device, force=force, dry_run=dry_run, quiet=quiet,
             json_output=json_output, initial_codes=initial, alignment=alignment)  # fmt: skip


def continue_(
    source: Annotated[Path, typer.Argument(help="An audio file to continue, or a run folder to extend.")],
    *,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="The model (default: the run's, or demo for audio)."),
    ] = None,
    prompt_seconds: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds of the source to keep (default: 5 s of audio, or all of a run)."),
    ] = None,
    duration: Duration = 10.0,
    total_duration: TotalDuration = None,
    artist: Annotated[str | None, typer.Option(help="Artist (default: the run's, or unknown).")] = None,
    genre: Annotated[str | None, typer.Option(help="Genre (default: the run's, or unknown).")] = None,
    lyrics: Lyrics = None,
    lyrics_file: LyricsFile = None,
    samples: Samples = 1,
    levels: Levels = "2,1,0",
    temperature: Temperature = "0.99",
    top_k: TopK = 0,
    top_p: TopP = 0.0,
    seed: Seed = 0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    dtype: Dtype = "auto",
    max_batch_size: MaxBatch = "16",
    chunk_size: ChunkSize = 32,
    allow_unknown: AllowUnknown = False,
    alignment: Alignment = True,
    output: Output = None,
    dry_run: DryRun = False,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Continue a song: keep the prompt's codes verbatim and sample what follows, up to --duration.

    SOURCE is an audio file (encoded with the model's VQ-VAE) or a run folder (its codes are reused, e.g.
    to extend a top-level take a few seconds at a time before upsampling it).

    Examples:

        jukebox continue song.wav --model demo --prompt-seconds 5 --duration 15 -o runs/cont

        jukebox continue runs/demo --levels 2 --duration 12 -o runs/demo-longer
    """
    from jukebox_cli.engine.bundled import DEMO
    from jukebox_cli.engine.errors import ConfigError
    from jukebox_cli.engine.generate import SampleMeta, encode_prompt
    from jukebox_cli.engine.runs import Run

    text = _read_lyrics(lyrics, lyrics_file)
    metas = None
    if source.is_dir():
        source_run = Run.open(source)
        s = source_run.settings
        if model is not None and model != s["model"]:
            raise ConfigError(f"{source} was made with model {s['model']!r}, not {model!r}.")
        model = s["model"]
        bundle = _load(model, cache_dir, quiet)
        level_list = _parse_levels(levels, bundle.top_level)
        initial = {}
        for level in level_list:
            codes, _, _ = source_run.load_codes(level)
            if codes is None:
                continue
            hop = bundle.vqvae.hop_lengths[level]
            keep = (
                codes.shape[1] if prompt_seconds is None else int(prompt_seconds * bundle.sample_rate) // hop
            )
            initial[level] = codes[:, :keep]
        if bundle.top_level not in initial:
            raise ConfigError(f"{source} has no top-level codes to continue.")
        # Each take keeps its own conditioning; options given here override it for all of them.
        metas = tuple(
            SampleMeta(artist or m["artist"], genre or m["genre"], text or m["lyrics"]) for m in s["samples"]
        )
        samples = len(metas)
        artist, genre, text = metas[0].artist, metas[0].genre, metas[0].lyrics
        prompt = {"run": str(source), "seconds": prompt_seconds}
    else:
        from jukebox_cli.engine import audio as audio_io

        audio_io.audio_info(source)
        model = model or DEMO
        bundle = _load(model, cache_dir, quiet)
        level_list = _parse_levels(levels, bundle.top_level)
        seconds = 5.0 if prompt_seconds is None else prompt_seconds
        if seconds >= duration:
            raise ConfigError(f"The prompt ({seconds} s) must be shorter than --duration ({duration} s).")
        initial = encode_prompt(bundle, source, seconds, samples, level_list)
        prompt = {"file": str(source), "seconds": seconds}
        artist, genre = artist or "unknown", genre or "unknown"
    top_codes = initial[bundle.top_level].shape[1] * bundle.vqvae.hop_lengths[-1]
    if top_codes >= int(duration * bundle.sample_rate):
        raise ConfigError(
            f"The prompt is already {top_codes / bundle.sample_rate:.2f} s long; ask for a longer --duration."
        )
    request = _build_request(
        bundle, model=model, artist=artist, genre=genre, lyrics=text, duration=duration,
        total_duration=total_duration, samples=samples, levels=level_list, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=seed, dtype=dtype, max_batch_size=max_batch_size, chunk_size=chunk_size,
        allow_unknown=allow_unknown, prompt=prompt,
    )  # fmt: skip
    if metas is not None:
        request = dataclasses.replace(request, samples=metas)
    run_dir = output or Path("runs") / f"{_slug(source.stem)}-continued-seed{seed}"
    _execute(bundle, request, run_dir, device=device, force=force, dry_run=dry_run, quiet=quiet,
             json_output=json_output, initial_codes=initial, alignment=alignment)  # fmt: skip


def upsample(
    run_dir: Annotated[Path, typer.Argument(help="A run folder whose top level is finished.")],
    *,
    select: Annotated[
        str | None, typer.Option("--samples", help="Which samples to upsample, e.g. 0,3 (default: all).")
    ] = None,
    temperature: Temperature = "0.99",
    top_k: TopK = 0,
    top_p: TopP = 0.0,
    seed: Seed = 0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    dtype: Dtype = "auto",
    max_batch_size: MaxBatch = "16",
    chunk_size: ChunkSize = 32,
    output: Output = None,
    dry_run: DryRun = False,
    force: Force = False,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Upsample the chosen top-level takes of a run (levels 1 and 0) into a new run folder.

    Co-composition: sample many short top-level takes (generate --levels 2), keep the ones you like, extend
    them with `continue`, then upsample only those.

    Examples:

        jukebox upsample runs/demo --samples 0,2 -o runs/demo-final
    """
    from jukebox_cli.engine.errors import ConfigError
    from jukebox_cli.engine.generate import SampleMeta
    from jukebox_cli.engine.runs import Run

    source = Run.open(run_dir)
    s = source.settings
    bundle = _load(s["model"], cache_dir, quiet)
    top = bundle.top_level
    codes, _, finished = source.load_codes(top)
    if codes is None or not finished:
        raise ConfigError(f"{run_dir} has no finished top-level (level {top}) codes to upsample.")
    rows = list(range(codes.shape[0]))
    if select:
        try:
            rows = [int(p) for p in select.split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"--samples must be sample numbers like 0,3; got {select!r}.") from None
        bad = [r for r in rows if not 0 <= r < codes.shape[0]]
        if bad:
            raise ConfigError(f"{run_dir} has samples 0..{codes.shape[0] - 1}; {bad} do not exist.")
    metas = [SampleMeta(**s["samples"][r]) for r in rows]
    levels = tuple(range(top - 1, -1, -1))
    request = _build_request(
        bundle, model=s["model"], artist=metas[0].artist, genre=metas[0].genre, lyrics=metas[0].lyrics,
        duration=codes.shape[1] * bundle.vqvae.hop_lengths[top] / bundle.sample_rate,
        total_duration=s["total_length"] / bundle.sample_rate, samples=len(rows), levels=levels,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, dtype=dtype,
        max_batch_size=max_batch_size, chunk_size=chunk_size, allow_unknown=s["allow_unknown"],
        prompt={"run": str(run_dir), "samples": rows},
    )  # fmt: skip
    request = dataclasses.replace(request, samples=tuple(metas))
    selected = codes[rows]
    run_out = output or run_dir.with_name(f"{run_dir.name}-upsampled")
    _execute(bundle, request, run_out, device=device, force=force, dry_run=dry_run, quiet=quiet,
             json_output=json_output, initial_codes={top: selected}, seed_levels={top: selected})  # fmt: skip
