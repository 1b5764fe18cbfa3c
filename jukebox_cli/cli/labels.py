"""``jukebox labels``: list or search the artist and genre names a model's top prior knows.

Engine imports sit inside the command functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jukebox_cli.cli._options import Json, Model


def _visible(name: str) -> str:
    """The name with invisible format characters (U+200E, U+200F, ...) spelled out, and "" shown as ``""``."""
    if not name:
        return '""'
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c for c in name)


def labels(
    *,
    artists: Annotated[bool, typer.Option("--artists", help="List artist names.")] = False,
    genres: Annotated[bool, typer.Option("--genres", help="List genre names (v2: genre words).")] = False,
    search: Annotated[
        str | None,
        typer.Option("--search", "-s", help="Only names containing this text (case and accents ignored)."),
    ] = None,
    model: Model = "demo",
    limit: Annotated[int, typer.Option(min=0, help="Show at most this many names (0: all).")] = 50,
    json_output: Json = False,
) -> None:
    """List the artists or genres a model was trained with, and their ids (those of its top prior; the
    released upsamplers always use v2).

    Use it to find the spelling a model knows: v3 names must match exactly (any case); v2 names are
    normalised first ("Blues Rock" -> the words blues, rock).

    Examples:

        jukebox labels --artists --search jackson

        jukebox labels --genres --model 5b_lyrics --limit 0

        jukebox labels --genres -s "hip hop" --json
    """
    from jukebox_cli.engine.errors import ConfigError
    from jukebox_cli.engine.models.labels import search_labels
    from jukebox_cli.engine.weights.resolve import label_tables

    if artists == genres:
        raise ConfigError("pass exactly one of --artists and --genres.")
    kind = "artists" if artists else "genres"
    version, label_set = label_tables(model)
    found = search_labels(label_set, kind, search)
    shown = found if limit == 0 else found[:limit]

    if json_output:
        data = {
            "model": model,
            "label_set": version,
            "kind": kind,
            "search": search,
            "total": len(found),
            "items": [{"name": name, "id": index} for name, index in shown],
        }
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return

    console = Console(soft_wrap=True)
    what = f"{kind} of {model} ({version} ids)"
    if not found:
        console.print(f"no {what} match {search!r}.", highlight=False)
        return
    table = Table(title=what)
    table.add_column("name")
    table.add_column("id", justify="right")
    for name, index in shown:
        table.add_row(Text(_visible(name)), str(index))
    notes = []
    if len(shown) < len(found):
        notes.append(f"showing {len(shown)} of {len(found)}; use --search or --limit 0 for more")
    if version == "v2" and kind == "genres":
        notes.append("v2 genres are words: a genre is split into up to 5 of them")
    if model == "1b_lyrics":
        notes.append("its upsamplers use the v2 ids (see --model 5b)")
    if notes:
        table.caption = "; ".join(notes)
    console.print(table)
