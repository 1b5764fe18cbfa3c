"""``jukebox train vqvae | prior | upsampler | report``: training and fine-tuning, with a live view.

Engine imports sit inside the command functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jukebox_cli.cli._options import CacheDir, Device, Json, Quiet, rerun_command
from jukebox_cli.cli._progress import TrainProgress

app = typer.Typer(
    name="train",
    help="Train or fine-tune the VQ-VAE and the priors on a folder of audio.",
    no_args_is_help=True,
)


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Strategy(str, Enum):
    auto = "auto"
    none = "none"
    ddp = "ddp"
    fsdp = "fsdp"


class LoggerKind(str, Enum):
    tensorboard = "tensorboard"
    wandb = "wandb"
    none = "none"


Data = Annotated[
    Path,
    typer.Argument(metavar="DATA", help="Folder of audio files (searched recursively: wav, flac, ogg, mp3)."),
]
Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="Run folder (checkpoints, logs, the exported model).")
]
Steps = Annotated[int, typer.Option(min=1, help="Optimizer steps to train for (in total, when resuming).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Chunks per step and process (before --grad-accum).")]
Lr = Annotated[float, typer.Option(min=0.0, help="Peak learning rate (AdamW, after a linear warmup).")]
Warmup = Annotated[int, typer.Option(min=0, help="Warmup steps.")]
GradAccum = Annotated[int, typer.Option(min=1, help="Micro-batches accumulated per step.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(help="fp32; bf16 (autocast); fp16 (autocast + loss scaling, CUDA)."),
]
Seed = Annotated[int, typer.Option(help="Seed of the initialisation and of the data order.")]
SaveEvery = Annotated[
    int, typer.Option(min=1, help="Save a checkpoint (and export the model) every N steps.")
]
EvalEvery = Annotated[int, typer.Option(min=1, help="Held-out metrics, audio and chromagrams every N steps.")]
LogEvery = Annotated[int, typer.Option(min=1, help="Log training scalars every N steps.")]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint.")
]
Logger = Annotated[
    LoggerKind, typer.Option(help="Where metrics go (wandb works offline without an account).")
]
Metadata = Annotated[
    Path | None, typer.Option(help="CSV or JSON-lines file with path, artist, genre, lyrics per song.")
]
HeldOut = Annotated[float, typer.Option(min=0.0, max=0.9, help="Fraction of songs held out for evaluation.")]
Ema = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Weight EMA decay (0: off); EMA weights are exported."),
]
MinLevelDb = Annotated[
    float | None,
    typer.Option(
        max=0.0,
        help="Redraw training chunks whose median level is below this many dBFS (fades, pauses; e.g. -35).",
    ),
]
TrimEdgesDb = Annotated[
    float | None,
    typer.Option(
        max=0.0,
        help="Trim each song's edges quieter than this many dBFS (e.g. -50).",
    ),
]


SKIPPED_SHOWN = 10


def _hours(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.1f} min" if hours >= 1 / 60 else f"{hours * 3600:.0f} s"


def _songs(n: int) -> str:
    return f"{n:,} song{'s' if n != 1 else ''}"


def _corpus_lines(corpus: dict) -> list[str]:
    """The corpus summary in a few lines; the run's train.json keeps its fingerprint."""
    train, held = corpus["train"], corpus["eval"]
    if held["same_as_train"]:
        evaluated = "the training song (there is only one)"
    else:
        evaluated = f"{_songs(held['songs'])}, {_hours(held['hours'])}"
    lines = [
        f"data: {_songs(corpus['songs'])} in {corpus['root']} at {corpus['sample_rate']:,} Hz",
        f"  train {_songs(train['songs'])}, {_hours(train['hours'])}; held out {evaluated}",
        f"  {corpus['artists']:,} artist(s), {corpus['genres']:,} genre(s), {corpus['with_lyrics']:,} with lyrics",
    ]
    if corpus.get("trim_edges_db") is not None:
        trimmed = corpus["trimmed"]
        lines.append(f"  quiet edges (below {corpus['trim_edges_db']:g} dBFS) trimmed from {_songs(trimmed['songs'])}, "
                     f"{_hours(trimmed['hours'])} left out")  # fmt: skip
    if corpus["skipped"] > SKIPPED_SHOWN:  # the first ones are listed one per line
        reasons = ", ".join(f"{why}: {n:,}" for why, n in corpus["skipped_by_reason"].items())
        lines.append(f"  skipped {corpus['skipped']:,} files ({reasons}); the first {SKIPPED_SHOWN} follow")
    return lines


