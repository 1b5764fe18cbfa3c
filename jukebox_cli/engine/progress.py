"""Progress events: the engine emits them, the CLI renders them (see STYLE.md, section 5).

Long-running engine functions take ``progress: ProgressCallback = noop`` and call it with these plain events.
Stage names are hierarchical by convention (``"levels"``, ``"level 2 chunks"``); the renderer decides how to
show them. This module must not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageStarted:
    """A stage of ``total`` units began (``total`` is None when unknown). ``unit`` is for display."""

    name: str
    total: int | None = None
    unit: str = "it"


@dataclass(frozen=True)
class Advanced:
    """``n`` more units of stage ``name`` are done."""

    name: str
    n: int = 1


@dataclass(frozen=True)
class StageFinished:
    """Stage ``name`` is complete."""

    name: str


@dataclass(frozen=True)
class LevelDone:
    """Codes (or audio) of one VQ-VAE level are ready; ``payload`` is whatever the emitter documents."""

    level: int
    payload: Any = None


@dataclass(frozen=True)
class TrainMetrics:
    """Training reached ``step``; ``values`` are the latest scalars (``loss``, ``lr``, ``eval_*``, ...)."""

    step: int
    values: dict[str, float]


Event = StageStarted | Advanced | StageFinished | LevelDone | TrainMetrics
ProgressCallback = Callable[[Event], None]


def noop(event: Event) -> None:
    """The default callback: ignore every event."""
