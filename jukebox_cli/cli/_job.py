"""Running a sampling job from the command line, shared by ``generate``, ``continue`` and ``upsample``: the
warnings and the plan (with its time estimate), the progress bars, the lines said when a signal stops it,
and the closing summary.

Engine imports sit inside the functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import json
import shlex
import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jukebox_cli.cli._errors import EXIT_INTERRUPTED, other_rank
from jukebox_cli.cli._options import SUBTYPES
from jukebox_cli.cli._progress import RichProgress
from jukebox_cli.cli._say import say
from jukebox_cli.cli._signals import EXIT_TERMINATED, Terminated, sigterm_interrupts
from jukebox_cli.engine.tracking import format_seconds


def _print_plan(console: Console, job, plans, estimates, device: str) -> None:
    bundle, request = job.bundle, job.request
    # Short headers and no outer frame: ten columns fit an 80-column terminal.
    table = Table(title=f"Plan: {request.sample_length / bundle.sample_rate:.2f} s x {len(request.samples)} "
                        f"sample(s) with {bundle.name}", box=None, pad_edge=False, collapse_padding=True)  # fmt: skip
    columns = ("level", "codes", "saved", "windows", "new", "batch", "KV/take", "weights", "decode", "time")
    for column in columns:
        table.add_column(column, justify="left" if column == "decode" else "right", no_wrap=True)
    for p, e in zip(plans, estimates, strict=True):
        table.add_row(str(p.level), f"{p.total_codes:,}", f"{p.existing_codes:,}", str(p.windows),
                      f"{p.new_tokens:,}", str(p.batch_size), _size(p.cache_bytes_per_sample), _size(p.weight_bytes),
                      e.mode,
                      format_seconds(e.seconds))  # fmt: skip
    console.print(table)
    # Under the table rather than its caption, which rich would wrap to the table's width, not the terminal's.
    say(console, f"codes: per take; saved: already in the run (a prompt or a resumed run); new: tokens to "
                 f"sample; expected time on {escape(device)}: {format_seconds(sum(e.seconds for e in estimates))} "
                 "(a probe of each prior's decode step; VQ-VAE decoding not counted)")  # fmt: skip


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def prepare_and_execute(
    device: str, prepare, *, quiet: bool, json_output: bool, announce=None, **execute
) -> None:
    """The commands' shared body: ``prepare(progress)`` makes the job (loading the model, a download shown),
    ``announce(job)`` is a line to say before the plan, then `_execute` checks, plans and runs the job.

    Ctrl-C or SIGTERM at any point ends with one line saying what is kept and how to go on, and exit 130 (143):
    left to Typer, Ctrl-C before sampling would exit 130 without a word, and SIGTERM would end it silently.
    """
    job, said = None, False
    try:
        with sigterm_interrupts():
            # Imported inside the try: torch's import is the first wait a user may cut short.
            from jukebox_cli.engine.ranks import joined

            with joined(device) as ranks:
                try:
                    with ranks.together(), RichProgress(enabled=not quiet and ranks.main) as progress:
                        job = prepare(progress)
                    if announce is not None and not quiet and not json_output and ranks.main:
                        say(Console(stderr=True, soft_wrap=True), escape(announce(job)))
                    _execute(job, ranks, quiet=quiet, json_output=json_output, **execute)
                except KeyboardInterrupt:  # the bars are down: their with blocks have closed them
                    # Said before the process group closes, which may wait for the other processes.
                    said = True
                    if ranks.main:
                        say(Console(stderr=True, soft_wrap=True), *_stopped(job))
                    raise
    except KeyboardInterrupt as stop:
        if not said and not other_rank():  # torch or the process group was still starting
            say(Console(stderr=True, soft_wrap=True), *_stopped(None))
        raise typer.Exit(EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED) from None


def _stopped(job) -> tuple[str, ...]:
    """What a stopped command leaves, and the command that goes on from there if any. Every window's codes
    were written atomically when it finished, so a run
    folder needs nothing saved and resumes from its last finished window; before the folder exists, this
    command has written nothing (a download left part-way resumes by itself)."""
    if job is not None:
        # Not before a job exists: Ctrl-C may have cut torch's import short, and importing it again could fail.
        from jukebox_cli.engine.sampling.runs import is_run_dir

        if is_run_dir(job.output):
            return (
                f"stopped: {escape(str(job.output))} is saved up to its last finished window; resume with:",
                f"jukebox generate --resume -o {shlex.quote(str(job.output))}",
            )
    return ("stopped before sampling; nothing was written",)


def _execute(job, ranks, *, force: bool, dry_run: bool, quiet: bool, json_output: bool, alignment: bool = True,
             compile: str = "auto", audio_format=None, bit_depth=None) -> None:  # fmt: skip
    """Shared tail of the commands: show the warnings and the plan, run the job, report what it wrote.

    ``ranks`` (``engine.ranks``): under torchrun, rank 0 alone checks the folder and says anything; the
    others only sample.
    """
    console = Console(stderr=True, soft_wrap=True)
    if not ranks.main:
        quiet, json_output = True, False
    for warning in job.warnings if not quiet else []:
        say(console, f"[yellow]warning:[/] {escape(warning)}")
    from jukebox_cli.engine.devices import device_description

    torch_device = ranks.device  # once, for the plan, its estimate and the run
    with ranks.together():
        job.check_processes(ranks)
        if ranks.main and not dry_run:  # a refusal comes before the plan's time probe, not after it
            job.check(force=force)
        if ranks.main:
            _show_plan(console, job, torch_device, device_description(torch_device), ranks.world, quiet=quiet,
                       json_output=json_output, dry_run=dry_run, compile=compile)  # fmt: skip
    if dry_run:
        return
    if not quiet and job.resumes:
        console.print(f"resuming {job.output} from its saved codes")

    def level_ready(event) -> str:
        return f"level {event.level} ready: {len(event.payload)} sample(s) in {job.output / f'level_{event.level}'}/"

    started = time.monotonic()
    with RichProgress(enabled=not quiet, on_level=level_ready) as progress:
        result = job.run(device=torch_device, progress=progress, force=force, alignment=alignment,
                         compile=compile, audio_format=audio_format and audio_format.value,
                         subtype=bit_depth and SUBTYPES[bit_depth], ranks=ranks)  # fmt: skip
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    if quiet:
        return
    out = Console(soft_wrap=True)
    top = job.bundle.top_level
    if result.alignments:
        out.print(f"lyric alignment: {len(result.alignments)} sample(s), item_N.alignment.png/.json in "
                  f"{job.output / f'level_{top}'}/", highlight=False)  # fmt: skip
    for warning in result.warnings:
        say(console, f"[yellow]warning:[/] {escape(warning)}")
    for note in job.notes:
        say(console, f"[yellow]note:[/] {escape(note)}")
    say(console, *_summary(result, job.request.levels, time.monotonic() - started))


def _show_plan(console: Console, job, torch_device, device_name: str, world: int, *, quiet: bool,
               json_output: bool, dry_run: bool, compile: str) -> None:  # fmt: skip
    """The plan table (or ``--dry-run --json``'s plan), with the download note and the tips."""
    from jukebox_cli.engine.devices import busy_cpu

    plans = job.plan(torch_device, world)
    show = not quiet and not json_output
    if show and job.download_note:
        say(console, f"[yellow]note:[/] {escape(job.download_note)}")
    estimates = (
        job.estimate(torch_device, compile, plans, world) if show or (dry_run and json_output) else None
    )
    if show:
        where = device_name if world == 1 else f"{device_name}, one of {world} processes sharing the takes"
        _print_plan(console, job, plans, estimates, where)
        busy = busy_cpu() if torch_device.type == "cpu" else None
        if busy is not None:
            say(console, f"[yellow]note:[/] the expected time is for idle cores, and other work keeps these busy "
                         f"(load average {busy[0]:.1f} on {busy[1]} cores): sampling shares them, so expect it to "
                         "take longer")  # fmt: skip
        for tip in job.tips(torch_device):
            say(console, f"[dim]tip: {escape(tip)}[/]")
    if dry_run and json_output:
        typer.echo(json.dumps({"plan": [p.__dict__ for p in plans],
                               "estimate": [{**e.__dict__, "seconds": e.seconds} for e in estimates]},
                              indent=2))  # fmt: skip


def _summary(result, levels: tuple[int, ...], seconds: float) -> tuple[str, ...]:
    """The closing line: how long it took and where the audio of the last level asked for is (then the command
    that upsamples, when levels are left)."""
    last = min(levels)
    final = [p for p in result.files if p.parent.name == f"level_{last}"]
    where = (
        str(final[0])
        if len(final) == 1
        else f"{final[0].parent}/ ({len(final)} takes)"
        if final
        else str(result.run)
    )
    line = f"done in {format_seconds(seconds)}: {'final' if last == 0 else f'level-{last}'} audio in {escape(where)}"
    if last > 0:
        return (
            f"{line}; upsample the takes you like with:",
            f"jukebox upsample {shlex.quote(str(result.run))} --takes N,...",
        )
    return (line,)
