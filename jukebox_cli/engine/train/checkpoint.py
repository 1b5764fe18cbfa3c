"""Training checkpoints and the run folder: atomic, resumable, ``weights_only`` loadable.

Layout of a run folder::

    train.json              # {config, task, created, resumed, version}: what the run is, human-readable
    checkpoints/latest.pt   # everything the next step depends on (see ``train.loop``), rewritten atomically
    ...                     # the task's export of the model in the native layout (``--model RUN_DIR``)

Only tensors, plain containers, numbers, strings and None go into a checkpoint, so ``torch.load(...,
weights_only=True)`` reads it (the default since PyTorch 2.6): the numpy and Python RNG
states are converted to lists and ints here and rebuilt on load.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jukebox_cli import __version__
from jukebox_cli.engine.errors import TrainingError
from jukebox_cli.engine.files import atomic_write, write_json

FORMAT = 1
# Settings that only say how long to run and how often to report; everything else decides the weights.
# How the work is spread (strategy, recomputed activations) changes neither the weights nor the data.
MAY_CHANGE_ON_RESUME = frozenset(
    {"steps", "save_every", "eval_every", "log_every", "strategy", "checkpoint_activations"}
)


def checkpoint_path(run_dir: str | Path) -> Path:
    """Where a run folder keeps its resumable checkpoint.

    Args:
        run_dir: the run folder.

    Returns:
        ``run_dir/checkpoints/latest.pt``.
    """
    return Path(run_dir) / "checkpoints" / "latest.pt"


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so saved and current configs compare equal.

    Args:
        value: a config dict.

    Returns:
        A copy made of dicts, lists, strings, numbers, booleans and None.

    Raises:
        TrainingError: the value holds something JSON cannot represent.
    """
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise TrainingError(f"A training or task config is not JSON-serialisable: {err}") from err


