"""``jukebox runs``: the run folders under a folder, or one run's settings, levels and audio.

The listing is the engine's (``engine.sampling.listing``); this file renders it. Engine imports sit inside the
command function (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jukebox_cli.cli._options import Json

# Settings the single-run view leaves out of its table: shown elsewhere in it, or long.
_SHOWN_ELSEWHERE = ("model", "samples", "levels", "sample_length", "prompt")


_DEFAULT = Path("runs")


def runs(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER",
            help="A folder of runs (searched two levels down), or one run folder. Default: runs/.",
        ),
    ] = _DEFAULT,
    *,
    json_output: Json = False,
) -> None:
    """List the run folders under FOLDER (model, takes, length, levels done, state), or show one run.

    Unreadable folders and other programs' files are skipped with a note.

    Examples:

        jukebox runs

        jukebox runs runs/rock
    """
    from jukebox_cli.engine.sampling.listing import describe_run, find_runs
    from jukebox_cli.engine.sampling.runs import is_run_dir

    if is_run_dir(folder):
        summary = describe_run(folder)
        if json_output:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            _print_run(summary)
        return
    if folder == _DEFAULT and not folder.exists():  # a first look, before any run: not an error
        if json_output:
            typer.echo(json.dumps({"runs": [], "skipped": []}, indent=2))
        else:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                "no runs yet: runs/ does not exist here (`jukebox generate -o runs/NAME` makes one), or name "
                "a folder: jukebox runs FOLDER"
            )
        return
    found, skipped = find_runs(folder)
    if json_output:
        data = {"runs": [r.to_dict() for r in found], "skipped": [s.__dict__ for s in skipped]}
        typer.echo(json.dumps(data, indent=2))
        return
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    for skip in skipped:
        err.print(f"[yellow]note:[/] skipped {escape(skip.path)}: {escape(skip.reason)}")
    if not found:
        err.print(f"no runs in {escape(str(folder))}")
        return
    rows = [
        (
            _relative(run.path, folder),
            run.model,
            str(run.samples),
            _seconds(run.seconds),
            f"{len(run.levels_done)}/{len(run.levels_asked)}",
            run.status,
            run.created.replace("T", " ").removesuffix("+00:00"),
        )
        for run in found
    ]
    console = Console(soft_wrap=True)
    # No frame, as for the plan: the room goes to the folder names.
    table = Table(title=f"Runs in {escape(str(folder))}", box=None, pad_edge=False, collapse_padding=True)
    for index, column in enumerate(_COLUMNS):
        # Nothing is cut with an ellipsis: a folder is what the next command needs, and a cut state or model
        # would hide which it is. Long values wrap instead; the folder column's width is fixed, so the others
        # wrap first (rich would narrow the widest column, the folder, first).
        table.add_column(
            column,
            justify="right" if column in ("samples", "duration", "levels") else "left",
            overflow="fold",
            width=_folder_width(rows, console.width) if index == 0 else None,
        )
    for row in rows:
        table.add_row(*map(escape, row))
    console.print(table)


_COLUMNS = ("folder", "model", "samples", "duration", "levels", "state", "created")


def _folder_width(rows: list[tuple[str, ...]], width: int) -> int:
    """The longest folder name, or what the other columns leave of ``width`` once wrapped to their longest
    words (a longer name wraps)."""
    longest = max(cell_len(row[0]) for row in rows)
    others = sum(
        max(cell_len(word) for text in (column, *(row[i] for row in rows)) for word in text.split())
        for i, column in enumerate(_COLUMNS)
        if i > 0
    )
    gaps = len(_COLUMNS)  # a space after every column (rich keeps the last one)
    return max(min(longest, width - others - gaps), min(longest, 12))


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder)) or "."
    except ValueError:
        return path


def _seconds(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def _print_run(run) -> None:
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"[bold]{escape(run.path)}[/]: {escape(run.status)}")
    if run.state == "resumable":
        out.print(f"resume with: jukebox generate --resume -o {escape(shlex.quote(run.path))}")
    out.print(f"model {escape(run.model)}, {run.samples} take(s) of {_seconds(run.seconds)}, levels "
              f"{','.join(map(str, run.levels_asked))} asked, {','.join(map(str, run.levels_done)) or 'none'} done; "
              f"audio {run.audio['format']} {run.audio['subtype']}")  # fmt: skip
    out.print(f"created {run.created} by jukebox-cli {escape(run.tool_version)}")
    if run.prompt:
        out.print(f"prompt: {escape(json.dumps(run.prompt))}")
    takes = [
        f"{s['artist']} / {s['genre']}" + (" / lyrics" if s.get("lyrics") else "")
        for s in run.settings["samples"]
    ]
    out.print("takes: " + escape("; ".join(f"{i}: {t}" for i, t in enumerate(takes))))
    settings = Table(title="settings", show_header=False)
    settings.add_column("setting")
    settings.add_column("value")
    for key, value in run.settings.items():
        if key == "total_length" and run.song_seconds is not None:  # in samples: a number nobody reads
            settings.add_row(key, _seconds(run.song_seconds))
        elif key not in _SHOWN_ELSEWHERE:
            settings.add_row(key, escape(json.dumps(value)))
    out.print(settings)
    levels = Table(title="levels")
    for column in ("level", "sampled", "codes/take", "windows", "finished", "audio"):
        levels.add_column(column, justify="left" if column == "audio" else "right")
    for level in run.levels:
        audio = (
            f"{len(level.audio)}/{run.samples} in {Path(level.audio[0]).parent}/"
            if level.audio
            else "none yet"
        )
        levels.add_row(str(level.level), "yes" if level.asked else "given", f"{level.codes:,}",
                       _windows(level), "yes" if level.finished else "no", escape(audio))  # fmt: skip
    out.print(levels)


def _windows(level) -> str:
    """``3/12``: windows done of the level's whole plan (``3`` alone where the plan is unknown)."""
    return (
        f"{level.windows_done}/{level.windows_total}"
        if level.windows_total is not None
        else str(level.windows_done)
    )
