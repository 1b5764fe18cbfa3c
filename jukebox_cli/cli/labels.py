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


def _shown(name: str) -> str:
    """The name as it looks, its invisible marks left out (the note column says they are there)."""
    return "".join(c for c in name if unicodedata.category(c) != "Cf") or '""'


def _mark_note(label_set, kind: str, name: str, index: int) -> str:
    """Says that a name holds invisible marks, which id its plain spelling gives, and how to type this one."""
    from jukebox_cli.engine.models.labels import hidden_marks, typed_id  # lazy: rendering only

    marks = hidden_marks(name)
    if not marks:
        return ""
    typed = typed_id(label_set, kind, name)
    gives = f"typed as it looks it gives id {typed}" if typed not in (None, index) else ""
    escaped = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c for c in name)
    how = f"for id {index} type $'{escaped}' (bash)"
    return f"has invisible {', '.join(marks)}; " + "; ".join(filter(None, (gives, how)))


def _json_item(label_set, kind: str, name: str, index: int) -> dict:
    """A listed name for scripts: the exact name, and for a marked one its marks and its plain spelling's id."""
    from jukebox_cli.engine.models.labels import hidden_marks, typed_id  # lazy: rendering only

    item = {"name": name, "id": index}
    if hidden_marks(name):
        item.update(hidden_marks=hidden_marks(name), typed_id=typed_id(label_set, kind, name))
    return item


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
            "items": [_json_item(label_set, kind, name, index) for name, index in shown],
        }
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return

    console = Console(soft_wrap=True)
    what = f"{kind} of {model} ({version} ids)"
    if not found:
        console.print(f"no {what} match {search!r}.", highlight=False)
        return
    table = Table(title=what)
    notes = {name: _mark_note(label_set, kind, name, index) for name, index in shown}
    table.add_column("name")
    table.add_column("id", justify="right")
    if any(notes.values()):
        table.add_column("note")
    for name, index in shown:
        table.add_row(Text(_shown(name)), str(index), *([Text(notes[name])] if any(notes.values()) else []))
    captions = []
    if len(shown) < len(found):
        captions.append(f"showing {len(shown)} of {len(found)}; use --search or --limit 0 for more")
    if version == "v2" and kind == "genres":
        captions.append("v2 genres are words: a genre is split into up to 5 of them")
    if model == "1b_lyrics":
        captions.append("its upsamplers use the v2 ids (see --model 5b)")
    if captions:
        table.caption = "; ".join(captions)
    console.print(table)
