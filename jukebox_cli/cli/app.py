"""The root ``jukebox`` command, ``--version``/``--debug``, and the single error boundary (``main``).

Nothing imported here may import torch: ``jukebox --help`` must start in a fraction of a second.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from jukebox_cli import __version__
from jukebox_cli.cli import analyze, generate, labels, models, reconstruct, train
from jukebox_cli.cli._errors import EXIT_INTERRUPTED, lookup
from jukebox_cli.engine.errors import JukeboxError

app = typer.Typer(
    name="jukebox",
    help="Generate, continue and analyse music with OpenAI's Jukebox models, re-implemented in PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"jukebox-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Jukebox on the command line: generate, continue and upsample music; reconstruct and analyse audio."""


app.command("generate")(generate.generate)
app.command("continue")(generate.continue_)
app.command("upsample")(generate.upsample)
app.command("reconstruct")(reconstruct.reconstruct)
app.command("analyze")(analyze.analyze)
app.command("labels")(labels.labels)
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map engine errors to one red line, a hint and an exit code (see ``_errors.py``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("JUKEBOX_DEBUG", "") not in ("", "0")
    try:
        app(args=args, prog_name="jukebox")
    except KeyboardInterrupt:  # raised outside a command (commands get 130 from Typer itself)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if debug:
            raise
        code, hint = lookup(error)
        if isinstance(error, JukeboxError):
            message = str(error)
        else:
            message = f"unexpected {type(error).__name__}: {error}"
        console = Console(stderr=True, soft_wrap=True)
        console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False)
        console.print(
            f"[dim]{escape(hint)} Re-run with --debug for the traceback.[/]".replace("[dim] ", "[dim]")
        )
        sys.exit(code)
