"""The runs folder as a sandbox: run names a front end may be sent, resolved to folders inside it and no other.

A web page names runs by what a user or a script sends it, so every name is checked before it becomes a
path: a name is one or two folder names below the runs folder (``takes``, ``album/take-3``; ``jukebox runs``
lists that deep), each of letters, digits, ``.``, ``_`` and ``-`` and not starting with a dot, so ``..``, an
absolute path, a backslash or the studio's own ``.studio`` folder are refused as names. A name that passes
is then resolved and must still lie inside the folder, with no symbolic link on the way, so a link planted
in the runs folder cannot lead out of it either.

Favourite takes live in the run, in ``favourites.json`` (``{"takes": [0, 3]}``), written atomically, so the
page, ``jukebox runs`` and a script all see the same choice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.files import write_json
from jukebox_cli.engine.sampling.listing import RunSummary, Skipped, describe_run, find_runs
from jukebox_cli.engine.sampling.runs import is_run_dir

#: The studio's own files (its queue, its caches) inside the runs folder; hidden from listings by its dot.
STUDIO_DIR = ".studio"
FAVOURITES_FILE = "favourites.json"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MAX_PARTS = 2  # runs/NAME and runs/GROUP/NAME, as deep as `jukebox runs` looks


class Workspace:
    """A runs folder, and the only paths a front end may reach in it.

    Args:
        root: the runs folder (created if missing).

    Raises:
        ConfigError: ``root`` exists and is not a folder.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"The runs folder {root} is a file, not a folder.")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()  # a root that is itself a link is the user's choice, followed once here

    @property
    def studio_dir(self) -> Path:
        """``<root>/.studio``, for the studio's queue and caches."""
        return self.root / STUDIO_DIR

    # -- names ---------------------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """The folder a run name stands for (it need not exist yet).

        Raises:
            ConfigError: a name that is not one or two plain folder names, or that leads outside the runs
                folder (through a symbolic link).
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("Choose a run: its name is empty.")
        parts = name.strip().split("/")
        if len(parts) > _MAX_PARTS or not all(_PART.fullmatch(part) for part in parts):
            raise ConfigError(
                f"{name!r} is not a run name: a run is a folder in the runs folder, named with letters, digits, "
                "'.', '_' and '-' (a group folder and a run, like album/take-3, at most)."
            )
        path = self.root.joinpath(*parts)
        for step in [self.root.joinpath(*parts[: i + 1]) for i in range(len(parts))]:
            if step.is_symlink():
                raise ConfigError(f"{name!r} is a link; the studio reads and writes only inside {self.root}.")
        if not path.resolve().is_relative_to(self.root):
            raise ConfigError(f"{name!r} leads outside the runs folder {self.root}.")
        return path

    def run(self, name: str) -> Path:
        """The folder of an existing run.

        Raises:
            ConfigError: a bad name (see :meth:`path`), or no run by that name.
        """
        path = self.path(name)
        if not is_run_dir(path):
            raise ConfigError(f"There is no run named {name!r} in {self.root}.")
        return path

    def name_of(self, path: str | Path) -> str:
        """The name of a folder inside the runs folder (``album/take-3``)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def new_name(self, base: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
        """A name for a new run from ``base`` (slugged), with ``-2``, ``-3``, ... until no folder and nothing in
        ``taken`` (runs that queued jobs will write) has it."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._")[:80] or "run"
        name, n = slug, 1
        while name in taken or self.path(name).exists():
            n += 1
            name = f"{slug}-{n}"
        return name

    # -- contents ------------------------------------------------------------------------------------------

    def runs(self) -> tuple[list[RunSummary], list[Skipped]]:
        """Every run in the runs folder (``listing.find_runs``), oldest first, and what was skipped."""
        return find_runs(self.root)

    def describe(self, name: str) -> RunSummary:
        """One run's summary (``listing.describe_run``).

        Raises:
            ConfigError: a bad name, no such run, or a ``run.json`` that cannot be read.
        """
        return describe_run(self.run(name))

    def audio(self, name: str, level: int, take: int) -> Path:
        """The audio file of one take of one level, as the run lists it.

        Raises:
            ConfigError: no such run, level or take, or no audio for it yet.
        """
        summary = self.describe(name)
        status = next((s for s in summary.levels if s.level == level), None)
        wanted = f"item_{take}."
        found = [Path(f) for f in (status.audio if status else []) if Path(f).name.startswith(wanted)]
        if not found:
            raise ConfigError(f"{name} has no audio for take {take} at level {level} yet.")
        return self._inside(found[0], name)

    def _inside(self, path: Path, name: str) -> Path:
        if path.is_symlink() or not path.resolve().is_relative_to(self.root):
            raise ConfigError(f"{name}: {path.name} is a link; the studio reads only inside {self.root}.")
        return path

    # -- favourites ----------------------------------------------------------------------------------------

    def favourites(self, name: str) -> list[int]:
        """The run's favourite takes, ascending (none when it has no ``favourites.json``, or one that cannot be
        read: a lost choice is not worth refusing the run for)."""
        file = self.run(name) / FAVOURITES_FILE
        if file.is_symlink():  # never followed: it could point anywhere
            return []
        try:
            takes = json.loads(file.read_text(encoding="utf-8")).get("takes", [])
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return []
        return sorted({t for t in takes if isinstance(t, int) and not isinstance(t, bool) and t >= 0})

    def set_favourite(self, name: str, take: int, favourite: bool = True) -> list[int]:
        """Mark (or unmark) one take as a favourite; returns the run's favourites.

        Raises:
            ConfigError: no such run, or a take it does not have.
        """
        samples = self.describe(name).samples
        if isinstance(take, bool) or not isinstance(take, int) or not 0 <= take < samples:
            raise ConfigError(f"{name} has takes 0..{samples - 1}; there is no take {take!r}.")
        chosen = set(self.favourites(name))
        chosen = chosen | {take} if favourite else chosen - {take}
        file = self._inside(self.run(name) / FAVOURITES_FILE, name)
        write_json(file, {"takes": sorted(chosen)}, overwrite=True)
        return sorted(chosen)
