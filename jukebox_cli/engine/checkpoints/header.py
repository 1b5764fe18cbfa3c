"""A safetensors file's metadata read from its header alone, without torch.

A safetensors file starts with the length of its JSON header (8 bytes, little-endian), then the header,
whose ``__metadata__`` holds string keys and values and whose other entries give each tensor's dtype and
shape. Commands that only need a stored config or a count of values (``jukebox labels`` and ``jukebox models
info`` on a model folder) read it here and stay quick to start.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from jukebox_cli.engine.errors import CheckpointError

_MAX_HEADER = 100_000_000  # the format's own limit on the header's size


def _read_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file.

    Raises:
        CheckpointError: not a readable safetensors file.
    """
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size <= _MAX_HEADER:
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("a header that is not an object")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err
    return header


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} when it has none).

    Raises:
        CheckpointError: not a readable safetensors file.
    """
    metadata = _read_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} is not a readable safetensors file (metadata that is not an object).")
    return metadata


def read_tensor_summary(path: str | Path) -> tuple[int, list[str]]:
    """(number of values stored, sorted dtype names) of a safetensors file, from its header alone.

    Raises:
        CheckpointError: not a readable safetensors file.
    """
    header = _read_header(path)
    count, dtypes = 0, set()
    try:
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count += math.prod(int(n) for n in entry["shape"])
            dtypes.add(str(entry["dtype"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (tensor entry: {err}).") from err
    return count, sorted(dtypes)


def read_config_values(path: str | Path) -> dict:
    """The JSON object stored as ``config`` in a jukebox-cli file's metadata.

    Raises:
        CheckpointError: no such object (not a jukebox-cli model file, or unreadable metadata).
    """
    try:
        values = json.loads(read_metadata(path)["config"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path} has no readable 'config' metadata ({err}).") from err
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} has a 'config' that is not a JSON object.")
    return values
