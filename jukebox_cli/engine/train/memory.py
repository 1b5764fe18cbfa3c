"""The memory plan of a training run: what one device will hold, computed before training starts.

Per device, in bytes (``P`` all parameters, ``P_t`` the trainable ones, ``P_f = P - P_t`` the frozen ones,
``n`` the world size, ``b`` the compute dtype's bytes: 2 for bf16/fp16, 4 for fp32):

- weights: ``4 P_t + bytes(frozen_dtype) P_f`` (float32 master weights; LoRA's frozen base in bf16), divided
  by ``n`` under fsdp. Plus the working copies: under fsdp the two largest blocks unsharded in the compute
  dtype (the one running and the one prefetched), ``2 b max_block``; under ddp or one process with bf16/fp16
  autocast, the cast copy of every weight not stored in that dtype, kept for the backward pass.
- gradients: ``4 P_t`` (``/ n`` under fsdp); ddp keeps a second copy in its all-reduce buckets (``+ 4 P_t``).
- optimizer: AdamW's two float32 moments, ``8 P_t`` (``/ n`` under fsdp).
- EMA: a float32 shadow, ``4 P_t`` (``/ n`` under fsdp; rank 0 holds it all under ddp).
- activations, per sample, for each Transformer layer over ``T`` positions of width ``w`` (attention width
  ``s``, MLP width ``h``, ``H`` heads, ``K`` keys per query for the layer's pattern: ``T`` dense, a block for
  row and previous-block layers, the number of blocks for column layers, the lyrics for prime and cross
  layers): ``T (6 w + 4 s + 2 h) b`` for the tensors the backward pass reads, plus
  ``H T K (12 + b)`` for the attention scores (masked scores and softmax in float32, probabilities in
  ``b``); plus ``12 T bins`` for the float32 logits, log-softmax and their gradient. With activation
  checkpointing a layer keeps only its input, ``T w b``, and one layer at a time is recomputed whole.
  Times the batch size.

The total is compared with 90 % of the device's memory (the rest: the CUDA context, the allocator's
fragmentation, the VQ-VAE that encodes each batch). The figures are estimates to decide with, not a promise.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from jukebox_cli.engine.errors import ConfigError, NotEnoughMemory
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.lora import LoRAConfig, trainable_count
from jukebox_cli.engine.models.prior import AutoregressiveCore, PriorConfig
from jukebox_cli.engine.models.transformer import CROSS, DENSE, PRIME, TRANSPOSE, Transformer

STRATEGIES = ("none", "ddp", "fsdp")
USABLE = 0.9
GIB = 1024**3
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
MAX_DEVICES = 4096


@dataclass(frozen=True)
class LayerShape:
    """One Transformer layer as the activation estimate sees it (see the module docstring)."""

    positions: int  # T
    width: int  # w
    n_state: int  # s
    hidden: int  # h
    heads: int  # H
    keys: int  # K


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know of a model: parameter counts and its layers' shapes (no weights)."""

    total_params: int
    trainable_params: int
    largest_block_params: int
    layers: tuple[LayerShape, ...]
    logits: int  # output positions x classes, per sample

    def with_trainable(self, trainable_params: int) -> ModelShape:
        """The same model with another trainable count (LoRA: the adapters, the base frozen)."""
        return replace(self, trainable_params=trainable_params)


def _dense(module: nn.Module) -> nn.Module:
    """The Conv1D itself, under a LoRA wrapper (``models.lora``) if there is one."""
    return getattr(module, "base", module)


