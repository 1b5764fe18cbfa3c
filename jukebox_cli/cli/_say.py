"""Our lines of prose, wrapped at word boundaries on a terminal, and commands kept whole.

The CLI's consoles are made with ``soft_wrap=True`` so that tables, paths and commands are never broken by
rich. A sentence of ours is the exception: on an 80-column terminal a 200-character line would be cut
mid-word, so there it is wrapped, and a command the user is to copy goes on a line of its own, unwrapped.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def wraps(console: Console) -> bool:
    """Whether prose is wrapped: on a terminal, which would cut it mid-word; in a pipe or a log each sentence
    stays one line, whole for grep."""
    return console.is_terminal


def say(console: Console, text: str, command: str | None = None) -> None:
    """Print ``text`` (rich markup), wrapped to ``console``'s width on a terminal, then ``command`` (plain), if
    any, whole on its own line."""
    console.print(text, soft_wrap=not wraps(console), highlight=False)
    if command is not None:
        console.print(escape(command), soft_wrap=True, highlight=False)
