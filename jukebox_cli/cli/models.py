"""``jukebox models``: list, download, inspect, verify and remove the released models in the cache.

Engine imports sit inside the command functions (lazy): ``jukebox --help`` must not import torch.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jukebox_cli.cli._options import CacheDir, Json, Quiet
from jukebox_cli.cli._progress import RichProgress

app = typer.Typer(
    name="models",
    help="The released Jukebox models: download them once, then use them with --model NAME.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="A released model: 1b_lyrics, 5b_lyrics or 5b.")]


class Source(str, Enum):
    hub = "hub"
    openai = "openai"


class StoreDtype(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


def _gb(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


@app.command("list")
def list_(*, cache_dir: CacheDir = None, json_output: Json = False) -> None:
    """The released models, their download size, and what the cache holds.

    Examples:

        jukebox models list

        jukebox models list --json
    """
    from jukebox_cli.engine.weights.cache import cache_root
    from jukebox_cli.engine.weights.released import list_models

    statuses = list_models(cache_dir=cache_dir)
    if json_output:
        _echo_json({"cache": str(cache_root(cache_dir)), "models": [s.to_dict() for s in statuses]})
        return
    table = Table(
        title=f"Released models (cache: {escape(str(cache_root(cache_dir)))})", title_justify="left"
    )
    for column in ("name", "parts", "download", "source", "in cache", "disk used"):
        table.add_column(column, justify="right" if column in ("download", "disk used") else "left")
    for s in statuses:
        table.add_row(s.entry.name, ", ".join(s.entry.parts), _gb(s.entry.hub_size or s.entry.original_size()),
                      s.entry.default_source, s.state, _gb(s.disk_used))  # fmt: skip
    Console(soft_wrap=True).print(table)
    Console(stderr=True).print(
        "[dim]Parts are shared: the VQ-VAE and both upsamplers download once for all models.[/]"
    )
    _print_bundled()


def _print_bundled() -> None:
    from jukebox_cli.engine.errors import CheckpointNotFound
    from jukebox_cli.engine.weights import shipped

    for name in shipped.SHIPPED_MODELS:
        try:
            folder = shipped.shipped_folder(name)
        except CheckpointNotFound:
            continue
        size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        card = escape(str(folder / "MODEL_CARD.md"))
        Console(stderr=True).print(
            f"[dim]Bundled, no download: {name} ({size / 1e6:.0f} MB); card: {card}[/]"
        )


@app.command()
def download(
    name: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A released model (1b_lyrics, 5b_lyrics, 5b) or a hub repo owner/name[@rev].",
        ),
    ],
    *,
    source: Annotated[
        Source | None, typer.Option(help="Where from: hub (Hugging Face) or openai (original files).")
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(help="Hub branch, tag or commit (default: main; kept apart from main's files)."),
    ] = None,
    dtype: Annotated[
        StoreDtype, typer.Option(help="How priors are stored: auto (as released), fp32, fp16 or bf16.")
    ] = StoreDtype.auto,
    keep_source: Annotated[
        bool, typer.Option(help="Keep the downloaded checkpoint files after converting them.")
    ] = False,
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Convert OpenAI's files from this folder instead of downloading them (laid out like their "
            "storage: 5b/vqvae.pth.tar, ...; e.g. ~/.cache/jukebox/models). The files are left in place.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Convert again parts already present.")
    ] = False,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
    json_output: Json = False,
) -> None:
    """Download a model and convert it for fast loading (interrupted downloads resume where they stopped).

    Examples:

        jukebox models download 1b_lyrics

        jukebox models download 5b --source openai --dtype bf16

        jukebox models download openai/jukebox-1b-lyrics --revision 1d1b2c3

        jukebox models download 5b_lyrics --from ~/.cache/jukebox/models
    """
    from jukebox_cli.engine.weights.loading import download as download_files

    with RichProgress(enabled=not quiet) as progress:
        done = download_files(
            name, revision=revision, cache_dir=cache_dir, source=source.value if source else None,
            dtype=dtype.value, keep_source=keep_source, force=force, local=from_, progress=progress,
        )  # fmt: skip
    if done.status is not None:
        data = done.status.to_dict()
        ready = f"{done.name} is ready ({_gb(done.status.disk_used)} in {len(done.status.parts)} parts)"
    else:
        data = {"name": done.name, "files": {part: str(path) for part, path in done.files.items()}}
        ready = f"{done.name} is ready ({len(done.files)} parts)"
    use = done.name
    if json_output:
        _echo_json(data)
    elif not quiet:
        Console(soft_wrap=True).print(
            f"{ready}; try: jukebox generate --model {use} --duration 10", highlight=False
        )


@app.command()
def info(
    name: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="demo, tiny-random, a released model (1b_lyrics, 5b_lyrics, 5b) or a model folder.",
        ),
    ],
    *,
    cache_dir: CacheDir = None,
    json_output: Json = False,
) -> None:
    """A model's parts: architecture, parameters, sizes, labels, and where its files and card are.

    Examples:

        jukebox models info demo

        jukebox models info 5b_lyrics

        jukebox models info runs/top --json
    """
    from jukebox_cli.engine.weights.describe import describe

    model = describe(name, cache_dir=cache_dir)
    if json_output:
        _echo_json(model.to_dict())
        return
    out = Console(soft_wrap=True)
    out.print(f"[bold]{escape(model.name)}[/]: {escape(model.description)}", highlight=False)
    lyrics = "with lyrics" if model.lyrics else "no lyrics"
    out.print(f"{model.parameters:,} parameters; labels {model.labels} ({model.artists} artist and "
              f"{model.genres} genre rows); {lyrics}"
              + ("" if model.pretrained else "; untrained random weights"), highlight=False)  # fmt: skip
    if model.sources:
        out.print(f"sources: {', '.join(model.sources)}"
                  + (f" (hub repo {model.hub_repo})" if model.hub_repo else ""), highlight=False)  # fmt: skip
    table = Table()
    for column in ("part", "level", "parameters", "size", "stored", "file"):
        table.add_column(column, justify="right" if column in ("parameters", "size") else "left")
    for p in model.parts:
        size = _gb(p.bytes) if p.present else "no file" if p.path is None else "not in cache"
        table.add_row(p.id, "-" if p.level is None else str(p.level), f"{p.parameters:,}", size,
                      ", ".join(p.dtypes) or "-", escape(Path(p.path).name if p.path else "-"))  # fmt: skip
    out.print(table)
    if model.folder:
        out.print(f"files in: {escape(model.folder)}", highlight=False)
    if model.card:
        out.print(f"model card: {escape(model.card)}", highlight=False)
    if model.license:
        out.print(f"[dim]{escape(model.license)}[/]")


@app.command()
def verify(
    name: Name, *, cache_dir: CacheDir = None, quiet: Quiet = False, json_output: Json = False
) -> None:
    """Re-hash a model's converted files; corrupt ones are deleted (download again to replace them).

    The shipped demo is checked against the hashes in its card (reinstall jukebox-cli to repair it).

    Examples:

        jukebox models verify 1b_lyrics

        jukebox models verify demo
    """
    from jukebox_cli.engine.weights.released import verify_model
    from jukebox_cli.engine.weights.shipped import SHIPPED_MODELS, verify_shipped

    if name in SHIPPED_MODELS:
        results = verify_shipped(name)
    else:
        with RichProgress(enabled=not quiet) as progress:
            results = verify_model(name, cache_dir=cache_dir, progress=progress)
    if json_output:
        _echo_json(results)
    elif not quiet:
        for part, result in results.items():
            Console(soft_wrap=True).print(f"{part}: {result}", highlight=False)
    if any(r == "missing" for r in results.values()):
        raise typer.Exit(3)
    if name in SHIPPED_MODELS and any(r != "ok" for r in results.values()):
        raise typer.Exit(3)  # as a checksum mismatch of a download


@app.command("rm")
def remove(
    name: Name,
    *,
    shared: Annotated[
        bool, typer.Option(help="Also remove parts other downloaded models share (VQ-VAE, upsamplers).")
    ] = False,
    cache_dir: CacheDir = None,
    json_output: Json = False,
) -> None:
    """Delete a model's files from the cache (shared parts stay while another model uses them).

    Examples:

        jukebox models rm 5b
    """
    from jukebox_cli.engine.weights.released import remove_model

    result = remove_model(name, cache_dir=cache_dir, shared=shared)
    if json_output:
        _echo_json(result)
        return
    out = Console(soft_wrap=True)
    out.print(
        f"removed {', '.join(result['removed']) or 'nothing'} ({_gb(result['bytes'])} freed)", highlight=False
    )
    if result["kept"]:
        out.print(f"kept {', '.join(result['kept'])}: used by another downloaded model (--shared removes them)",
                  highlight=False)  # fmt: skip


@app.command()
def path(name: Name, *, cache_dir: CacheDir = None, json_output: Json = False) -> None:
    """Print the files of a downloaded model, one per line (for scripts).

    Examples:

        jukebox models path 1b_lyrics
    """
    from jukebox_cli.engine.weights.released import part_files

    files = part_files(name, cache_dir=cache_dir)
    if json_output:
        _echo_json({part: str(p) for part, p in files.items()})
        return
    for p in files.values():
        typer.echo(str(p))