def _keys(block: nn.Module, positions: int, encoder_positions: int) -> int:
    attn = block.attn
    f = attn.attn_func
    if f == DENSE:
        return positions
    if f == PRIME:
        return min(attn.prime_keys, positions)
    if f == CROSS:
        return encoder_positions
    if f == TRANSPOSE:
        return max(1, positions // attn.block_ctx)
    return attn.block_ctx  # row (BLOCK) and previous-block layers


def model_shape(model: nn.Module, *, encoder_positions: int = 0) -> ModelShape:
    """The shape of ``model`` (on any device, ``meta`` included); trainable: those that require a gradient.

    Args:
        model: a model holding :class:`Transformer` stacks (a prior); other modules count as parameters only.
        encoder_positions: keys of cross-attention layers (the lyric tokens of 5b_lyrics).

    Returns:
        Its parameter counts and layer shapes.
    """
    layers: list[LayerShape] = []
    largest = 0
    for module in model.modules():
        if not isinstance(module, Transformer):
            continue
        for block in module._attn_mods:
            largest = max(largest, sum(p.numel() for p in block.parameters()))
            attn = block.attn
            layers.append(LayerShape(
                positions=module.n_ctx, width=block.ln_0.normalized_shape[0], n_state=attn.n_state,
                hidden=_dense(block.mlp.c_fc).w.shape[1], heads=attn.heads,
                keys=_keys(block, module.n_ctx, encoder_positions),
            ))  # fmt: skip
    logits = sum(core.length * core.bins for core in model.modules()
                 if isinstance(core, AutoregressiveCore) and not core.only_encode)  # fmt: skip
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelShape(total, trainable, largest, tuple(layers), logits)


def prior_shape(config: PriorConfig | str) -> ModelShape:
    """The shape of a prior from its config or preset name, built on the ``meta`` device (no memory, no weights).

    Raises:
        ConfigError: unknown preset.
    """
    model = build_prior(config, "meta")
    return model_shape(model, encoder_positions=model.config.n_tokens)


def lora_params(model: nn.Module, rank: int) -> int:
    """Trainable parameters of rank-``rank`` adapters on the attention and MLP projections (``models.lora``'s
    default targets): ``rank (n_in + n_out)`` per ``[n_in, n_out]`` weight.

    Raises:
        ConfigError: a rank below 1.
    """
    if rank < 1:
        raise ConfigError(f"The LoRA rank must be at least 1 (got {rank}).")
    return trainable_count(model, LoRAConfig(rank=rank))


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device for one training setup; ``device_memory`` None: not checked."""

    strategy: str
    world: int
    precision: str
    checkpoint_activations: bool
    batch_size: int
    weights: int
    working_copies: int
    gradients: int
    optimizer: int
    ema: int
    activations: int
    device_memory: int | None
    total_params: int
    trainable_params: int
    frozen_dtype: str = "bf16"

    @property
    def total(self) -> int:
        return (
            self.weights + self.working_copies + self.gradients + self.optimizer + self.ema + self.activations
        )

    @property
    def usable(self) -> int | None:
        return None if self.device_memory is None else int(self.device_memory * USABLE)

    @property
    def fits(self) -> bool:
        return self.usable is None or self.total <= self.usable

    def rows(self) -> list[tuple[str, int]]:
        """(what, bytes) in the order they are printed."""
        return [
            ("weights", self.weights),
            ("working copies", self.working_copies),
            ("gradients", self.gradients),
            ("optimizer (AdamW)", self.optimizer),
            ("EMA", self.ema),
            ("activations", self.activations),
        ]


def _activations(shape: ModelShape, batch: int, b: int, checkpointed: bool) -> int:
    def full(layer: LayerShape) -> int:
        t = layer.positions
        return t * (
            6 * layer.width + 4 * layer.n_state + 2 * layer.hidden
        ) * b + layer.heads * t * layer.keys * (12 + b)

    if not shape.layers:
        per_sample = 0
    elif checkpointed:
        per_sample = sum(layer.positions * layer.width * b for layer in shape.layers) + max(
            full(layer) for layer in shape.layers
        )
    else:
        per_sample = sum(full(layer) for layer in shape.layers)
    return batch * (per_sample + 12 * shape.logits)


def plan_memory(
    shape: ModelShape,
    *,
    strategy: str,
    world: int = 1,
    precision: str = "fp32",
    checkpoint_activations: bool = False,
    batch_size: int = 1,
    ema: bool = True,
    trainable_params: int | None = None,
    frozen_dtype: str = "bf16",
    device_memory: int | None = None,
) -> MemoryPlan:
    """What one device holds while training ``shape`` (the module docstring has the formulas).

    Args:
        shape: the model (:func:`model_shape`, :func:`prior_shape`).
        strategy: ``none`` (one process), ``ddp`` or ``fsdp``.
        world: processes (devices).
        precision: ``fp32``, ``bf16`` or ``fp16`` (the compute dtype; master weights stay float32).
        checkpoint_activations: keep only each block's input, recompute the rest in the backward pass.
        batch_size: samples per device and micro step.
        ema: whether a float32 EMA of the trainable weights is kept.
        trainable_params: overrides ``shape.trainable_params`` (LoRA adapters); the rest is frozen.
        frozen_dtype: how frozen weights are stored (``bf16`` for a LoRA base).
        device_memory: bytes of one device, or None (not checked).

    Returns:
        The plan.

    Raises:
        ConfigError: an unknown strategy, precision or dtype, or a world size below 1.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {strategy!r}; choose {', '.join(STRATEGIES)}.")
    if precision not in _BYTES or frozen_dtype not in _BYTES:
        raise ConfigError(
            f"Unknown dtype {precision if precision not in _BYTES else frozen_dtype!r}; use fp32, bf16 or fp16."
        )
    if world < 1 or batch_size < 1:
        raise ConfigError(f"World size and batch size must be at least 1 (got {world} and {batch_size}).")
    trainable = shape.trainable_params if trainable_params is None else trainable_params
    frozen = shape.total_params - trainable
    b = _BYTES[precision]
    shards = world if strategy == "fsdp" else 1
    weights = math.ceil((4 * trainable + _BYTES[frozen_dtype] * frozen) / shards)
    if strategy == "fsdp":
        working = 2 * b * shape.largest_block_params
    else:
        # Autocast casts what is not already stored in the compute dtype (a bf16 LoRA base is used as it is).
        cast = trainable + (frozen if frozen_dtype != precision else 0)
        working = b * cast if precision != "fp32" else 0
    gradients = math.ceil(4 * trainable / shards) * (2 if strategy == "ddp" else 1)
    return MemoryPlan(
        strategy=strategy,
        world=world,
        precision=precision,
        checkpoint_activations=checkpoint_activations,
        batch_size=batch_size,
        weights=weights,
        working_copies=working,
        gradients=gradients,
        optimizer=math.ceil(8 * trainable / shards),
        ema=math.ceil(4 * trainable / shards) if ema else 0,
        activations=_activations(shape, batch_size, b, checkpoint_activations),
        device_memory=device_memory,
        total_params=shape.total_params,
        trainable_params=trainable,
        frozen_dtype=frozen_dtype,
    )


def choose_strategy(requested: str, world: int, fits_with_ddp: bool) -> str:
    """``auto``: one process runs undistributed; several use ddp when ddp's plan fits, else fsdp.

    Raises:
        ConfigError: an unknown strategy, or ddp/fsdp asked of a single process.
    """
    if requested not in ("auto", *STRATEGIES):
        raise ConfigError(f"Unknown strategy {requested!r}; choose auto, {', '.join(STRATEGIES)}.")
    if requested == "auto":
        return "none" if world == 1 else ("ddp" if fits_with_ddp else "fsdp")
    if world == 1 and requested != "none":
        raise ConfigError(
            f"--strategy {requested} needs several processes; launch with torchrun --nproc-per-node N."
        )
    if world > 1 and requested == "none":
        raise ConfigError("--strategy none is for one process; use ddp or fsdp under torchrun.")
    return requested


def gigabytes(n: float) -> str:
    """Bytes as binary gigabytes (the unit GPU memory is sold in), one decimal."""
    return f"{n / GIB:.1f} GB"


def parse_memory(text: str) -> int:
    """``24GB``, ``80 GiB``, ``512MB`` -> bytes (GB and GiB both binary, as GPU memory is counted).

    Raises:
        ConfigError: not a size.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)i?b?\s*", text, flags=re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"Cannot read the memory size {text!r}; write it like 24GB or 80GiB.")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def device_memory(device: torch.device) -> int | None:
    """The memory of ``device``: a CUDA GPU's total, the machine's RAM for the CPU, None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not POSIX
            return None
    return None


def _suggestions(shape: ModelShape, plan: MemoryPlan, options: dict) -> list[str]:
    def fits(**changes) -> bool:
        return plan_memory(shape, **{**options, **changes}).fits

    found: list[str] = []
    if plan.strategy == "ddp" and fits(strategy="fsdp"):
        found.append("--strategy fsdp")
    if not plan.checkpoint_activations and fits(checkpoint_activations=True):
        found.append("--checkpoint-acts")
    if (
        plan.strategy == "ddp"
        and not plan.checkpoint_activations
        and not found
        and fits(strategy="fsdp", checkpoint_activations=True)
    ):
        found.append("--strategy fsdp with --checkpoint-acts")
    smaller = next((b for b in range(plan.batch_size - 1, 0, -1) if fits(batch_size=b)), None)
    if smaller is not None:
        found.append(f"--batch-size {smaller}")
    world = plan.world
    while not found and world < MAX_DEVICES:
        world *= 2
        if fits(strategy="fsdp", world=world, checkpoint_activations=True):
            extra = "" if plan.checkpoint_activations else " with --checkpoint-acts"
            found.append(f"fsdp over {world} devices{extra}")
            break
    return found


def check_fits(shape: ModelShape, plan: MemoryPlan, **options) -> None:
    """Refuse a plan that exceeds the device, naming the changes that would fit.

    Args:
        shape: the model planned.
        plan: :func:`plan_memory`'s result for it.
        options: the keyword arguments given to :func:`plan_memory`.

    Raises:
        NotEnoughMemory: the plan does not fit.
    """
    if plan.fits:
        return
    options = {"strategy": plan.strategy, "world": plan.world, "precision": plan.precision,
               "checkpoint_activations": plan.checkpoint_activations, "batch_size": plan.batch_size,
               "device_memory": plan.device_memory, "trainable_params": plan.trainable_params,
               "frozen_dtype": plan.frozen_dtype, **options}  # fmt: skip
    found = _suggestions(shape, plan, options)
    advice = (
        f"it would fit with {' or '.join(found)}"
        if found
        else "nothing tried would fit (more devices, fsdp, checkpointed activations, batch 1)"
    )
    raise NotEnoughMemory(
        f"Training needs about {gigabytes(plan.total)} per device ({plan.strategy}, {plan.world} device(s), "
        f"batch {plan.batch_size}), more than the {gigabytes(plan.usable or 0)} usable of "
        f"{gigabytes(plan.device_memory or 0)}; {advice}."
    )


def plan_rows(plan: MemoryPlan) -> Sequence[tuple[str, str]]:
    """The plan as (what, size) rows, the total last."""
    rows = [(name, gigabytes(value)) for name, value in plan.rows()]
    rows.append(("total", gigabytes(plan.total)))
    if plan.device_memory is not None:
        rows.append(
            (f"usable ({USABLE:.0%} of {gigabytes(plan.device_memory)})", gigabytes(plan.usable or 0))
        )
    return rows


def training_plan(
    model: nn.Module,
    *,
    requested: str,
    world: int,
    precision: str,
    checkpoint_activations: bool,
    batch_size: int,
    ema: bool,
    device: torch.device,
) -> tuple[MemoryPlan, ModelShape]:
    """The plan of training ``model`` as the loop will, with ``auto`` resolved (ddp if it fits, else fsdp;
    always ddp for a model without Transformer blocks).

    Raises:
        ConfigError: a strategy that does not suit the world size.
    """
    config = getattr(model, "config", None)
    shape = model_shape(model, encoder_positions=getattr(config, "n_tokens", 0) or 0)
    memory = device_memory(device)
    # A frozen base (LoRA) is counted in the dtype it is stored in.
    frozen = next((p.dtype for p in model.parameters() if not p.requires_grad), torch.bfloat16)
    frozen_dtype = {torch.float32: "fp32", torch.float16: "fp16"}.get(frozen, "bf16")
    options = dict(world=world, precision=precision, checkpoint_activations=checkpoint_activations,
                   batch_size=batch_size, ema=ema, device_memory=memory, frozen_dtype=frozen_dtype)  # fmt: skip
    # A model without Transformer blocks (the VQ-VAE) has nothing to shard block by block: ddp.
    fits_ddp = world > 1 and (not shape.layers or plan_memory(shape, strategy="ddp", **options).fits)
    strategy = choose_strategy(requested, world, fits_ddp)
    return plan_memory(shape, strategy=strategy, **options), shape
