"""Adapter files: LoRA weights for one prior of a base model, and merging them into that model at load.

An adapter file (``adapter.safetensors`` in a LoRA training run) holds ``lora_a``/``lora_b`` per adapted layer
in float32 and, in its metadata, the ``--model`` value of its base, the level, the rank, alpha, the targets
and the base prior's fingerprint (``models.lora.fingerprint``), so that a different base is refused instead
of giving noise.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jukebox_cli.engine.errors import CheckpointNotFound, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.files import atomic_write
from jukebox_cli.engine.models.lora import LoRAConfig, adapter_state, fingerprint, merge_state
from jukebox_cli.engine.models.prior import Prior
from jukebox_cli.engine.weights.bundle import Bundle
from jukebox_cli.engine.weights.resolve import ADAPTER_FILE, with_adapter_spec

FORMAT = "jukebox-lora/1"


@dataclass(frozen=True)
class Adapter:
    """One adapter file's tensors and what it was trained on."""

    path: Path
    tensors: dict[str, torch.Tensor]
    lora: LoRAConfig
    level: int
    base: str
    base_fingerprint: str

    def apply(self, prior: Prior) -> Prior:
        """Merge into ``prior`` (its level's base) in place.

        Raises:
            IncompatibleCheckpoint: another level, or a base whose fingerprint differs.
        """
        if prior.config.level != self.level:
            raise IncompatibleCheckpoint(
                f"Adapter {self.path} is for the level-{self.level} prior, not level {prior.config.level}."
            )
        found = fingerprint(prior)
        if found != self.base_fingerprint:
            raise IncompatibleCheckpoint(
                f"Adapter {self.path} was trained on another base (its level-{self.level} prior of "
                f"{self.base!r}, fingerprint {self.base_fingerprint[:12]}; this one is {found[:12]})."
            )
        return merge_state(prior, self.tensors, self.lora)


def save_adapter(
    model: Prior, path: str | Path, *, lora: LoRAConfig, base: str, base_fingerprint: str
) -> Path:
    """Write ``model``'s adapters (``models.lora.attach``) to ``path`` atomically, replacing an older file."""
    metadata = {
        "format": FORMAT,
        "base": base,
        "level": str(model.config.level),
        "rank": str(lora.rank),
        "alpha": json.dumps(lora.alpha),
        "targets": ",".join(lora.targets),
        "base_fingerprint": base_fingerprint,
    }
    tensors = adapter_state(model)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite=True)


def adapter_path(spec: str | Path) -> Path:
    """The adapter file ``spec`` names: the file itself, or ``adapter.safetensors`` in a run folder.

    Raises:
        CheckpointNotFound: neither exists.
    """
    path = Path(spec)
    if path.is_dir():
        path = path / ADAPTER_FILE
    if not path.is_file():
        raise CheckpointNotFound(
            f"No adapter at {spec} (an {ADAPTER_FILE} file or a LoRA training run folder)."
        )
    return path


def load_adapter(spec: str | Path) -> Adapter:
    """Read an adapter file or a LoRA run folder's adapter.

    Raises:
        CheckpointNotFound: no adapter there; IncompatibleCheckpoint: not an adapter file of this format.
    """
    path = adapter_path(spec).resolve()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise IncompatibleCheckpoint(f"{path} is not a safetensors file: {err}") from err
    if meta.get("format") != FORMAT:
        raise IncompatibleCheckpoint(f"{path} is not a LoRA adapter (format {meta.get('format')!r}).")
    try:
        lora = LoRAConfig(
            rank=int(meta["rank"]), alpha=json.loads(meta["alpha"]), targets=tuple(meta["targets"].split(","))
        )
        return Adapter(path, tensors, lora, int(meta["level"]), meta["base"], meta["base_fingerprint"])
    except (KeyError, ValueError, ConfigError) as err:
        raise IncompatibleCheckpoint(f"{path} has damaged adapter metadata ({err}).") from err


def with_adapters(bundle: Bundle, adapters: Sequence[str | Path | Adapter]) -> Bundle:
    """``bundle`` whose priors come with the adapters merged (one adapter per level at most).

    Raises:
        CheckpointNotFound, IncompatibleCheckpoint: see :func:`load_adapter`; a level the model lacks.
        ConfigError: two adapters for one level.
    """
    loaded = [a if isinstance(a, Adapter) else load_adapter(a) for a in adapters]
    if not loaded:
        return bundle
    by_level: dict[int, Adapter] = {}
    for adapter in loaded:
        if adapter.level in by_level:
            raise ConfigError(
                f"Two adapters for level {adapter.level}: {by_level[adapter.level].path}, {adapter.path}."
            )
        if adapter.level not in bundle.prior_configs:
            raise IncompatibleCheckpoint(
                f"Adapter {adapter.path} is for level {adapter.level}; {bundle.name} has none."
            )
        by_level[adapter.level] = adapter
    # Recorded by a run as its model, so that resuming it loads the adapters again.
    spec = with_adapter_spec(bundle.spec, [str(a.path) for a in loaded])
    if bundle.pending:
        fetch = bundle.fetch

        def fetched(**kwargs) -> Bundle:
            return with_adapters(fetch(**kwargs), loaded)

        return dataclasses.replace(bundle, fetch=fetched, source=spec)
    load = bundle.loader

    def merged(level: int, device: torch.device, linear_dtype: torch.dtype | None) -> Prior:
        prior = load(level, device, linear_dtype)
        return by_level[level].apply(prior) if level in by_level else prior

    # Resident priors would be merged again on every load: keep them loaded once per level.
    loader = merged if not bundle.resident else _once(merged)
    return dataclasses.replace(bundle, loader=loader, labellers={}, source=spec)


def _once(load):
    cache: dict[int, Prior] = {}

    def loader(level: int, device: torch.device, linear_dtype: torch.dtype | None) -> Prior:
        if level not in cache:
            cache[level] = load(level, device, linear_dtype)
        return cache[level].to(device)

    return loader
