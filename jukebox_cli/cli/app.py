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
from jukebox_cli.cli import _help, analyze, generate, labels, models, reconstruct, runs, studio, train
from jukebox_cli.cli._errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    lookup,
    one_line,
    other_rank,
)
from jukebox_cli.cli._options import INVOCATION
from jukebox_cli.cli._say import say
from jukebox_cli.engine.errors import JukeboxError

_help.install()

app = typer.Typer(
    name="jukebox",
    help="Generate, continue and analyse music with OpenAI's Jukebox models, re-implemented in PyTorch.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
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


# Extra arguments reach the command, which accepts one only as the old `--resume RUN` (see generate.py).
app.command("generate", context_settings={"allow_extra_args": True})(generate.generate)
app.command("continue")(generate.continue_)
app.command("upsample")(generate.upsample)
app.command("runs")(runs.runs)
app.command("reconstruct")(reconstruct.reconstruct)
app.command("analyze")(analyze.analyze)
app.command("labels")(labels.labels)
app.command("studio")(studio.studio)
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")


def _take_debug(args: list[str]) -> tuple[list[str], bool]:
    """``args`` without ``--debug`` (accepted before or after the command, up to a ``--``), and whether it was there.

    The root callback declares ``--debug`` for ``--help``; taking it out here is what lets it follow a
    subcommand too, where Typer would answer "No such option".
    """
    end = args.index("--") if "--" in args else len(args)
    kept = [a for a in args[:end] if a != "--debug"] + args[end:]
    return kept, len(kept) != len(args)


def _print_error(message: str, hint: str = "") -> None:
    """One red line (the message, whitespace folded), then a dim hint line when there is one."""
    if other_rank():
        return
    console = Console(stderr=True, soft_wrap=True)
    say(console, f"[bold red]error:[/] {escape(' '.join(message.split()))}")
    if hint:
        say(console, f"[dim]{escape(hint)}[/]")


# Typer re-exports click's BadParameter but, in recent versions, raises from its own copy of click: the base
# classes are found through it so that either kind is caught.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_message(error) -> str:
    """Click's message with the command it concerns, e.g. "jukebox generate: Invalid value for '--top-p': ..."."""
    # Typer validates through pydantic, whose "Value error, " prefix says nothing to a user.
    message = error.format_message().replace(": Value error, ", ": ").rstrip(".") + "."
    return f"{error.ctx.command_path}: {message}" if error.ctx is not None else message


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map engine errors to one red line, a hint and an exit code (see ``_errors.py``).

    Click runs in non-standalone mode so that its usage errors come here too and print as one line instead of
    Typer's usage box.
    """
    args, debug = _take_debug(sys.argv[1:] if argv is None else list(argv))
    INVOCATION[:] = args
    debug = debug or os.environ.get("JUKEBOX_DEBUG", "") not in ("", "0")
    try:
        result = app(args=args, prog_name="jukebox", standalone_mode=False)
    except KeyboardInterrupt:  # raised outside a command (commands get 130 from Typer itself)
        sys.exit(EXIT_INTERRUPTED)
    except _USAGE_ERROR as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            sys.exit(EXIT_USAGE)  # the help was printed when the error was made
        _print_error(_usage_message(error))  # one line: it names the command, whose --help is one step away
        sys.exit(EXIT_USAGE)
    except typer.Abort:  # end of input at a prompt
        _print_error("aborted.")
        sys.exit(EXIT_UNEXPECTED)
    except _CLICK_ERROR as error:
        _print_error(error.format_message())
        sys.exit(error.exit_code)
    except Exception as error:
        if debug:
            raise
        code, hint = lookup(error)
        if not isinstance(error, JukeboxError):  # a bug: the traceback is what a report needs
            hint = "Re-run with --debug for the traceback."
        _print_error(one_line(error), hint)
        sys.exit(code)
    # Non-standalone click returns what ends the command: None, or the code of a typer.Exit.
    sys.exit(result if isinstance(result, int) else EXIT_OK)
