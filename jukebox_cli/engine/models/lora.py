"""Low-rank adapters (LoRA, Hu et al. 2021) on a prior's attention and MLP projections.

A frozen projection ``x @ w + b`` (``Conv1D``, ``w`` stored [n_in, n_out]) gains ``scale * (x @ a) @ b`` with
``a`` [n_in, rank], ``b`` [rank, n_out] and ``scale = alpha / rank``. ``b`` starts at zero, so an adapted model
is the base model until its first update (section 4.1 of the paper). Merging folds the product into the base:
``w + scale * a @ b``, after which the model is an ordinary prior that every decode path runs unchanged.

A model given adapters by :func:`attach` has only the adapters in its ``state_dict`` (training checkpoints
then hold kilobytes to megabytes instead of the whole frozen base) and loads such a state strictly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from jukebox_cli.engine.configs import DictConfig
from jukebox_cli.engine.errors import ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models.transformer import MLP, Attention, Conv1D

TARGETS = ("attn", "mlp")
# The projections adapted per target: q/k/v (fused in c_attn; the cross-attention's k/v in c_enc_kv) and
# the output for attention, both layers for the MLP.
_PROJECTIONS = {Attention: ("attn", ("c_attn", "c_enc_kv", "c_proj")), MLP: ("mlp", ("c_fc", "c_proj"))}
ADAPTER_KEYS = ("lora_a", "lora_b")


@dataclass(frozen=True)
class LoRAConfig(DictConfig):
    """Adapter shape: ``rank``, ``alpha`` (default: the rank, so a scale of 1) and which projections."""

    config_name = "LoRA config"

    rank: int = 8
    alpha: float | None = None
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"--lora-rank must be a whole number of at least 1, got {self.rank!r}.")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"--lora-alpha must be positive, got {self.alpha!r}.")
        targets = tuple(self.targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets:
            raise ConfigError(
                f"--lora-targets takes {', '.join(TARGETS)} (comma-separated), got {targets!r}."
            )
        object.__setattr__(self, "targets", tuple(t for t in TARGETS if t in targets))

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank


class LoRAConv1D(nn.Module):
    """A frozen ``Conv1D`` plus a trainable low-rank update (``b`` zero: the base layer's output exactly)."""

    def __init__(
        self, base: Conv1D, rank: int, scale: float, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        n_in, n_out = base.w.shape
        self.base, self.scale = base, scale
        # a as nn.Linear initialises a [rank, n_in] weight (kaiming uniform, a=sqrt(5)): U(-1/sqrt(n_in), ..).
        bound = 1.0 / math.sqrt(n_in)
        a = (torch.rand(n_in, rank, generator=generator) * 2 - 1) * bound
        self.lora_a = nn.Parameter(a.to(base.w.device))
        self.lora_b = nn.Parameter(torch.zeros(rank, n_out, device=base.w.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x @ self.lora_a.to(x.dtype)) @ self.lora_b.to(x.dtype)  # (..., n_out)
        low = self.base.w.dtype
        if low != x.dtype:
            # A base stored in bf16 runs in bf16: Conv1D would cast its weight up, and autograd would keep that
            # float32 copy of every layer until the backward pass, undoing the saving.
            return self.base(x.to(low)).to(x.dtype) + update * self.scale
        return self.base(x) + update * self.scale

    def merged(self) -> Conv1D:
        """The base layer with ``scale * a @ b`` folded into its weight (in the weight's dtype)."""
        merge_into(self.base, self.lora_a.detach(), self.lora_b.detach(), self.scale)
        return self.base


def merge_into(conv: Conv1D, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
    """``conv.w += scale * a @ b``, the product taken in float32 and rounded once to the weight's dtype."""
    if a.shape[0] != conv.w.shape[0] or b.shape[1] != conv.w.shape[1] or a.shape[1] != b.shape[0]:
        raise IncompatibleCheckpoint(
            f"Adapter shapes {tuple(a.shape)} x {tuple(b.shape)} do not fit a {tuple(conv.w.shape)} weight."
        )
    with torch.no_grad():
        w = conv.w.float() + scale * (a.float().to(conv.w.device) @ b.float().to(conv.w.device))
        conv.w.copy_(w.to(conv.w.dtype))


def target_layers(model: nn.Module, targets: tuple[str, ...] = TARGETS) -> Iterator[tuple[str, Conv1D]]:
    """(name, layer) of every projection ``targets`` adapts, in module order."""
    for name, module in model.named_modules():
        for kind, (target, attrs) in _PROJECTIONS.items():
            if isinstance(module, kind) and target in targets:
                for attr in attrs:
                    layer = getattr(module, attr, None)
                    if isinstance(layer, (Conv1D, LoRAConv1D)):
                        yield f"{name}.{attr}" if name else attr, layer


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, child)


def _adapter_only_state(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state if k.startswith(prefix) and not k.endswith(ADAPTER_KEYS)]:
        del state[key]


def _frozen_keys_not_missing(module: nn.Module, incompatible) -> None:
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k.endswith(ADAPTER_KEYS)]


def attach(model: nn.Module, config: LoRAConfig, *, seed: int = 0) -> nn.Module:
    """Freeze ``model`` and wrap its target projections with adapters, in place; returns ``model``.

    Afterwards only the adapters require gradients, and ``state_dict``/``load_state_dict`` see only them.

    Raises:
        ConfigError: the model has no projection of the targets.
    """
    generator = torch.Generator().manual_seed(seed)
    model.requires_grad_(False)
    layers = [
        (name, layer) for name, layer in target_layers(model, config.targets) if isinstance(layer, Conv1D)
    ]
    if not layers:
        raise ConfigError(f"The model has no {'/'.join(config.targets)} projections to adapt.")
    for name, layer in layers:
        _set_child(model, name, LoRAConv1D(layer, config.rank, config.scale, generator))
    model._register_state_dict_hook(_adapter_only_state)
    model.register_load_state_dict_post_hook(_frozen_keys_not_missing)
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer.lora_a|lora_b: tensor}`` of every adapter in ``model`` (float32, on the CPU, contiguous)."""
    return {
        f"{name}.{key}": getattr(module, key).detach().float().cpu().contiguous()
        for name, module in model.named_modules()
        if isinstance(module, LoRAConv1D)
        for key in ADAPTER_KEYS
    }


def merge_state(model: nn.Module, state: dict[str, torch.Tensor], config: LoRAConfig) -> nn.Module:
    """Fold adapter tensors (``adapter_state`` of a model like this one) into ``model``'s weights, in place.

    Raises:
        IncompatibleCheckpoint: an adapter names a layer this model lacks, or its shape does not fit.
    """
    layers = dict(target_layers(model, config.targets))
    names = {key.rsplit(".", 1)[0] for key in state}
    missing = sorted(names - set(layers))
    if missing or not names:
        raise IncompatibleCheckpoint(f"The adapter's layers do not match this prior (e.g. {missing[:1]}).")
    for name in sorted(names):
        layer = layers[name]
        if isinstance(layer, LoRAConv1D):
            raise IncompatibleCheckpoint(f"Layer {name} still has a training adapter; merge it first.")
        merge_into(layer, state[f"{name}.lora_a"], state[f"{name}.lora_b"], config.scale)
    return model


def fingerprint(model: nn.Module) -> str:
    """A hash of the weights that identify a base prior, whatever dtype its projections are loaded in.

    Projections (``Conv1D``) are left out: the released priors store them in half precision and sampling may
    cast them again, while the embeddings, LayerNorms and convolutions keep float32 and differ between any
    two trained priors. Names and shapes are hashed too.
    """
    skip = {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if isinstance(module, (Conv1D, LoRAConv1D))
        for key in ("w", "b", "lora_a", "lora_b", "base.w", "base.b")
    }
    digest = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name, tensor in sorted(tensors.items()):
        if name in skip or not tensor.is_floating_point():
            continue
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def trainable_count(model: nn.Module, config: LoRAConfig) -> int:
    """Adapter parameters ``config`` would add to ``model`` (works on a meta-device skeleton)."""
    return sum(
        config.rank * (layer.w.shape[0] + layer.w.shape[1])
        for _, layer in target_layers(model, config.targets)
        if isinstance(layer, Conv1D)
    )