def _run(kind: str, build, *, output: Path | None, data: Path, steps: int, batch_size: int, lr: float, warmup: int,
         grad_accum: int, precision: Precision, seed: int, save_every: int, eval_every: int, log_every: int,
         resume: bool, logger: LoggerKind, ema: float, device: str, quiet: bool, json_output: bool,
         strategy: str = "auto", checkpoint_activations: bool = False, plan_only: bool = False) -> None:  # fmt: skip
    """Shared by the three commands: set up (distributed if under torchrun), build the task, train, report."""
    from jukebox_cli.engine.locks import hold_folder
    from jukebox_cli.engine.train import distributed
    from jukebox_cli.engine.train.checkpoint import check_run_dir
    from jukebox_cli.engine.train.logging import make_logger
    from jukebox_cli.engine.train.loop import TrainConfig, plan, train
    from jukebox_cli.engine.train.memory import check_fits

    info = distributed.setup(device)
    show = not quiet and info.rank == 0
    console = Console(stderr=True, soft_wrap=True)
    run_dir = output or Path("runs") / f"train-{kind}-{data.resolve().name}"
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=min(warmup, steps), grad_accum=grad_accum,
                         precision=precision.value, seed=seed, save_every=save_every, eval_every=eval_every,
                         log_every=log_every, ema=ema or None, strategy=strategy,
                         checkpoint_activations=checkpoint_activations)  # fmt: skip
    try:
        # Refused before anything is written: the logger would leave an event file in someone's run.
        if not plan_only:
            check_run_dir(run_dir, resume=resume)
        with TrainProgress(enabled=show, device=info.device.type) as progress:
            task = build(progress)
            lora_base = task.source if getattr(task, "lora", None) is not None else None
            if show:
                trainable = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
                console.print(f"[bold]{kind}[/]: {sum(p.numel() for p in task.model.parameters()):,} parameters, "
                              f"{trainable:,} trained", highlight=False)  # fmt: skip
                for line in _corpus_lines(task.corpus.describe()):
                    console.print(line, highlight=False)
                for path, reason in task.corpus.skipped[:SKIPPED_SHOWN]:
                    console.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
                for note in task.notes(world=info.world):
                    console.print(f"[yellow]note:[/] {note}", highlight=False)
            if kind != "vqvae" and (show or plan_only):  # the plan counts Transformer activations only
                memory, shape = plan(task.model, config, info)
                _print_plan(console, memory, f"Training plan: {kind} on {info.device}")
                if plan_only:
                    check_fits(shape, memory, ema=config.ema is not None)
                    return
            # The logger writes into the run folder too, so the folder is held before it starts (train
            # takes the same lock again).
            with hold_folder(run_dir, "training run") if info.rank == 0 else nullcontext():
                log = make_logger(logger.value, run_dir, config={"train": config.to_dict(), "task": task.config()},
                                  name=run_dir.name, rank=info.rank)  # fmt: skip
                if show and getattr(log, "notice", None):
                    console.print(f"[dim]{log.notice}[/]")
                try:
                    result = train(task, config, run_dir, resume=resume, logger=log, device=info.device,
                                   progress=progress)  # fmt: skip
                finally:
                    log.close()
    finally:
        distributed.teardown()
    if info.rank != 0:
        return
    summary = {"run": str(run_dir), "step": result.step, "stopped": result.stopped,
               "skipped_steps": result.skipped_steps, "metrics": result.last_metrics, "eval": result.eval_metrics}  # fmt: skip
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        out = Console(soft_wrap=True)
        if result.stopped == "interrupted":
            out.print(f"{kind} stopped at step {result.step:,} of {steps:,}. Resume with: "
                      f"{rerun_command('--resume')}", highlight=False)  # fmt: skip
        elif lora_base is not None:
            out.print(f"{kind} done at step {result.step:,}; adapter in {run_dir} (use --model {lora_base} "
                      f"--adapter {run_dir})", highlight=False)  # fmt: skip
        else:
            out.print(f"{kind} done at step {result.step:,}; model in {run_dir} (use --model {run_dir}); "
                      f"curves: jukebox train report {run_dir}", highlight=False)  # fmt: skip
    if result.stopped == "interrupted":
        raise typer.Exit(130)


