"""What every frozen config dataclass shares: a JSON-friendly dict form, strict on the way back."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from jukebox_cli.engine.errors import ConfigError

C = TypeVar("C", bound="DictConfig")


class DictConfig:
    """Mixin for ``@dataclass(frozen=True)`` configs stored in checkpoints (``config_name`` names it in errors)."""

    config_name = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build from ``to_dict()`` output; unknown keys are an error (a checkpoint from another version)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown {cls.config_name} keys: {', '.join(unknown)}.")
        return cls(**values)
