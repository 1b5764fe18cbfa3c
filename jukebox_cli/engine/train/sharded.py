"""Fully sharded training (FSDP2), activation checkpointing and sharded checkpoints.

``fully_shard`` is applied to every Transformer block, then to the root, over a one-dimensional device mesh
(``init_device_mesh("cpu", ...)`` under gloo works as on CUDA under NCCL). With ``--precision bf16`` the
blocks gather their weights in bf16 and reduce gradients in float32 (``MixedPrecisionPolicy``); the loop's
autocast stays on around the loss, since the task also runs modules outside the sharded model (the VQ-VAE).

A sharded checkpoint is a ``torch.distributed.checkpoint`` folder, ``checkpoints/step-NNNNNNNN.dcp``
(model, optimizer, EMA shadow, non-persistent buffers; each rank writes its shards), and
``checkpoints/latest.pt`` holding everything else and the folder's name. ``latest.pt`` is replaced
atomically after the folder is complete, so a kill while saving leaves the previous checkpoint in use. The
folder's tensors are keyed by parameter name, so any world size, and a single unsharded process, can load it
(DCP reshards on load).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.checkpoint import checkpoint

from jukebox_cli.engine.errors import TrainingError
from jukebox_cli.engine.models.transformer import ResAttnBlock

SHARDED_PREFIX = "step-"


def blocks(model: nn.Module) -> list[nn.Module]:
    """The units sharded and checkpointed one at a time: every Transformer block of ``model``."""
    return [module for module in model.modules() if isinstance(module, ResAttnBlock)]


def _checkpointed(forward: Any) -> Any:
    def run(x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if not torch.is_grad_enabled():  # evaluation: nothing is kept for a backward pass anyway
            return forward(x, **kwargs)
        # Non-reentrant: keyword arguments pass through and the RNG state is replayed for the recompute.
        return checkpoint(forward, x, use_reentrant=False, **kwargs)

    return run


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of keeping them.

    The block's own ``forward`` is replaced on the instance, so parameter names (and checkpoints) are those
    of the plain model. Apply before :func:`shard`, so that FSDP's hooks sit outside the recomputed region.

    Returns:
        The number of blocks changed.
    """
    found = blocks(model)
    for block in found:
        block.forward = _checkpointed(block.forward)
    return len(found)


def meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every tensor on the ``meta`` device (no memory): the plain module that a full
    state dict is loaded into when the sharded model is exported."""
    memo: dict[int, Any] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (
            nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
        )
    return copy.deepcopy(model, memo)


def shard(model: nn.Module, device: torch.device, world: int, precision: str) -> int:
    """``fully_shard`` each Transformer block, then the root, over ``world`` devices of ``device``'s type.

    Returns:
        The number of blocks sharded on their own.
    """
    # Each rank built its own initialisation; DDP copies rank 0's at construction, fully_shard would keep
    # each rank's own slice of its own copy.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)
    mesh = init_device_mesh(device.type, (world,))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    if precision == "bf16":
        # The priors' LayerNorm computes in float32 and the CPU kernel refuses bf16 weights with float32
        # input: norms keep float32 weights (their own small groups), their input dtype untouched.
        norm_policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32,
                                           cast_forward_inputs=False)  # fmt: skip
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) and module.weight is not None:
                fully_shard(module, mesh=mesh, mp_policy=norm_policy)
    found = blocks(model)
    for block in found:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return len(found)


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """FSDP's ``no_sync``: skip the reduce-scatter on micro steps before the last one."""
    model.set_requires_gradient_sync(enabled)


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    persistent = set(model.state_dict())
    return {name: b for name, b in model.named_buffers() if name not in persistent}


def _tensors(model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None) -> dict[str, Any]:
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state, "ema": ema or {}, "buffers": _buffers(model)}


def folder_name(step: int) -> str:
    return f"{SHARDED_PREFIX}{step:08d}.dcp"