@app.command()
def vqvae(
    data: Data,
    *,
    preset: Annotated[
        str, typer.Option(help="tiny, small (22.05 kHz, trains on a CPU) or jukebox (released size).")
    ] = "small",
    from_: Annotated[
        str | None, typer.Option("--from", help="Start from these weights (jukebox, a run folder, a file).")
    ] = None,
    output: Output = None,
    steps: Steps = 10_000,
    batch_size: BatchSize = 4,
    lr: Lr = 3e-4,
    warmup: Warmup = 100,
    grad_accum: GradAccum = 1,
    precision: PrecisionOpt = Precision.fp32,
    seed: Seed = 0,
    save_every: SaveEvery = 500,
    eval_every: EvalEvery = 500,
    log_every: LogEvery = 10,
    ema: Ema = 0.999,
    resume: Resume = False,
    logger: Logger = LoggerKind.tensorboard,
    metadata: Metadata = None,
    held_out: HeldOut = 0.1,
    chunk_seconds: Annotated[
        float | None,
        typer.Option(min=0.1, help="Length of each training example (default: 64 top-level codes)."),
    ] = None,
    revival_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Codebook entries used fewer times per step (EMA) restart; lower it for small batches "
            "(default: the preset's, 1.0).",
        ),
    ] = None,
    min_level_db: MinLevelDb = None,
    trim_edges_db: TrimEdgesDb = None,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Train (or fine-tune) the VQ-VAE: all three levels, with the spectral losses and codebook restarts.

    Examples:

        jukebox train vqvae data/ --preset small --steps 2000 -o runs/vqvae

        jukebox train vqvae data/ --from jukebox --lr 1e-5 --steps 500 -o runs/ft

        torchrun --nproc-per-node 2 -m jukebox_cli train vqvae data/ -o runs/vqvae
    """
    from jukebox_cli.engine.train.setup import vqvae_task

    def build(progress):
        return vqvae_task(data, preset=preset, source=from_, batch_size=batch_size, seed=seed, metadata=metadata,
                          held_out=held_out, cache_dir=cache_dir, chunk_seconds=chunk_seconds,
                          revival_threshold=revival_threshold, min_level_db=min_level_db,
                          trim_edges_db=trim_edges_db, progress=progress)  # fmt: skip

    _run("vqvae", build, output=output, data=data, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
         grad_accum=grad_accum, precision=precision, seed=seed, save_every=save_every, eval_every=eval_every,
         log_every=log_every, resume=resume, logger=logger, ema=ema, device=device, quiet=quiet,
         json_output=json_output)  # fmt: skip


def _prior_command(kind: str, default_level: int | None):
    def command(
        data: Data,
        *,
        vqvae: Annotated[
            str, typer.Option(help="The VQ-VAE whose codes are modelled (a run folder, jukebox, ...).")
        ],
        level: Annotated[
            int | None, typer.Option(help="Level to model (2: top; 1, 0: upsamplers).")
        ] = default_level,
        preset: Annotated[
            str, typer.Option(help="tiny, small, demo-top or demo-up (a new prior), ignored with --from.")
        ] = "small",
        from_: Annotated[
            str | None,
            typer.Option(
                "--from", help="Fine-tune this model's prior (1b_lyrics, a run folder, a hub repo, ...)."
            ),
        ] = None,
        output: Output = None,
        steps: Steps = 10_000,
        batch_size: BatchSize = 4,
        lr: Lr = 3e-4,
        warmup: Warmup = 100,
        grad_accum: GradAccum = 1,
        precision: PrecisionOpt = Precision.fp32,
        seed: Seed = 0,
        save_every: SaveEvery = 500,
        eval_every: EvalEvery = 500,
        log_every: LogEvery = 10,
        ema: Ema = 0.999,
        resume: Resume = False,
        logger: Logger = LoggerKind.tensorboard,
        metadata: Metadata = None,
        held_out: HeldOut = 0.1,
        min_level_db: MinLevelDb = None,
        trim_edges_db: TrimEdgesDb = None,
        label_dropout: Annotated[
            float,
            typer.Option(
                min=0.0, max=0.99, help="Share of training chunks given the unknown artist and genre."
            ),
        ] = 0.0,
        artist_dropout: Annotated[
            float | None,
            typer.Option(
                min=0.0,
                max=0.99,
                help="Share given the unknown artist (at least --label-dropout; default: it).",
            ),
        ] = None,
        lora_rank: Annotated[
            int | None,
            typer.Option(
                min=1, help="Train rank-R LoRA adapters on the frozen --from prior (not every weight)."
            ),
        ] = None,
        lora_alpha: Annotated[
            float | None,
            typer.Option(
                min=0.0, metavar="A", help="LoRA scale numerator: updates scale by A/R (default: R)."
            ),
        ] = None,
        lora_targets: Annotated[
            str, typer.Option(help="Projections to adapt: attn, mlp or attn,mlp.")
        ] = "attn,mlp",
        strategy: Annotated[
            Strategy,
            typer.Option(
                metavar="MODE",
                help="auto, ddp or fsdp (torchrun).",
            ),
        ] = Strategy.auto,
        checkpoint_activations: Annotated[
            bool,
            typer.Option("--checkpoint-acts", help="Recompute activations."),
        ] = False,
        plan_only: Annotated[bool, typer.Option("--plan", help="Print the plan; exit.")] = False,
        device: Device = "auto",
        cache_dir: CacheDir = None,
        quiet: Quiet = False,
        json_output: Json = False,
    ) -> None:
        from jukebox_cli.engine.errors import ConfigError
        from jukebox_cli.engine.train.setup import prior_task

        lora = base_dtype = None
        if lora_rank is not None:
            import torch  # lazy: torch only once a command runs

            from jukebox_cli.engine.devices import resolve_device
            from jukebox_cli.engine.models.lora import LoRAConfig

            targets = tuple(t.strip() for t in lora_targets.split(",") if t.strip())
            lora = LoRAConfig(rank=lora_rank, alpha=lora_alpha, targets=targets)
            # The frozen base in bf16 on a GPU (half the memory of a 1B prior); CPUs keep float32.
            base_dtype = torch.bfloat16 if resolve_device(device).type == "cuda" else None
        elif lora_alpha is not None or lora_targets != "attn,mlp":
            raise ConfigError("--lora-alpha and --lora-targets need --lora-rank.")

        if level is None:
            raise ConfigError("Pass --level 1 or --level 0 (the upsampler to train).")
        if kind == "upsampler" and level == 2:
            raise ConfigError("Level 2 is the top prior: use `jukebox train prior`.")

        def build(progress):
            return prior_task(data, vqvae=vqvae, level=level, preset=preset, source=from_, batch_size=batch_size,
                              seed=seed, metadata=metadata, held_out=held_out, cache_dir=cache_dir,
                              min_level_db=min_level_db, trim_edges_db=trim_edges_db, label_dropout=label_dropout,
                              artist_dropout=artist_dropout, lora=lora, base_dtype=base_dtype,
                              progress=progress)  # fmt: skip

        _run(kind, build, output=output, data=data, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
             grad_accum=grad_accum, precision=precision, seed=seed, save_every=save_every, eval_every=eval_every,
             log_every=log_every, resume=resume, logger=logger, ema=ema, device=device, quiet=quiet,
             json_output=json_output, strategy=strategy.value, checkpoint_activations=checkpoint_activations,
             plan_only=plan_only)  # fmt: skip

    return command


prior = _prior_command("prior", 2)
prior.__doc__ = """Train a top-level prior on a VQ-VAE's codes, conditioned on the corpus' artists and genres.

    Examples:

        jukebox train prior data/ --vqvae runs/vqvae --metadata meta.csv -o runs/top

        jukebox train prior data/ --vqvae jukebox --from 1b_lyrics \\
            --metadata meta.csv --lr 1e-5 -o runs/ft

        jukebox train prior data/ --vqvae jukebox --from 1b_lyrics --lora-rank 8 \\
            -o runs/lora
    """
upsampler = _prior_command("upsampler", None)
upsampler.__doc__ = """Train an upsampler (level 1 or 0) on a VQ-VAE's codes.

    Examples:

        jukebox train upsampler data/ --vqvae runs/vqvae --level 1 -o runs/up1
    """
app.command("prior")(prior)
app.command("upsampler")(upsampler)


def _print_plan(console: Console, plan, title: str) -> None:
    from rich.table import Table

    # lazy: keeps torch out of `jukebox --help`
    from jukebox_cli.engine.train.memory import plan_rows

    table = Table(title=title, box=None, pad_edge=False, show_header=False)
    table.add_column("what")
    table.add_column("per device", justify="right")
    for what, size in plan_rows(plan):
        table.add_row(what, size)
    checkpointed = "on" if plan.checkpoint_activations else "off"
    table.caption = (f"{plan.strategy} on {plan.world} device(s), {plan.precision}, batch {plan.batch_size}, "
                     f"activation checkpointing {checkpointed}; {plan.trainable_params:,} of "
                     f"{plan.total_params:,} parameters trained; GB = 2**30 bytes")  # fmt: skip
    console.print(table)


@app.command()
def plan(
    model: Annotated[
        str, typer.Argument(help="A released model (5b_lyrics, 5b, 1b_lyrics) or a prior preset name.")
    ],
    *,
    level: Annotated[int, typer.Option(help="Which prior (2: top; 1, 0: upsamplers).")] = 2,
    world_size: Annotated[int, typer.Option(min=1, help="Devices (processes) training together.")] = 1,
    device_memory: Annotated[
        str | None, typer.Option(help="Memory of one device, e.g. 24GB or 80GB (default: not checked).")
    ] = None,
    strategy: Annotated[
        Strategy, typer.Option(help="auto: none for one device, else ddp when it fits, else fsdp.")
    ] = Strategy.auto,
    precision: PrecisionOpt = Precision.bf16,
    batch_size: BatchSize = 1,
    checkpoint_activations: Annotated[
        bool, typer.Option("--checkpoint-acts", help="Recompute each block's activations.")
    ] = False,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Count a float32 weight EMA.")] = True,
    lora_rank: Annotated[
        int | None, typer.Option(min=1, help="Plan LoRA adapters of this rank (the base frozen in bf16).")
    ] = None,
) -> None:
    """The memory plan of training one prior, per device, from its config alone (no weights needed).

    Exits with code 5 and names what would fit when --device-memory is too small.

    Examples:

        jukebox train plan 5b_lyrics --world-size 8 --device-memory 24GB \\
            --strategy fsdp --checkpoint-acts

        jukebox train plan 1b_lyrics --device-memory 24GB --lora-rank 16
    """
    # lazy: keeps torch out of `jukebox --help`
    from jukebox_cli.engine.models.builders import build_prior
    from jukebox_cli.engine.train.memory import (
        check_fits,
        choose_strategy,
        lora_params,
        parse_memory,
        plan_memory,
        prior_shape,
    )
    from jukebox_cli.engine.weights.registry import MODELS

    preset = model
    if model in MODELS:
        parts = [p for p in MODELS[model].part_list() if p.kind == "prior" and p.level == level]
        if not parts:
            from jukebox_cli.engine.errors import ConfigError

            raise ConfigError(f"{model} has no level-{level} prior.")
        preset = parts[0].preset
    shape = prior_shape(preset)
    trainable = None
    if lora_rank is not None:
        trainable = lora_params(build_prior(preset, "meta"), lora_rank)
    memory = parse_memory(device_memory) if device_memory else None
    options = dict(world=world_size, precision=precision.value, checkpoint_activations=checkpoint_activations,
                   batch_size=batch_size, ema=ema, trainable_params=trainable, device_memory=memory)  # fmt: skip
    fits_ddp = world_size > 1 and plan_memory(shape, strategy="ddp", **options).fits
    chosen = choose_strategy(strategy.value, world_size, fits_ddp)
    result = plan_memory(shape, strategy=chosen, **options)
    what = f"LoRA rank {lora_rank} on " if lora_rank else ""
    _print_plan(Console(soft_wrap=True), result, f"Training plan: {what}{model} level {level} ({preset})")
    check_fits(shape, result, trainable_params=trainable, ema=ema)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A training run folder.")],
    *,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG to write (default RUN/report.png).")
    ] = None,
) -> None:
    """Plot a run's training and held-out curves to a PNG.

    Examples:

        jukebox train report runs/vqvae
    """
    from jukebox_cli.engine.train.report import plot_report

    typer.echo(str(plot_report(run_dir, output)))
