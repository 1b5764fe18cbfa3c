"""How ``--help`` reads at 80 columns.

Typer's rich help gives every option a type column, ``<bool>`` for on/off flags too, where it only takes
room from the help text (and, at 80 columns, cuts option names short). A flag takes no value: its type
column stays empty.

Typer dedents the help after its first paragraph with ``inspect.cleandoc``, which measures the indentation
from the second line on: when that text is only "Examples:" and the examples under it, the examples lose the
indentation that makes them a code block, and become a paragraph that is reflowed (a long example wraps
without a ``\\``, and two lines joined by `` \\`` become one). Starting that text with an empty line keeps
every line's indentation in the measure.
"""

from __future__ import annotations

from typer import rich_utils
from typer.core import TyperOption

_typer_display_type = TyperOption.display_type_rich
_typer_fix_linebreaks = rich_utils._fix_linebreaks


def _display_type(self: TyperOption, ctx) -> str | None:
    return None if self.is_flag else _typer_display_type(self, ctx)


def _fix_linebreaks(paragraphs: list[str], markup_mode) -> str:
    return "\n" + _typer_fix_linebreaks(paragraphs, markup_mode)


def install() -> None:
    """Apply the changes to every command's help (idempotent)."""
    TyperOption.display_type_rich = _display_type
    rich_utils._fix_linebreaks = _fix_linebreaks