# -- RNG state -------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global RNG this process draws from (torch CPU, each CUDA device, Python, numpy), as plain data.

    Returns:
        ``{"torch": ByteTensor, "cuda": [ByteTensor, ...], "python": [...], "numpy": [...]}``; lists and ints
        rather than numpy arrays and tuples of ints, so that ``weights_only=True`` loads them.
    """
    key, numpy_keys, pos, has_gauss, cached = np.random.get_state()
    version, python_keys, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "python": [version, list(python_keys), gauss_next],
        "numpy": [key, numpy_keys.tolist(), pos, has_gauss, cached],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only for the devices that exist here).

    Args:
        state: a :func:`rng_state` result, possibly read back from a checkpoint.
    """
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    version, python_keys, gauss_next = state["python"]
    random.setstate((version, tuple(python_keys), gauss_next))
    key, numpy_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, np.asarray(numpy_keys, dtype=np.uint32), pos, has_gauss, cached))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python and numpy.

    Args:
        seed: any integer (numpy takes it modulo 2**32).
    """
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# -- save / load -----------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, then ``os.replace``.

    A crash, Ctrl-C or a full disk while writing leaves the previous checkpoint untouched.

    Args:
        path: the checkpoint file (its folder is created).
        state: tensors, plain containers and numbers only.

    Returns:
        ``path``.

    Raises:
        TrainingError: the file could not be written (the temp file is removed first).
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            # Without fsync a power cut after os.replace can leave an empty file under the final name.
            os.fsync(handle.fileno())

    try:
        atomic_write(path, write, overwrite=True)
        _fsync_dir(path.parent)
    except OSError as err:
        previous = (
            f"the previous one at {path} is intact" if path.exists() else "there is no earlier checkpoint"
        )
        raise TrainingError(f"Could not save the checkpoint ({err}); {previous}.") from err
    return path


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; directories cannot be opened this way on Windows.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint onto the CPU with ``weights_only=True``.

    Args:
        path: the checkpoint file.

    Returns:
        What :func:`training_state` built.

    Raises:
        TrainingError: no file, a damaged file, or one written by another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"No checkpoint at {path} to resume from; start without --resume.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, OSError) as err:
        raise TrainingError(f"The checkpoint {path} cannot be read ({err}); it may be damaged.") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path} is not a training checkpoint of format {FORMAT} (found {found!r}).")
    return state


def training_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    ema: dict[str, torch.Tensor] | None,
    task: Any,
    counters: Mapping[str, int],
    train_config: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    rngs: list[dict[str, Any]],
    sharded: str | None = None,
) -> dict[str, Any]:
    """Everything the next step depends on, as a checkpoint dict (tensors are shared, not copied).

    With ``sharded`` (the name of a ``train.sharded`` folder beside the file) the model, optimizer, buffers and
    EMA are in that folder and stored here as None.

    Args:
        model: the bare model (not the DDP wrapper).
        optimizer: its optimizer.
        scaler: the fp16 loss scaler, if any.
        ema: the EMA shadow, if any.
        task: the task; its ``state_dict()`` is saved when it has one.
        counters: ``step``, ``skipped_steps``, ``bad_in_a_row``.
        train_config: ``TrainConfig.to_dict()``.
        scheduler: the LR schedule's position (informative: the LR is a function of the step).
        rngs: each rank's :func:`rng_state`, in rank order.

    Returns:
        The dict :func:`save_checkpoint` writes.
    """
    persistent = buffers = None
    if sharded is None:
        persistent = model.state_dict()
        # Non-persistent buffers (the codebook's EMA sums and counts) are training state too.
        buffers = {name: b for name, b in model.named_buffers() if name not in persistent}
    return {
        "format": FORMAT,
        **{key: int(value) for key, value in counters.items()},
        "sharded": sharded,
        "model": persistent,
        "buffers": buffers,
        "optimizer": optimizer.state_dict() if sharded is None else None,
        "scheduler": dict(scheduler),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "ema": ema if sharded is None else None,
        "train_config": plain(train_config),
        "task_config": plain(task.config()),
        "task_state": task.state_dict() if hasattr(task, "state_dict") else None,
        "rng": rngs,
    }


def restore_training_state(
    state: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    load_ema: Callable[[Mapping[str, torch.Tensor]], None] | None,
    task: Any,
    *,
    weights: bool = True,
) -> None:
    """Load what :func:`training_state` saved into freshly built objects (RNG and counters excepted).

    ``weights=False`` leaves the model, optimizer and EMA alone (``train.sharded`` has loaded them).

    Args:
        state: a :func:`load_checkpoint` result.
        model: the bare model (on its device; tensors are copied in).
        optimizer: an optimizer over ``model``'s parameters, with the same groups as when saved.
        scaler: the fp16 loss scaler, if any.
        load_ema: loads the EMA shadow (None when this rank keeps none).
        task: the task; ``load_state_dict`` is called when it has one and state was saved.

    Raises:
        TrainingError: the checkpoint's weights do not fit the model.
    """
    weights = weights and state.get("sharded") is None  # else train.sharded.load has loaded them
    if weights:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise TrainingError(f"The checkpoint does not fit this model: {err}") from err
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in state["buffers"]:
                    buffer.copy_(state["buffers"][name])
        optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    if weights and load_ema is not None and state["ema"] is not None:
        load_ema(state["ema"])
    if state["task_state"] is not None and hasattr(task, "load_state_dict"):
        task.load_state_dict(state["task_state"])


# -- configs and the run folder --------------------------------------------------------------------------


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


_MISSING = "<missing>"


def check_same_config(
    saved: Mapping[str, Any], current: Mapping[str, Any], *, run_dir: Path, prefix: str = ""
) -> None:
    """Refuse to resume with settings that differ from the saved ones (except :data:`MAY_CHANGE_ON_RESUME`).

    Args:
        saved: the config stored in the checkpoint.
        current: this attempt's config (same form).
        run_dir: the run folder, for the message.
        prefix: put before key names in the message (``"task."``).

    Raises:
        TrainingError: naming the first differing key with both values.
    """
    old, new = dict(_flatten(plain(saved))), dict(_flatten(plain(current)))
    for key in [*new, *(k for k in old if k not in new)]:
        if key in MAY_CHANGE_ON_RESUME and not prefix:
            continue
        before, after = old.get(key, _MISSING), new.get(key, _MISSING)
        if before != after:
            raise TrainingError(
                f"The run in {run_dir} was trained with {prefix}{key}={before!r}, not {after!r}. Only "
                f"{', '.join(sorted(MAY_CHANGE_ON_RESUME))} may change on resume; use the original settings "
                "or choose another -o."
            )


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuse to start over an existing run, and to resume one that has no checkpoint.

    Args:
        run_dir: the run folder.
        resume: whether the caller asked to resume.

    Raises:
        TrainingError: with the fix in the message.
    """
    path = checkpoint_path(run_dir)
    if path.exists() and not resume:
        raise TrainingError(
            f"{run_dir} already holds a training run; pass --resume to continue it or choose another -o."
        )
    if resume and not path.exists():
        raise TrainingError(f"No checkpoint at {path} to resume from; start without --resume.")


def write_run_info(
    run_dir: Path, config: Mapping[str, Any], task: Mapping[str, Any], *, resume: bool
) -> Path:
    """Write ``run_dir/train.json``; a resumed run keeps its creation time and appends the resume time.

    Args:
        run_dir: the run folder.
        config: ``TrainConfig.to_dict()``.
        task: ``task.config()``.
        resume: whether this attempt resumes the run.

    Returns:
        The path written.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = run_dir / "train.json"
    created, resumed = now, []
    if resume and path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            created, resumed = old.get("created", now), list(old.get("resumed", []))
        except (OSError, ValueError):
            pass  # informational only: a damaged train.json is rewritten
    if resume:
        resumed.append(now)
    info = {
        "config": plain(config),
        "task": plain(task),
        "created": created,
        "resumed": resumed,
        "version": __version__,
    }
    return write_json(path, info, overwrite=True)
