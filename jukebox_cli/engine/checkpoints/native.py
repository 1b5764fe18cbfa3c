"""The native file format: one safetensors file per model part, its config as JSON in the file's metadata.

Training writes these files, conversions of released checkpoints write the same, and the shipped ``demo``
model is made of them; ``folder.py`` names the files of a model folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from jukebox_cli.engine.checkpoints.layouts import (
    TIED_INPUT_KEY,
    TIED_OUTPUT_KEY,
    check_compatible,
    export_state_dict,
    finish_meta_load,
    is_tied,
    model_kind,
)
from jukebox_cli.engine.configs import DictConfig
from jukebox_cli.engine.errors import CheckpointError, IncompatibleCheckpoint
from jukebox_cli.engine.files import atomic_write
from jukebox_cli.engine.models.builders import build_model
from jukebox_cli.engine.models.prior import PriorConfig
from jukebox_cli.engine.models.transformer import linear_weight_keys
from jukebox_cli.engine.models.vqvae import VQVAEConfig

FORMAT_NAME = "jukebox-cli"
FORMAT_VERSION = 1
_CONFIGS: dict[str, type[DictConfig]] = {"vqvae": VQVAEConfig, "prior": PriorConfig}


def read_config(path: str | Path, kind: str) -> DictConfig:
    """The config stored in a native file of ``kind`` (``"vqvae"`` or ``"prior"``), read from its header only.

    Raises:
        CheckpointError: not a readable safetensors file.
        IncompatibleCheckpoint: not a jukebox-cli file of that kind.
    """
    metadata = read_native_metadata(Path(path))
    if metadata.get("format") != FORMAT_NAME or metadata.get("kind") != kind:
        raise IncompatibleCheckpoint(f"{path} is not a jukebox-cli {kind} file.")
    return _stored_config(path, metadata, kind)


def _stored_config(path: str | Path, metadata: dict[str, str], kind: str) -> DictConfig:
    """The config a native file carries in its metadata.

    Raises:
        IncompatibleCheckpoint: no config, or one that is not JSON or not this kind's fields.
    """
    try:
        values = json.loads(metadata["config"])
        if not isinstance(values, dict):
            raise TypeError(f"a JSON {type(values).__name__}, not an object")
        return _CONFIGS[kind].from_dict(values)
    except KeyError:
        raise IncompatibleCheckpoint(f"{path} has no 'config' metadata.") from None
    except (ValueError, TypeError) as err:  # JSONDecodeError and ConfigError are ValueErrors
        raise IncompatibleCheckpoint(f"{path} has unreadable 'config' metadata ({err}).") from err


def native_metadata(kind: str, config) -> dict[str, str]:
    """The safetensors metadata of a native file: format, version, kind and the config as JSON."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(config.to_dict()),
    }


def write_native(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (a temporary file beside it, then a rename)."""
    # files.atomic_write creates the file as open() does, so it gets the umask's permissions like every
    # other output (mkstemp's 0600, or a fixed 0644, would not).
    return atomic_write(
        path, lambda tmp: save_file(dict(tensors), str(tmp), metadata=metadata), overwrite=True
    )


def save_native(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as a self-describing safetensors file (config in the metadata), atomically."""
    tensors = {k: v.contiguous().cpu() for k, v in export_state_dict(model, "native").items()}
    return write_native(path, tensors, native_metadata(model_kind(model), model.config))


def load_native(
    path: str | Path,
    *,
    kind: str | None = None,
    device: str | torch.device = "cpu",
    linear_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a native file one tensor at a time, straight onto ``device`` (never two copies of a model).

    On the CPU, tensors whose stored dtype is the one wanted stay memory-mapped (copy-on-write): loading is
    fast and the pages are read from disk when first used; others are cast as they are read.

    Args:
        path: a ``.safetensors`` file written by :func:`save_native` or by a conversion.
        kind: ``"vqvae"`` or ``"prior"`` to insist on one.
        device: where the weights go (read from the memory-mapped file directly).
        linear_dtype: store the Transformer's Conv1D weights in this dtype (as the released 5B priors do
            with float16); None keeps each parameter's dtype from the config.

    Raises:
        CheckpointError: not a readable jukebox-cli file.
        IncompatibleCheckpoint: another kind, a newer format, or keys/shapes that do not match the config.
    """
    path = Path(path)
    metadata = read_native_metadata(path)
    if metadata.get("format") != FORMAT_NAME:
        raise IncompatibleCheckpoint(f"{path} is not a jukebox-cli model file (no format metadata).")
    if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
        raise IncompatibleCheckpoint(
            f"{path} was written by a newer jukebox-cli (format {metadata['format_version']}); upgrade to read it."
        )
    found = metadata.get("kind")
    if found not in ("vqvae", "prior") or (kind is not None and found != kind):
        names = {"vqvae": "VQ-VAE", "prior": "prior", None: "jukebox-cli model"}
        raise IncompatibleCheckpoint(f"{path} holds a {found or 'unknown'} model, not a {names[kind]}.")
    model = build_model(_stored_config(path, metadata, found), "meta")
    expected = model.state_dict()
    targets = {k: t.dtype for k, t in expected.items()}
    if linear_dtype is None and getattr(model.config, "fp16_params", False):
        linear_dtype = torch.float16  # as the released 5B priors are built (see models.builders.build_prior)
    if linear_dtype is not None:
        targets.update(dict.fromkeys(linear_weight_keys(model), linear_dtype))
    device = torch.device(device)
    tied = is_tied(model)
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        shapes = {k: _ShapeOnly(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        if tied and TIED_OUTPUT_KEY not in shapes and TIED_INPUT_KEY in shapes:
            shapes[TIED_OUTPUT_KEY] = shapes[TIED_INPUT_KEY]
        check_compatible(expected, shapes, f"Native file {path.name}")
        state = {}
        for key in expected:
            if tied and key == TIED_OUTPUT_KEY:
                continue
            state[key] = handle.get_tensor(key).to(device=device, dtype=targets[key])
    if tied:
        state[TIED_OUTPUT_KEY] = state[TIED_INPUT_KEY]
    model.load_state_dict(state, strict=True, assign=True)
    finish_meta_load(model, device)
    return model.eval()


class _ShapeOnly:
    """Stands in for a tensor where only ``.shape`` is read (shape checks before any data is loaded)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = torch.Size(shape)


def read_native_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none)."""

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err
