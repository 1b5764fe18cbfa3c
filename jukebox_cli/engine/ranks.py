"""Several processes sampling one run (``torchrun --nproc-per-node N -m jukebox_cli generate ...``).

torchrun starts N copies of the command and tells each its place through ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`joined` reads them, takes
``cuda:LOCAL_RANK`` (or the CPU) and starts the process group: nccl on GPUs, gloo on the CPU. A command run
without torchrun gets :data:`SINGLE`, with which every helper here is an identity and no collective is made.

Every meeting of the processes is an :meth:`Ranks.exchange`: an ``all_gather_object`` that carries either a
payload or an error. A process that fails calls one exchange with its error, which matches whatever exchange
the others are waiting in (they all advance through the same sequence of exchanges), so they learn of it and
stop too instead of waiting for it until the timeout. Rank 0 raises the failed rank's own error (it is the
one that prints); the other ranks raise :class:`~jukebox_cli.engine.errors.ProcessStopped`, which the CLI
does not print. A process that vanishes (killed) breaks gloo's connections at once, and nccl's after
:data:`TIMEOUT`; the others then raise ``ProcessStopped`` as well.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from jukebox_cli.engine.devices import resolve_device
from jukebox_cli.engine.errors import ConfigError, DeviceError, JukeboxError, ProcessStopped

#: How long a process waits for the others at one meeting. Rank 0 alone decodes and writes a finished
#: level's audio (and a lyrics model's alignment) while the others wait for the next level's first window.
TIMEOUT = timedelta(minutes=30)
#: How long a rank other than 0 waits, on its way out after a failure or Ctrl-C, for rank 0 to leave first.
LINGER_SECONDS = 10.0


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes sampling one run, and its device.

    Attributes:
        rank: 0 .. world - 1; rank 0 alone holds the run folder, writes it and reports.
        world: how many processes share the run.
        local_rank: its index on its machine (its GPU).
        device: where it samples (``cuda:local_rank`` on GPUs).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def share(self, n_samples: int) -> slice:
        """This rank's samples: a contiguous block, the first ``n_samples % world`` ranks one sample more.

        Contiguous blocks in rank order put the gathered samples back in their order by concatenation.
        """
        base, extra = divmod(n_samples, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def exchange(self, payload: Any) -> list[Any]:
        """Every rank's ``payload`` (picklable; tensors on the CPU), in rank order.

        Raises:
            ProcessStopped: another rank failed (on rank 0: that rank's own error, named), or left.
        """
        if self.world == 1:
            return [payload]
        gathered = self._gather((None, payload))
        failed = [(rank, error) for rank, (error, _) in enumerate(gathered) if error is not None]
        if failed:
            rank, error = failed[0]
            if self.main:
                raise _named(error, rank)  # marked: it is not reported back to the ranks it came from
            raise ProcessStopped(f"rank {rank} failed; rank 0 reports why.")
        return [payload for _, payload in gathered]

    def from_main(self, payload: Any) -> Any:
        """Rank 0's ``payload`` on every rank (what the others pass is ignored)."""
        return self.exchange(payload if self.main else None)[0]

    def report(self, error: BaseException) -> None:
        """Tell the other ranks that this one failed with ``error`` (one exchange; the caller re-raises).

        Raises:
            ProcessStopped: on ranks other than 0, which do not print: rank 0 reports the error.
        """
        if self.world == 1:
            return
        with contextlib.suppress(ProcessStopped):
            self._gather((_portable(error), None))
        if not self.main:
            raise ProcessStopped(f"rank {self.rank} failed: {error}") from error

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """A block every rank leaves together: an error on one rank stops every rank at its end.

        The end of the block is an exchange, so a rank that fails late in the block (rank 0 writing the last
        audio) still finds the others there to hear it, and none leaves before rank 0 has written everything.
        Ctrl-C and SIGTERM are not exchanged: torchrun and the terminal send them to every process.
        """
        if self.world == 1:
            yield
            return
        try:
            yield
        except ProcessStopped:
            raise
        except Exception as error:
            # An error already exchanged (it came from another rank, or an inner block reported it) is known.
            if not hasattr(error, _FROM_RANK):
                setattr(error, _FROM_RANK, self.rank)
                self.report(error)
            raise
        self.exchange(None)

    def _gather(self, item: tuple) -> list[tuple]:
        out: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, item)
        except RuntimeError as err:  # a peer that died or timed out (DistBackendError is a RuntimeError)
            raise ProcessStopped(
                f"rank {self.rank}: another process of this run stopped or stopped answering ({err}); "
                "see its message or torchrun's report."
            ) from err
        return out


#: One process, no process group.
SINGLE = Ranks()


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a :class:`JukeboxError` with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return JukeboxError(f"unexpected {type(error).__name__}: {error}")
    return error


_FROM_RANK = "jukebox_from_rank"


def _named(error: BaseException, rank: int) -> BaseException:
    """Another rank's error with its rank in front of the message, marked as having come from ``rank``."""
    setattr(error, _FROM_RANK, rank)
    if rank and error.args and isinstance(error.args[0], str):
        error.args = (f"rank {rank}: {error.args[0]}", *error.args[1:])
    return error


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"Environment variable {name}={value!r} is not a whole number.") from err


def from_environment(device: str | torch.device = "auto") -> Ranks:
    """This process's :class:`Ranks` from torchrun's environment, without starting the process group.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` (several processes: each takes ``cuda:LOCAL_RANK``), ...

    Raises:
        ConfigError: torchrun's variables are inconsistent, or ``cuda:N`` names one GPU for several processes.
        DeviceError: an unavailable device, or more processes on this machine than GPUs.
    """
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(
            f"RANK={rank} is outside WORLD_SIZE={world}; start several processes with torchrun."
        )
    if world == 1:
        return Ranks(device=torch_device)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {' and '.join(missing)} not set; start them with torchrun."
        )
    if torch_device.type == "cuda":
        if isinstance(device, str) and torch_device.index is not None:
            raise ConfigError(
                f"--device {device} names one GPU, but {world} processes sample this run and each takes its "
                "own (cuda:LOCAL_RANK): use --device cuda or auto, and CUDA_VISIBLE_DEVICES to choose GPUs."
            )
        per_node = _env_int("LOCAL_WORLD_SIZE", world)
        if per_node > torch.cuda.device_count():
            raise DeviceError(
                f"{per_node} processes on this machine but {torch.cuda.device_count()} GPU(s): use "
                "--nproc-per-node at most the number of GPUs, or --device cpu."
            )
        torch_device = torch.device("cuda", local_rank)
    return Ranks(rank=rank, world=world, local_rank=local_rank, device=torch_device)


@contextlib.contextmanager
def joined(device: str | torch.device = "auto") -> Iterator[Ranks]:
    """:func:`from_environment`, with the process group started for the block (and destroyed after it).

    Raises:
        As :func:`from_environment`.
    """
    ranks = from_environment(device)
    if ranks.world == 1 or dist.is_initialized():
        yield ranks
        return
    if ranks.device.type == "cuda":
        torch.cuda.set_device(ranks.device)  # nccl and all_gather_object use the current device
    backend = "nccl" if ranks.device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ranks.rank, world_size=ranks.world, timeout=TIMEOUT)
    try:
        yield ranks
    except BaseException:
        if not ranks.main:
            # Rank 0 says why the run stopped. torchrun stops every process as soon as one has left, so a
            # rank that left first could cut rank 0 off before its message; torchrun ends this wait early.
            time.sleep(LINGER_SECONDS)
        raise
    finally:
        dist.destroy_process_group()