def save(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None, *, rank: int
) -> None:
    """Write the sharded tensors into ``folder`` (collective: every rank writes its shards).

    Raises:
        TrainingError: the folder could not be written.
    """
    if rank == 0 and folder.exists():  # a save of the same step that was interrupted
        shutil.rmtree(folder)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    try:
        dcp.save(_tensors(model, optimizer, ema), checkpoint_id=str(folder))
    except (OSError, RuntimeError) as err:
        raise TrainingError(f"Could not save the sharded checkpoint {folder} ({err}).") from err


def load(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None) -> None:
    """Load a folder written by :func:`save` into ``model`` (sharded or not, any world size), its optimizer
    and the EMA shadow (when this rank keeps one).

    Raises:
        TrainingError: the folder is missing or does not fit the model.
    """
    if not folder.is_dir():
        raise TrainingError(f"The sharded checkpoint {folder} is missing; the run cannot resume.")
    state = _tensors(model, optimizer, ema)
    try:
        dcp.load(state, checkpoint_id=str(folder))
    except (RuntimeError, ValueError, KeyError) as err:
        raise TrainingError(f"The sharded checkpoint {folder} does not fit this model: {err}") from err
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in state["buffers"]:
                buffer.copy_(state["buffers"][name])


def load_full(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, ema: dict | None
) -> None:
    """Load a whole-model checkpoint (written by ddp or one process, read by every rank) into the sharded
    ``model``: the weights, the optimizer state (keyed by position there, by name here) and the EMA shadow.

    Raises:
        TrainingError: the checkpoint does not fit the model.
    """
    full = StateDictOptions(full_state_dict=True)
    try:
        set_model_state_dict(model, state["model"], options=full)
    except (RuntimeError, KeyError) as err:
        raise TrainingError(f"The checkpoint does not fit this model: {err}") from err
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in state["buffers"]:
                buffer.copy_(state["buffers"][name])
    # The loop's groups list the trainable parameters in model order, matrices first (loop._Trainer).
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names = [n for n, p in trainable if p.dim() >= 2] + [n for n, p in trainable if p.dim() < 2]
    saved = state["optimizer"]
    by_index = [index for group in saved["param_groups"] for index in group["params"]]
    if len(by_index) != len(names):
        raise TrainingError("The checkpoint's optimizer does not cover the same parameters as the model.")
    name_of = dict(zip(by_index, names, strict=True))
    optim = {
        "state": {name_of[index]: value for index, value in saved["state"].items()},
        "param_groups": [{**g, "params": [name_of[i] for i in g["params"]]} for g in saved["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, optim, options=full)
    if ema is not None and state.get("ema") is not None:
        if set(state["ema"]) != set(ema):
            raise TrainingError("The checkpoint's EMA does not cover the same parameters as the model.")
        with torch.no_grad():
            for name, shadow in ema.items():
                value = state["ema"][name].to(shadow.device)
                if isinstance(shadow, DTensor):
                    value = distribute_tensor(value, shadow.device_mesh, shadow.placements)
                shadow.copy_(value)


def remove_older(checkpoints: Path, keep: str) -> None:
    """Delete the sharded folders other than ``keep`` (rank 0, after ``latest.pt`` names ``keep``)."""
    for path in sorted(checkpoints.glob(f"{SHARDED_PREFIX}*.dcp")):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def full_model(model: nn.Module, skeleton: nn.Module, *, rank: int) -> nn.Module | None:
    """The whole model as a plain CPU module on rank 0 (None elsewhere); collective.

    The full state dict is gathered to rank 0's CPU (``full_state_dict=True, cpu_offload=True``), one tensor
    at a time, and loaded into a copy of the meta ``skeleton``.
    """
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank != 0:
        return None
    plain = copy.deepcopy(skeleton).to_empty(device="cpu")
    plain.load_state_dict(full)
    with torch.no_grad():
        for name, buffer in plain.named_buffers():
            if name not in full:
                buffer.copy_(dict(model.named_buffers())[name])
    return plain.eval()
