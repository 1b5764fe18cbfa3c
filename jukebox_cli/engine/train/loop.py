"""The model-agnostic training loop (minGPT's Trainer shape): a task in, events out.

A :class:`Task` supplies the model, the data of each micro step and the loss; :func:`train` does the rest:
AdamW with warmup and decay, gradient accumulation, clipping, a weight EMA, mixed precision, non-finite steps
skipped, logging, evaluation with the EMA weights, atomic checkpoints (``train.checkpoint``) and DDP
(``train.distributed``). Resuming is exact: the data of a step is a function of (step, micro, rank, world)
and every RNG is saved, so an interrupted and resumed run ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from jukebox_cli.engine.configs import DictConfig
from jukebox_cli.engine.dtypes import parse_dtype
from jukebox_cli.engine.errors import ConfigError, TrainingError
from jukebox_cli.engine.locks import hold_folder
from jukebox_cli.engine.progress import (
    Advanced,
    ProgressCallback,
    StageFinished,
    StageStarted,
    TrainMetrics,
    noop,
)
from jukebox_cli.engine.train import checkpoint as ckpt
from jukebox_cli.engine.train import distributed, sharded
from jukebox_cli.engine.train.memory import STRATEGIES, MemoryPlan, ModelShape, check_fits, training_plan
from jukebox_cli.engine.train.optim import WeightEMA, lr_factor

__all__ = ["Logger", "Task", "TrainConfig", "TrainResult", "WeightEMA", "lr_factor", "train"]

log = logging.getLogger(__name__)

DECAYS = ("cosine", "linear", "none")
PRECISIONS = ("fp32", "bf16", "fp16")
MAX_BAD_STEPS = 100  # consecutive non-finite steps before giving up
# fp16 autocast with dynamic loss scaling is a CUDA recipe; CPU autocast is made for bf16.
FP16_DEVICES = ("cuda",)


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    """How to train; the defaults are the original's (lr 3e-4, warmup 100, clip 1.0, Adam betas, eps).

    ``save_every`` and ``eval_every`` may be 0: only at the end. ``batch_size`` is what the task draws per
    process and micro step; the loop uses it for throughput figures only.
    """

    config_name = "training config"

    steps: int = 1000
    batch_size: int = 4
    lr: float = 3e-4
    warmup: int = 100
    decay: str = "cosine"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_accum: int = 1
    clip: float = 1.0
    ema: float | None = 0.999
    precision: str = "fp32"
    seed: int = 0
    save_every: int = 500
    eval_every: int = 500
    log_every: int = 10
    strategy: str = "auto"
    checkpoint_activations: bool = False

    def __post_init__(self) -> None:
        # from_dict gets a list back from JSON; the dataclass field is a tuple.
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        problems = [
            (self.steps >= 1, f"steps must be at least 1 (got {self.steps})"),
            (self.batch_size >= 1, f"batch_size must be at least 1 (got {self.batch_size})"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number (got {self.lr})"),
            (self.warmup >= 0, f"warmup must be 0 or more steps (got {self.warmup})"),
            (self.decay in DECAYS, f"decay must be one of {', '.join(DECAYS)} (got {self.decay!r})"),
            (0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})"),
            (self.weight_decay >= 0, f"weight_decay must be 0 or more (got {self.weight_decay})"),
            (
                len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                f"betas must be two numbers in [0, 1) (got {self.betas})",
            ),
            (self.eps > 0, f"eps must be positive (got {self.eps})"),
            (self.grad_accum >= 1, f"grad_accum must be at least 1 (got {self.grad_accum})"),
            (self.clip >= 0, f"clip must be 0 (off) or a positive gradient norm (got {self.clip})"),
            (self.ema is None or 0.0 <= self.ema < 1.0, f"ema must be None or in [0, 1) (got {self.ema})"),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})",
            ),
            (self.save_every >= 0, f"save_every must be 0 (only at the end) or more (got {self.save_every})"),
            (self.eval_every >= 0, f"eval_every must be 0 (only at the end) or more (got {self.eval_every})"),
            (self.log_every >= 1, f"log_every must be at least 1 (got {self.log_every})"),
            (
                self.strategy in ("auto", *STRATEGIES),
                f"strategy must be auto, {', '.join(STRATEGIES)} (got {self.strategy!r})",
            ),
            (
                not (self.strategy == "fsdp" and self.precision == "fp16"),
                "fsdp trains in fp32 or bf16, not fp16 (use --precision bf16)",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise ConfigError(f"Training config: {message}.")


class Task(Protocol):
    """What a model kind supplies (``train/vqvae.py``, ``train/prior.py``).

    ``loss`` receives the model to call: under DDP it is the ``DistributedDataParallel`` wrapper, so the loss
    must go through ``model(...)`` (its forward) for gradients to be synchronised, and read attributes such as
    ``config`` from ``distributed.unwrap(model)``. Everything the loss needs must live in ``model`` (moved to
    the device by the loop) or be moved by the task; the loop moves the tensors of a batch (in tuples, lists
    and dicts) to the device. Metrics must have the same keys on every rank. Optionally a task may define
    ``state_dict()``/``load_state_dict(state)`` (plain data only): saved in the checkpoint, restored on resume.
    """

    model: nn.Module

    def train_batch(self, step: int, micro: int, rank: int, world: int) -> Any:
        """The data of one micro step, a deterministic function of its arguments."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """A scalar loss and scalar metrics."""
        ...

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Held-out metrics (called with the EMA weights swapped in, in eval mode, under no_grad)."""
        ...

    def media(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Audio or images for the logger at evaluation time (``{}`` if none)."""
        ...

    def export(self, model: nn.Module, folder: Path) -> None:
        """Write the model in the native layout into ``folder`` (rank 0 only, after each checkpoint)."""
        ...

    def config(self) -> dict:
        """A JSON description of the task; a resumed run must have the same one."""
        ...


class Logger(Protocol):
    """Where scalars and media go (``train/logging.py``); only rank 0 calls it. The caller closes it."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...

    def media(self, step: int, items: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrainResult:
    """How a call to :func:`train` ended.

    Attributes:
        step: steps done (== ``config.steps`` when ``stopped`` is ``"done"``).
        skipped_steps: steps whose update was skipped (non-finite loss or gradients), over the whole run.
        last_metrics: the last scalars logged (``loss``, ``lr``, ``grad_norm``, task metrics, ...).
        eval_metrics: the last ``task.evaluate`` result, without the ``eval_`` prefix.
        run_dir: the run folder.
        stopped: ``"done"`` or ``"interrupted"`` (Ctrl-C or SIGTERM: a checkpoint was saved when the state
            allowed it).
    """

    step: int
    skipped_steps: int
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    run_dir: Path
    stopped: str


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (nested in tuples, lists and dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


@dataclass
class _Window:
    """Sums over the steps since the last log, averaged when logging."""

    steps: int = 0
    good: int = 0
    seconds: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: Mapping[str, float]) -> None:
        self.good += 1
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        if not self.good:
            return {"loss": math.nan, "grad_norm": math.nan}
        return {key: value / self.good for key, value in self.sums.items()}


class _Trainer:
    """The state of one training run and its step; :func:`train` drives it."""

    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        run_dir: Path,
        info: distributed.DistInfo,
        *,
        logger: Logger | None,
        progress: ProgressCallback,
        strategy: str = "none",
    ) -> None:
        self.task, self.config, self.run_dir, self.info = task, config, run_dir, info
        main = info.rank == 0
        self.logger = logger if main else None
        self.progress = progress if main else noop
        self.model = task.model.to(info.device)
        self.model.train()
        self.strategy = strategy
        self.fsdp = strategy == "fsdp"
        # Taken before the blocks change: the plain module an export of the sharded model is loaded into.
        self.skeleton = sharded.meta_skeleton(self.model) if self.fsdp and main else None
        if config.checkpoint_activations:
            sharded.checkpoint_activations(self.model)
        if self.fsdp:
            sharded.shard(self.model, info.device, info.world, config.precision)
        self.train_model: nn.Module = self.model  # the DDP wrapper under torchrun
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError("The model has no trainable parameters.")
        # Weight decay on matrices and kernels only, not on biases, gains or embeddings' 1-d scales.
        groups = [
            {"params": [p for p in self.params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in self.params if p.dim() < 2], "weight_decay": 0.0},
        ]
        groups = [group for group in groups if group["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)
        fp16 = config.precision == "fp16"
        self.scaler = torch.amp.GradScaler(info.device.type) if fp16 else None  # "cuda" (FP16_DEVICES)
        # Under ddp only rank 0 evaluates, saves and exports, so only it needs the shadow (it is identical
        # everywhere); under fsdp each rank keeps the shadow of its own shards.
        keeps_ema = config.ema is not None and (main or self.fsdp)
        self.ema = WeightEMA(self.model, config.ema) if keeps_ema else None
        self.step = self.skipped_steps = self.bad_in_a_row = 0
        self.stop_requested = self.stopping = False
        # "clean" between steps, "forward" once the model ran (buffers may have changed), "update" while the
        # optimizer and EMA change the weights: an interrupt there cannot be saved consistently.
        self.phase = "clean"
        self.rng: dict[str, Any] = {}  # every RNG at the last step boundary
        self.window = _Window()
        self.last_metrics: dict[str, float] = {}
        self.eval_metrics: dict[str, float] = {}
        self.saved_at = self.evaluated_at = -1

    # -- state -------------------------------------------------------------------------------------------

    def state_dict(self, rngs: list[dict[str, Any]], folder: str | None = None) -> dict[str, Any]:
        return ckpt.training_state(
            sharded=folder,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            ema=self.ema.state_dict() if self.ema is not None else None,
            task=self.task,
            counters={
                "step": self.step,
                "skipped_steps": self.skipped_steps,
                "bad_in_a_row": self.bad_in_a_row,
            },
            train_config=self.config.to_dict(),
            scheduler={"step": self.step, "lr_factor": lr_factor(self.step, self.config)},
            rngs=rngs,
        )

    def load_state(self, state: Mapping[str, Any]) -> None:
        ema = self.ema.load_state_dict if self.ema is not None else None
        if state.get("sharded"):
            folder = ckpt.checkpoint_path(self.run_dir).parent / state["sharded"]
            sharded.load(
                folder, self.model, self.optimizer, self.ema.shadow if self.ema is not None else None
            )
        elif self.fsdp:  # saved by ddp or one process: every rank read the whole state
            sharded.load_full(
                state, self.model, self.optimizer, self.ema.shadow if self.ema is not None else None
            )
        ckpt.restore_training_state(state, self.model, self.optimizer, self.scaler, ema, self.task,
                                    weights=not self.fsdp)  # fmt: skip
        self.step, self.skipped_steps = state["step"], state["skipped_steps"]
        self.bad_in_a_row = state["bad_in_a_row"]
        rngs = state["rng"]
        if self.info.rank < len(rngs):
            ckpt.set_rng_state(rngs[self.info.rank])
        else:  # more ranks than when saved (or an interrupt saved rank 0 only): a fresh, distinct seed
            ckpt.seed_everything(self.config.seed + self.info.rank + 1_000_003 * self.step)
        self.rng = ckpt.rng_state()

    def wrap_ddp(self) -> None:
        if self.strategy == "ddp":
            self.ddp = distributed.wrap(self.model, self.info)
            self.train_model = self.ddp

    def release_ddp(self) -> None:
        if self.ddp is None:
            return
        # DDP's reducer sits in reference cycles: left to a later collection it can outlive the process group
        # the caller destroys and abort the process at exit (gloo: "terminate called without an active
        # exception", about 1 run in 10 here). Collect it now.
        self.ddp = None
        self.train_model = self.model
        gc.collect()

    # -- one step --------------------------------------------------------------------------------------------

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.config.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.info.device.type, dtype=parse_dtype(self.config.precision))

    def train_step(self) -> None:
        cfg, info = self.config, self.info
        lr = cfg.lr * lr_factor(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=info.device)
        metrics: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            batch = _to_device(self.task.train_batch(self.step, micro, info.rank, info.world), info.device)
            last = micro == cfg.grad_accum - 1
            # Gradients are all-reduced (fsdp: reduce-scattered) once per step, on the last micro step.
            sync = self.ddp.no_sync() if self.ddp is not None and not last else nullcontext()
            if self.fsdp:
                sharded.set_gradient_sync(self.model, last)
            self.phase = "forward"
            with sync:
                with self._autocast():
                    loss, values = self.task.loss(self.train_model, batch)
                scaled = loss.float() / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().float()
            for key, value in values.items():
                metrics[key] = metrics.get(key, 0.0) + float(value) / cfg.grad_accum
        loss_value = loss_sum.item() / cfg.grad_accum
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip and report the true gradient norm
        max_norm = cfg.clip if cfg.clip > 0 else math.inf  # inf: measure only (grads are scaled by 1.0)
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        # Over fsdp shards the norm is a replicated DTensor: the same full value on every rank.
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        # Every rank must take the same decision: the loss is per rank, the (all-reduced) gradients are not.
        # ``stopping`` is the agreed decision; ``stop_requested`` may flip (Ctrl-C) at any time on one rank.
        bad_loss, self.stopping = distributed.any_rank([not math.isfinite(loss_value), self.stop_requested])
        self.phase = "update"
        if self.scaler is not None:
            # The scaler skips steps whose gradients overflowed and halves its scale, like the original's.
            scale = self.scaler.get_scale()
            if not bad_loss:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = bad_loss or self.scaler.get_scale() < scale
        else:
            skipped = bad_loss or not math.isfinite(grad_norm)
            if not skipped:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not skipped and self.ema is not None:
            self.ema.update(self.model, self.step)
        # A skipped step still counts, so the data of a step stays a function of its index.
        self.step += 1
        if skipped:
            self.skipped_steps += 1
            self.bad_in_a_row += 1
        else:
            self.bad_in_a_row = 0
            self.window.add({"loss": loss_value, **metrics, "grad_norm": grad_norm})
        self.window.steps += 1
        self.rng = ckpt.rng_state()
        self.phase = "clean"
        if self.bad_in_a_row >= MAX_BAD_STEPS:
            raise TrainingError(
                f"The loss has been NaN/inf for {MAX_BAD_STEPS} steps in a row (up to step {self.step}); "
                "lower --lr, use --precision fp32 or check the data."
            )

    # -- logging, evaluation, checkpoints ----------------------------------------------------------------

    def log_window(self) -> None:
        window, cfg = self.window, self.config
        values = distributed.all_reduce_mean(window.means())
        values["lr"] = cfg.lr * lr_factor(self.step - 1, cfg)
        if self.scaler is not None:
            values["loss_scale"] = float(self.scaler.get_scale())
        values["skipped_steps"] = float(self.skipped_steps)
        per_second = window.steps / window.seconds if window.seconds > 0 else 0.0
        values["steps_per_second"] = per_second
        values["samples_per_second"] = per_second * cfg.batch_size * cfg.grad_accum * self.info.world
        self.window = _Window()
        self.last_metrics = values
        if self.logger is not None:
            self.logger.scalars(self.step, values)
        self.progress(TrainMetrics(self.step, dict(values)))

    @contextmanager
    def _as_evaluated(self) -> Iterator[nn.Module]:
        """The bare model with the EMA weights in, no grad, RNG untouched (so eval never changes training)."""
        rng = ckpt.rng_state()
        try:
            with torch.no_grad(), self.ema.swapped(self.model) if self.ema is not None else nullcontext():
                yield self.model
        finally:
            ckpt.set_rng_state(rng)

    def evaluate(self) -> None:
        self.evaluated_at = self.step
        if self.info.rank != 0 and not self.fsdp:  # fsdp: every rank takes part in each forward
            return
        self.model.eval()
        try:
            with self._as_evaluated() as model, self._autocast():
                metrics = {key: float(value) for key, value in self.task.evaluate(model, self.step).items()}
                # Sampling calls the model's parts one by one, outside the sharded root's forward that
                # gathers its weights: no samples while training under fsdp (sample the exported model).
                media = {} if self.fsdp else self.task.media(model, self.step)
        finally:
            self.model.train()
        self.eval_metrics = metrics
        prefixed = {f"eval_{key}": value for key, value in metrics.items()}
        if self.logger is not None:
            self.logger.scalars(self.step, prefixed)
            if media:
                self.logger.media(self.step, media)
        self.progress(TrainMetrics(self.step, prefixed))

    def save_sharded(self, *, final: bool) -> None:
        """fsdp: every rank writes its shards, rank 0 the rest; the native export only when ``final``."""
        rngs = distributed.gather(self.rng)
        path = ckpt.checkpoint_path(self.run_dir)
        folder = sharded.folder_name(self.step)
        ema = self.ema.shadow if self.ema is not None else None
        sharded.save(path.parent / folder, self.model, self.optimizer, ema, rank=self.info.rank)
        error: BaseException | None = None
        if self.info.rank == 0:
            try:
                ckpt.save_checkpoint(path, self.state_dict(rngs, folder))
                sharded.remove_older(path.parent, folder)
            except Exception as err:  # re-raised below, once the other ranks know
                error = err
        if distributed.any_rank([error is not None])[0]:
            raise error if error is not None else TrainingError("Rank 0 could not save the checkpoint.")
        self.saved_at = self.step
        if final:
            with self._as_evaluated():
                plain = sharded.full_model(self.model, self.skeleton, rank=self.info.rank)
            if plain is not None:
                self.task.export(plain, self.run_dir)
            distributed.barrier()

    def save(self, *, collective: bool = True, final: bool = False) -> None:
        """Checkpoint on rank 0 (every rank's RNG gathered first), then export; other ranks wait for it."""
        if self.fsdp:
            self.save_sharded(final=final)
            return
        rngs = distributed.gather(self.rng) if collective else [self.rng]
        error: BaseException | None = None
        if self.info.rank == 0:
            try:
                ckpt.save_checkpoint(ckpt.checkpoint_path(self.run_dir), self.state_dict(rngs))
                with self._as_evaluated() as model:
                    self.task.export(model, self.run_dir)
            except Exception as err:  # re-raised below, once the other ranks know
                error = err
        failed = distributed.any_rank([error is not None])[0] if collective else error is not None
        if error is not None:
            raise error
        if failed:
            raise TrainingError("Rank 0 could not save the checkpoint; its error says why.")
        self.saved_at = self.step

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> str:
        cfg = self.config
        try:
            while self.step < cfg.steps:
                started = time.perf_counter()
                self.train_step()
                self.window.seconds += time.perf_counter() - started
                self.progress(Advanced("train"))
                if self.stopping:
                    if self.saved_at != self.step or self.fsdp:
                        self.save(final=True)
                    return "interrupted"
                if self.step % cfg.log_every == 0:
                    self.log_window()
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
            if self.window.steps:
                self.log_window()
            if self.evaluated_at != self.step:
                self.evaluate()
            if self.saved_at != self.step or self.fsdp:
                self.save(final=True)
            return "done"
        except KeyboardInterrupt:
            self._save_after_interrupt()
            return "interrupted"

    def _save_after_interrupt(self) -> None:
        """A KeyboardInterrupt escaped mid-step (second Ctrl-C, or raised by the task)."""
        if self.phase == "update":
            log.debug(
                "interrupted while updating the weights at step %d; keeping the last checkpoint", self.step
            )
            return
        if self.phase == "forward":
            log.debug("interrupted mid-step %d: buffers changed by its forward are saved", self.step)
        # The step's gradients are dropped and the RNG states saved are those of the step's start (``self.rng``),
        # so resuming repeats it exactly. Other ranks may be anywhere: rank 0 saves alone, without collectives.
        if self.fsdp:  # rank 0 holds only its shards: keep the last checkpoint
            log.debug("interrupted under fsdp at step %d; keeping the last checkpoint", self.step)
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.save(collective=self.info.world == 1)


def train(
    task: Task,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    logger: Logger | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback = noop,
    handle_signals: bool = True,
    check_memory: bool = True,
) -> TrainResult:
    """Train ``task.model`` for ``config.steps`` steps, checkpointing into ``run_dir``.

    Under torchrun (``WORLD_SIZE`` > 1) the process group is initialised here (``distributed.setup``) and the
    model wrapped in DDP; rank 0 alone writes files, logs and reports progress. The caller destroys the
    process group (``distributed.teardown``) when it is done.

    Args:
        task: the model, data and loss.
        config: optimisation settings.
        run_dir: the run folder (``train.json``, ``checkpoints/latest.pt``, the exported model).
        resume: continue from ``run_dir/checkpoints/latest.pt``.
        logger: receives scalars and media (rank 0).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``, ... (each rank takes ``cuda:LOCAL_RANK`` under torchrun).
        progress: receives ``StageStarted("train", steps, "step")``, ``Advanced``, ``TrainMetrics`` and
            ``StageFinished`` (rank 0).
        check_memory: refuse to start when the memory plan (``train.memory``) exceeds the device.
        handle_signals: while training, the first Ctrl-C or SIGTERM stops cleanly after the current step
            (checkpoint saved); a second one acts at once. Only installed in the main thread, and only over
            Python's default handlers.

    Returns:
        The final step, skip count, last metrics and how training stopped.

    Raises:
        ConfigError: fp16 on a device other than CUDA, a strategy that does not suit the world size.
        NotEnoughMemory: the memory plan exceeds the device (the message names what would fit).
        TrainingError: a run already in ``run_dir`` (without ``resume``), no or a different run to resume,
            100 non-finite steps in a row, or a checkpoint that cannot be saved.
        OutputInUse: another process is training in ``run_dir`` (rank 0 holds the folder; under torchrun the
            other ranks are its own).
    """
    info = distributed.setup(device)
    if config.precision == "fp16" and info.device.type not in FP16_DEVICES:
        raise ConfigError(
            f"precision fp16 needs a CUDA device for its loss scaling (device is {info.device}); "
            "use bf16 or fp32."
        )
    run_dir = Path(run_dir)
    # Held from the check for an existing run to the last checkpoint: a second process would overwrite it.
    with hold_folder(run_dir, "training run") if info.rank == 0 else nullcontext():
        return _train(task, config, run_dir, info, resume=resume, logger=logger, progress=progress,
                      handle_signals=handle_signals, check_memory=check_memory)  # fmt: skip


def plan(
    task_model: nn.Module, config: TrainConfig, info: distributed.DistInfo
) -> tuple[MemoryPlan, ModelShape]:
    """The memory plan the loop follows for ``task_model`` (``auto`` resolved), unchecked, and the model's shape."""
    return training_plan(task_model, requested=config.strategy, world=info.world, precision=config.precision,
                         checkpoint_activations=config.checkpoint_activations, batch_size=config.batch_size,
                         ema=config.ema is not None, device=info.device)  # fmt: skip


def _train(task: Task, config: TrainConfig, run_dir: Path, info: distributed.DistInfo, *, resume: bool,
           logger: Logger | None, progress: ProgressCallback, handle_signals: bool,
           check_memory: bool) -> TrainResult:  # fmt: skip
    memory, shape = plan(task.model, config, info)
    if check_memory:
        check_fits(shape, memory, ema=config.ema is not None)
    ckpt.check_run_dir(run_dir, resume=resume)
    task_config = ckpt.plain(task.config())
    state = None
    if resume:
        state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir))
        ckpt.check_same_config(state["train_config"], config.to_dict(), run_dir=run_dir)
        ckpt.check_same_config(state["task_config"], task_config, run_dir=run_dir, prefix="task.")
        if state["step"] >= config.steps:
            return TrainResult(state["step"], state["skipped_steps"], {}, {}, run_dir, "done")
    if info.rank == 0:
        ckpt.write_run_info(run_dir, config.to_dict(), task_config, resume=resume)

    trainer = _Trainer(
        task, config, run_dir, info, logger=logger, progress=progress, strategy=memory.strategy
    )
    if state is not None:
        trainer.load_state(state)
        del state
    else:
        ckpt.seed_everything(config.seed + info.rank)
        trainer.rng = ckpt.rng_state()
    trainer.wrap_ddp()
    trainer.progress(StageStarted("train", config.steps, "step"))
    if trainer.step:
        trainer.progress(Advanced("train", trainer.step))
    try:
        with _signals_stop(trainer, enabled=handle_signals):
            stopped = trainer.run()
    finally:
        trainer.release_ddp()
    trainer.progress(StageFinished("train"))
    return TrainResult(
        trainer.step, trainer.skipped_steps, trainer.last_metrics, trainer.eval_metrics, run_dir, stopped
    )


@contextmanager
def _signals_stop(trainer: _Trainer, *, enabled: bool) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step; a second one acts at once.

    SIGTERM is what ``kill``, systemd and batch schedulers send before they kill a job, so it gets the same
    clean stop as Ctrl-C. A signal whose handler someone else installed (or that is ignored) is left alone.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    # The handler each signal gets back after its first delivery, so that a second one stops at once.
    immediate = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    ours = [signum for signum, default in immediate.items() if signal.getsignal(signum) is default]

    def request_stop(signum: int, frame: Any) -> None:
        trainer.stop_requested = True
        signal.signal(signum, immediate[signum])

    for signum in ours:
        signal.signal(signum, request_stop)
    try:
        yield
    finally:
        for signum in ours:
            signal.signal(signum, immediate[signum])
