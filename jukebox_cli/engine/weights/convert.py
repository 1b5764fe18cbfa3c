"""Convert released checkpoints (hub shards, original ``.pth.tar`` files) into native part files, once.

A conversion renames keys (``checkpoints/keymaps.py``), checks every key and shape against the part's architecture, casts each
tensor to its stored dtype, and writes one safetensors file. Tensors are moved out of the source dict as
they are converted, so a source read fully into memory (legacy ``.pth.tar``) and its converted copy are never
both held whole: the peak stays about one copy of the part.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import MutableMapping
from pathlib import Path

import torch
from torch import nn

from jukebox_cli import __version__
from jukebox_cli.engine.checkpoints.layouts import TIED_OUTPUT_KEY, is_tied, load_torch_file, source_key_plan
from jukebox_cli.engine.checkpoints.native import native_metadata, write_native
from jukebox_cli.engine.dtypes import dtype_name, parse_dtype
from jukebox_cli.engine.errors import ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models.builders import build_prior, build_vqvae
from jukebox_cli.engine.models.transformer import linear_weight_keys
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.weights.cache import ModelCache, sha256_file
from jukebox_cli.engine.weights.registry import Part


def skeleton(part: Part) -> nn.Module:
    """The part's architecture on the meta device (keys, shapes, dtypes; no memory)."""
    if part.kind == "vqvae":
        return build_vqvae(part.preset, device="meta")
    return build_prior(part.preset, device="meta")


def stored_dtype(name: str | None) -> torch.dtype | None:
    """``None``/``"auto"`` keeps each tensor's dtype from the architecture; else fp32, fp16 or bf16.

    Raises:
        ConfigError: another name.
    """
    if name in (None, "auto"):
        return None
    try:
        return parse_dtype(name)
    except ConfigError:
        raise ConfigError(f"Unknown storage dtype {name!r}; use auto, fp32, fp16 or bf16.") from None


def native_size(part: Part, dtype: torch.dtype | None = None) -> int:
    """Bytes of the part's converted file (tensor data; the header is negligible).

    For ``dtype=None`` this assumes the released precision (Conv1D weights in float16).
    """
    model = skeleton(part)
    state = model.state_dict()
    if is_tied(model):
        state.pop(TIED_OUTPUT_KEY)
    linear = linear_weight_keys(model) if dtype is None else set()
    return sum(
        t.numel() * (2 if k in linear else _target(t, dtype, part).itemsize) for k, t in state.items()
    )  # fmt: skip


def _target(tensor: torch.Tensor, dtype: torch.dtype | None, part: Part) -> torch.dtype:
    # The VQ-VAE is 7.5 MB: it stays float32 whatever is asked, and so do integer buffers.
    if dtype is None or part.kind == "vqvae" or not tensor.is_floating_point():
        return tensor.dtype
    return dtype


def _stored(source: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None, part: Part, linear: bool):
    """The tensor as written: ``dtype`` if asked; else Conv1D weights in float16 when that loses nothing.

    OpenAI trained and saved the priors' Conv1D weights in float16; the hub's float32 copies of
    them round-trip exactly, so keeping them at half size is lossless. Anything that would change is kept.
    """
    if dtype is None and linear and source.dtype in (torch.float16, torch.float32):
        half = source.to(torch.float16)
        if source.dtype == torch.float16 or torch.equal(half.to(source.dtype), source):
            return half
    return source.to(_target(like, dtype, part))


def convert_part(
    cache: ModelCache,
    part: Part,
    state: MutableMapping,
    layout: str,
    *,
    source: dict,
    dtype: torch.dtype | None = None,
    progress: ProgressCallback = noop,
    record_id: str | None = None,
) -> dict:
    """Write ``part`` from a loaded checkpoint into the cache, with its record; returns the record.

    Args:
        cache: the cache to write into (caller holds the part's lock).
        part: which part to take out of ``state``.
        state: the loaded checkpoint; this part's tensors are removed from it as they are converted.
        layout: ``"original"`` or ``"hub"``.
        source: provenance for the record (kind, repo/url, revision, file hashes).
        dtype: stored dtype of the prior's floating tensors (None: as released, see ``_stored``).
        progress: a ``convert <part>`` stage counted in tensors.
        record_id: the name of the file and record in the cache (default: the part's id).

    Raises:
        IncompatibleCheckpoint: the checkpoint's keys or shapes do not match the part (the message lists them).
    """
    model = skeleton(part)
    expected = model.state_dict()
    state, plan = source_key_plan(model, state, layout)
    tied = is_tied(model)
    linear = linear_weight_keys(model)
    stage = f"convert {part.id}"
    progress(StageStarted(stage, len(expected), "tensor"))
    tensors: dict[str, torch.Tensor] = {}
    for key, like in expected.items():
        if tied and key == TIED_OUTPUT_KEY:
            progress(Advanced(stage))
            continue  # stored once; loading ties it again
        tensor = state.pop(plan[key])
        tensors[key] = _stored(tensor, like, dtype, part, key in linear).contiguous()
        progress(Advanced(stage))
    for key in (TIED_OUTPUT_KEY,) if tied else ():
        state.pop(plan[key], None)
    record_id = record_id or part.id
    path = write_native(cache.part_file(record_id), tensors, native_metadata(part.kind, model.config))
    del tensors
    progress(StageFinished(stage))
    progress(StageStarted(f"hash {part.id}", None, "file"))
    record = {
        "part": part.id,
        "kind": part.kind,
        "level": part.level,
        "preset": part.preset,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "dtype": "auto" if dtype is None else dtype_name(dtype),
        "source": source,
        "converted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "converted_by": f"jukebox-cli {__version__}",
    }
    progress(StageFinished(f"hash {part.id}"))
    cache.write_record(record_id, record)
    return record


class ShardedState(MutableMapping):
    """Several state-dict shards seen as one dict (hub bundles split one state dict over files)."""

    def __init__(self, shards: list[MutableMapping]) -> None:
        self._shards = shards

    def _find(self, key: str) -> MutableMapping:
        for shard in self._shards:
            if key in shard:
                return shard
        raise KeyError(key)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._find(key)[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self._shards[-1][key] = value

    def __delitem__(self, key: str) -> None:
        del self._find(key)[key]

    def __iter__(self):
        for shard in self._shards:
            yield from shard

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)


def load_source(path: Path) -> MutableMapping:
    """Read a ``.bin``/``.pth.tar`` source with ``weights_only`` (memory-mapped when the format allows)."""
    state = load_torch_file(path)
    if not isinstance(state, MutableMapping):
        raise IncompatibleCheckpoint(f"{path} does not contain a state dict.")
    return state
