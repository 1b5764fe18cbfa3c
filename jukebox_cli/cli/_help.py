"""How ``--help`` reads at 80 columns.

Typer's rich help gives every option a type column, ``<bool>`` for on/off flags too, where it only takes
room from the help text (and, at 80 columns, cuts option names short). A flag takes no value: its type
column stays empty.
"""

from __future__ import annotations

from typer.core import TyperOption

_typer_display_type = TyperOption.display_type_rich


def _display_type(self: TyperOption, ctx) -> str | None:
    return None if self.is_flag else _typer_display_type(self, ctx)


def install() -> None:
    """Apply the change to every command's help (idempotent)."""
    TyperOption.display_type_rich = _display_type
