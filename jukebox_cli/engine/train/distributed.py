"""torchrun / DistributedDataParallel helpers.

The original discovered ranks with MPI and always used NCCL; here torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) is read, NCCL is used on CUDA and gloo
elsewhere, and a single process without those variables runs undistributed. Every helper is an identity
(or a no-op) when no process group is initialised, so the loop calls them unconditionally.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from jukebox_cli.engine.devices import resolve_device
from jukebox_cli.engine.errors import DeviceError, TrainingError


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node, its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise TrainingError(f"Environment variable {name}={value!r} is not an integer.") from err


def is_distributed() -> bool:
    """True when a process group is initialised (by :func:`setup` or by the caller)."""
    return dist.is_available() and dist.is_initialized()


def setup(device_hint: str | torch.device = "auto") -> DistInfo:
    """Read torchrun's environment and initialise the process group once when there are several processes.

    Args:
        device_hint: ``"auto"``, ``"cpu"``, ``"cuda"``, ... With several processes on CUDA each one takes
            ``cuda:LOCAL_RANK`` (set as the current device before NCCL starts, as NCCL requires).

    Returns:
        This process's rank, world size, local rank and device.

    Raises:
        TrainingError: torchrun's variables are inconsistent (rank outside the world, no master address).
        DeviceError: the device is unknown or there are fewer GPUs than local ranks.
    """
    device = device_hint if isinstance(device_hint, torch.device) else resolve_device(device_hint)
    if is_distributed():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
    else:
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise TrainingError(f"RANK={rank} is outside WORLD_SIZE={world}; launch training with torchrun.")
    if device.type == "cuda" and world > 1:
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(
                f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} here); "
                "use --nproc-per-node at most the number of GPUs."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not is_distributed():
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise TrainingError(
                f"WORLD_SIZE={world} but {' and '.join(missing)} not set; launch training with torchrun."
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=device)


def teardown() -> None:
    """Destroy the process group if one is initialised (call once, at the end of the program)."""
    if is_distributed():
        dist.destroy_process_group()


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the only rank that logs, saves and exports."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (every rank must pass the same keys), like the original's logs.

    Args:
        values: this rank's scalars.

    Returns:
        The mean of each value over ranks (a plain copy when not distributed).
    """
    if not is_distributed() or get_world_size() == 1:
        return {key: float(value) for key, value in values.items()}
    keys = sorted(values)
    tensor = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def any_rank(flags: Sequence[bool]) -> list[bool]:
    """For each flag, whether it is set on any rank (one all-reduce for all of them).

    The loop uses it so that every rank takes the same decision (skip a step, stop, fail a save) and the
    collectives stay matched.

    Args:
        flags: this rank's flags (the same number on every rank).

    Returns:
        The logical OR of each flag over ranks.
    """
    if not is_distributed() or get_world_size() == 1:
        return [bool(flag) for flag in flags]
    tensor = torch.tensor([float(flag) for flag in flags], device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [value > 0 for value in tensor.tolist()]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed).

    Args:
        obj: something picklable (the loop gathers RNG states before rank 0 saves them).

    Returns:
        A list of ``world`` objects.
    """
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


# PyTorch 2.13 deprecates ``broadcast_buffers`` (which now also skips the buffers' sync at construction) for
# ``forward_sync_buffers``, which keeps that one-time sync: what ``broadcast_buffers=False`` meant for the
# original.
_NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def wrap(model: nn.Module, info: DistInfo) -> DistributedDataParallel:
    """Wrap ``model`` (already on ``info.device``) for data-parallel training.

    No buffer broadcast before each forward (the original's ``broadcast_buffers=False``): the bottleneck keeps
    its codebooks identical across ranks with its own broadcast and all-reduces (``bottleneck.py``). DDP still
    copies rank 0's parameters (and, with PyTorch >= 2.13, buffers) to every rank once, here.

    Args:
        model: the bare model.
        info: this process's rank and device.

    Returns:
        The wrapper to call in the training forward; ``.module`` is ``model``.
    """
    cuda = info.device.type == "cuda"
    return DistributedDataParallel(
        model,
        device_ids=[info.device.index] if cuda else None,
        find_unused_parameters=False,
        **_NO_FORWARD_BUFFER_SYNC,
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper (``model`` itself otherwise).

    A task's ``loss`` gets the wrapper during training: it reads attributes (``config``, ``sample_rate``) from
    ``unwrap(model)`` but runs the forward as ``model(...)``, which is what synchronises the gradients.

    Args:
        model: a model, wrapped or not.

    Returns:
        The module holding the parameters.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model
