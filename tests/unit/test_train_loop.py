"""The training loop: exact resume (in-process and after kill -9), skipped steps, atomic checkpoints, the LR
schedule, the weight EMA, gradient accumulation, and the events and scalars it emits."""

from __future__ import annotations

import errno
import io
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from jukebox_cli.engine.errors import ConfigError, TrainingError
from jukebox_cli.engine.progress import Advanced, StageFinished, StageStarted, TrainMetrics
from jukebox_cli.engine.train import checkpoint as ckpt
from jukebox_cli.engine.train.loop import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]


class ToyTask:
    """A small MLP regression whose data is a function of (step, micro, rank) and whose loss draws from the
    torch (dropout, noise), numpy and Python RNGs, so only a resume that restores every RNG is exact.

    The batch of a step has ``batch_size`` rows; with ``parts`` > 1 micro step ``m`` gets the m-th slice.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        batch_size: int = 4,
        parts: int = 1,
        dropout: float = 0.2,
        noise: bool = True,
        linear: bool = False,
        interrupt_at: int | None = None,
        signal_at: int | None = None,
        signum: int = signal.SIGINT,
        nan_steps: frozenset[int] | range = frozenset(),
        sleep: float = 0.0,
    ) -> None:
        torch.manual_seed(seed)
        self.in_dim, self.batch_size, self.parts, self.dropout = 6, batch_size, parts, dropout
        if linear:
            self.model: nn.Module = nn.Linear(self.in_dim, 1)
        else:
            self.model = nn.Sequential(
                nn.Linear(self.in_dim, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1)
            )
        generator = torch.Generator().manual_seed(1234)
        self.w_true = torch.randn(self.in_dim, 1, generator=generator)
        self.eval_x = torch.randn(32, self.in_dim, generator=generator)
        self.noise, self.linear = noise, linear
        self.interrupt_at, self.signal_at, self.nan_steps, self.sleep = (
            interrupt_at,
            signal_at,
            nan_steps,
            sleep,
        )
        self.signum = signum
        self.calls: list[tuple[int, int, int, int]] = []

    def train_batch(self, step: int, micro: int, rank: int, world: int) -> dict[str, Any]:
        self.calls.append((step, micro, rank, world))
        if self.sleep:
            time.sleep(self.sleep)
        generator = torch.Generator().manual_seed(100_003 * step + 7 * rank + 1)
        x = torch.randn(self.batch_size, self.in_dim, generator=generator)
        x = x.chunk(self.parts)[micro]
        return {"x": x, "y": torch.sin(x @ self.w_true), "step": step}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch["x"], batch["y"]
        if self.noise:
            x = x + 0.01 * torch.randn_like(x)
        pred = model(x)
        loss = F.mse_loss(pred, y)
        if self.noise:
            loss = loss * (1.0 + 1e-3 * (np.random.rand() + random.random()))
        if batch["step"] == self.interrupt_at:  # after drawing noise: the RNGs must be rolled back
            self.interrupt_at = None
            raise KeyboardInterrupt
        if batch["step"] in self.nan_steps:
            loss = loss * float("nan")
        if batch["step"] == self.signal_at:
            self.signal_at = None
            os.kill(os.getpid(), self.signum)
        return loss, {"mse": float(F.mse_loss(pred.detach(), y))}

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        torch.randn(3)  # evaluation may draw random numbers without changing the training run
        return {"loss": float(F.mse_loss(model(self.eval_x), torch.sin(self.eval_x @ self.w_true)))}

    def media(self, model: nn.Module, step: int) -> dict[str, Any]:
        return {"prediction": model(self.eval_x[:4]).detach()}

    def export(self, model: nn.Module, folder: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(Path(folder) / "toy.safetensors"))

    def config(self) -> dict:
        return {"kind": "toy", "linear": self.linear, "dropout": self.dropout, "noise": self.noise}


class ListLogger:
    """Records every call."""

    def __init__(self) -> None:
        self.scalar_calls: list[tuple[int, dict[str, float]]] = []
        self.media_calls: list[tuple[int, dict[str, Any]]] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.scalar_calls.append((step, dict(values)))

    def media(self, step: int, items: dict[str, Any]) -> None:
        self.media_calls.append((step, dict(items)))

    def close(self) -> None:
        pass


def config(**changes: Any) -> TrainConfig:
    """A quick config: no warmup to wait for, EMA on, everything saved and logged often."""
    values = {
        "steps": 6,
        "lr": 1e-2,
        "warmup": 2,
        "ema": 0.9,
        "save_every": 3,
        "eval_every": 3,
        "log_every": 1,
    }
    return TrainConfig(**{**values, **changes})


def latest(run_dir: Path) -> dict[str, Any]:
    return ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir))


def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """Bit-identical nested checkpoint content (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{where}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("step", "skipped_steps", "model", "buffers", "optimizer", "ema", "scaler", "rng"):
        assert_identical(a[key], b[key], key)


def disturb_rngs() -> None:
    torch.manual_seed(987)
    np.random.seed(654)
    random.seed(321)


# -- exact resume ----------------------------------------------------------------------------------------


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path: Path) -> None:
    reference = train(ToyTask(), config(), tmp_path / "a")
    assert reference.stopped == "done" and reference.step == 6

    stopped = train(ToyTask(interrupt_at=4), config(), tmp_path / "b")
    assert (stopped.stopped, stopped.step) == ("interrupted", 4)
    assert latest(tmp_path / "b")["step"] == 4  # saved at the interrupt, not only at the save_every step 3
    disturb_rngs()
    # Another init, and more evaluations/logs than before: neither may change the weights.
    resumed = train(ToyTask(seed=5), config(eval_every=1, log_every=2), tmp_path / "b", resume=True)
    assert (resumed.stopped, resumed.step) == ("done", 6)
    assert_same_run(latest(tmp_path / "a"), latest(tmp_path / "b"))


@pytest.fixture
def default_signal_handlers() -> Iterator[None]:
    """Python's own SIGINT and SIGTERM handlers, even when pytest was started under nohup (SIGINT ignored)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.usefixtures("default_signal_handlers")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_after_the_step_and_resumes_exactly(tmp_path: Path, signum: int) -> None:
    reference = train(ToyTask(), config(steps=5), tmp_path / "a")
    task = ToyTask(signal_at=2, signum=signum)  # the signal arrives in the middle of step index 2
    stopped = train(task, config(steps=5), tmp_path / "b")
    assert (stopped.stopped, stopped.step) == ("interrupted", 3)
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "b"))["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    disturb_rngs()
    resumed = train(ToyTask(), config(steps=5), tmp_path / "b", resume=True)
    assert resumed.step == reference.step == 5
    assert_same_run(latest(tmp_path / "a"), latest(tmp_path / "b"))


KILL_SCRIPT = """
import sys
import torch
torch.set_num_threads(int(sys.argv[2]))
from tests.unit.test_train_loop import ToyTask, kill_config
from jukebox_cli.engine.train.loop import train
train(ToyTask(sleep=0.1), kill_config(), sys.argv[1], handle_signals=False)
"""


def kill_config() -> TrainConfig:
    return config(steps=40, save_every=2, eval_every=10, log_every=5)


def test_resume_after_kill_9_equals_uninterrupted(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(run_dir), str(torch.get_num_threads())],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not ckpt.checkpoint_path(run_dir).exists():
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(0.15)  # kill it somewhere in the following steps (or in the middle of a save)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = latest(run_dir)["step"]
    assert 2 <= killed_at < 40

    reference = train(ToyTask(), kill_config(), tmp_path / "reference")
    disturb_rngs()
    resumed = train(ToyTask(), kill_config(), run_dir, resume=True)
    assert resumed.step == reference.step == 40
    assert_same_run(latest(tmp_path / "reference"), latest(run_dir))


# -- the run folder --------------------------------------------------------------------------------------


def test_resume_refuses_a_changed_setting_and_names_it(tmp_path: Path) -> None:
    train(ToyTask(), config(steps=2), tmp_path)
    with pytest.raises(TrainingError, match=r"lr=0\.01, not 0\.02"):
        train(ToyTask(), config(steps=4, lr=2e-2), tmp_path, resume=True)
    with pytest.raises(TrainingError, match=r"task\.dropout=0\.2, not 0\.5"):
        train(ToyTask(dropout=0.5), config(steps=4), tmp_path, resume=True)
    # steps and the reporting intervals may change
    result = train(ToyTask(), config(steps=4, save_every=1, eval_every=2, log_every=3), tmp_path, resume=True)
    assert result.step == 4


def test_train_json_and_existing_runs(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="No checkpoint"):
        train(ToyTask(), config(steps=2), tmp_path, resume=True)
    train(ToyTask(), config(steps=2), tmp_path)
    info = __import__("json").loads((tmp_path / "train.json").read_text())
    assert info["config"] == ckpt.plain(config(steps=2).to_dict())
    assert info["task"] == ToyTask().config() and info["version"] and info["created"]
    assert (tmp_path / "toy.safetensors").is_file()
    with pytest.raises(TrainingError, match="already holds a training run; pass --resume"):
        train(ToyTask(), config(steps=2), tmp_path)
    task = ToyTask()
    finished = train(task, config(steps=2), tmp_path, resume=True)
    assert (finished.step, finished.stopped, task.calls) == (2, "done", [])


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    train(ToyTask(), config(steps=2, precision="bf16"), tmp_path)
    state = torch.load(ckpt.checkpoint_path(tmp_path), weights_only=True)
    assert state["step"] == 2 and set(state["ema"]) == {n for n, _ in ToyTask().model.named_parameters()}
    assert state["rng"][0]["numpy"][0] == "MT19937" and len(state["rng"][0]["python"][1]) == 625


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    real_save = torch.save
    calls = []

    def save_then_fill_the_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", save_then_fill_the_disk)
    path = ckpt.checkpoint_path(tmp_path)
    with pytest.raises(TrainingError, match=rf"No space left on device.*previous one at {path} is intact"):
        train(ToyTask(), config(steps=4, save_every=2), tmp_path)
    monkeypatch.undo()
    assert latest(tmp_path)["step"] == 2
    assert os.listdir(path.parent) == ["latest.pt"]  # the half-written temp file is gone


# -- non-finite steps ------------------------------------------------------------------------------------


def test_nan_steps_are_skipped_counted_and_training_finishes(tmp_path: Path) -> None:
    logger = ListLogger()
    before = [p.detach().clone() for p in ToyTask().model.parameters()]
    result = train(ToyTask(nan_steps=frozenset({1, 2, 4})), config(), tmp_path, logger=logger)
    assert (result.stopped, result.step, result.skipped_steps) == ("done", 6, 3)
    state = latest(tmp_path)
    assert all(t.isfinite().all() for t in state["model"].values())
    assert any(not torch.equal(b, state["model"][k]) for b, k in zip(before, state["model"], strict=True))
    train_logs = {step: values for step, values in logger.scalar_calls if "loss" in values}
    assert math.isnan(train_logs[2]["loss"]) and math.isfinite(train_logs[4]["loss"])  # step 2 ran index 1
    assert train_logs[6]["skipped_steps"] == 3


def test_a_hundred_nan_steps_in_a_row_stop_training(tmp_path: Path) -> None:
    task = ToyTask(nan_steps=range(10, 1000))
    with pytest.raises(TrainingError, match="NaN/inf for 100 steps in a row.*lower --lr"):
        train(task, config(steps=300, save_every=0, eval_every=0, log_every=50), tmp_path)
    assert max(step for step, *_ in task.calls) == 109


# -- optimisation pieces ---------------------------------------------------------------------------------


def test_lr_schedule_warmup_peak_and_end() -> None:
    from jukebox_cli.engine.train.loop import lr_factor

    cosine = TrainConfig(steps=110, warmup=10, decay="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cosine) == pytest.approx(0.1)  # warmup start: lr / warmup
    assert lr_factor(4, cosine) == pytest.approx(0.5)
    assert lr_factor(9, cosine) == lr_factor(10, cosine) == 1.0  # peak
    assert lr_factor(60, cosine) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_factor(110, cosine) == pytest.approx(0.1)  # min_lr_ratio at `steps`
    linear = TrainConfig(steps=110, warmup=10, decay="linear", min_lr_ratio=0.0)
    assert lr_factor(35, linear) == pytest.approx(0.75) and lr_factor(110, linear) == 0.0
    assert lr_factor(1000, TrainConfig(steps=110, warmup=10, decay="none")) == 1.0
    assert lr_factor(0, TrainConfig(warmup=0, decay="none")) == 1.0


def test_logged_lr_follows_the_schedule(tmp_path: Path) -> None:
    from jukebox_cli.engine.train.loop import lr_factor

    logger = ListLogger()
    cfg = config(steps=6, warmup=3, decay="linear", min_lr_ratio=0.2)
    train(ToyTask(), cfg, tmp_path, logger=logger)
    lrs = {step: values["lr"] for step, values in logger.scalar_calls if "lr" in values}
    assert lrs == {step: pytest.approx(1e-2 * lr_factor(step - 1, cfg)) for step in range(1, 7)}
    assert lrs[1] == pytest.approx(1e-2 / 3) and lrs[3] == pytest.approx(1e-2)


def test_ema_follows_mu_ema_plus_one_minus_mu_param(tmp_path: Path) -> None:
    task = ToyTask()
    params = [{n: p.detach().clone() for n, p in task.model.named_parameters()}]

    def after_each_step(event: Any) -> None:
        if isinstance(event, Advanced):
            params.append({n: p.detach().clone() for n, p in task.model.named_parameters()})

    task.nan_steps = frozenset({2})
    train(task, config(steps=4, ema=0.8, lr=0.1), tmp_path, progress=after_each_step)
    expected = dict(params[0])
    for step, current in enumerate(params[1:]):
        if step not in task.nan_steps:  # a skipped step leaves the EMA alone, as in the original
            mu = min(0.8, (1 + step) / (10 + step))  # the decay warms up (WeightEMA.decay_at)
            expected = {n: mu * expected[n] + (1 - mu) * current[n] for n in expected}
    ema = latest(tmp_path)["ema"]
    for name, value in expected.items():
        torch.testing.assert_close(ema[name], value, rtol=0, atol=1e-6)
    assert not torch.allclose(ema["0.weight"], params[-1]["0.weight"])


def test_grad_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    def gradients(grad_accum: int, folder: str) -> dict[str, torch.Tensor]:
        task = ToyTask(linear=True, noise=False, batch_size=8, parts=grad_accum)
        grads: dict[str, torch.Tensor] = {}
        for name, param in task.model.named_parameters():
            param.register_post_accumulate_grad_hook(lambda p, n=name: grads.__setitem__(n, p.grad.clone()))
        train(task, config(steps=1, grad_accum=grad_accum, clip=0.0, ema=None), tmp_path / folder)
        return grads

    one, two = gradients(1, "one"), gradients(2, "two")
    assert one.keys() == two.keys() == {"weight", "bias"}
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6)


def test_weight_decay_only_on_matrices(tmp_path: Path) -> None:
    train(ToyTask(), config(steps=1, weight_decay=0.1), tmp_path)
    groups = latest(tmp_path)["optimizer"]["param_groups"]
    assert [(g["weight_decay"], len(g["params"])) for g in groups] == [(0.1, 2), (0.0, 2)]


# -- what it reports -------------------------------------------------------------------------------------


def test_logger_receives_the_expected_scalars_and_media(tmp_path: Path) -> None:
    logger = ListLogger()
    result = train(ToyTask(), config(steps=4, log_every=2, eval_every=2), tmp_path, logger=logger)
    assert [step for step, _ in logger.scalar_calls] == [2, 2, 4, 4]
    keys = {"loss", "mse", "lr", "grad_norm", "skipped_steps", "steps_per_second", "samples_per_second"}
    assert set(logger.scalar_calls[0][1]) == keys
    assert set(logger.scalar_calls[1][1]) == {"eval_loss"}
    assert all(math.isfinite(v) for v in logger.scalar_calls[2][1].values())
    assert [(step, set(items)) for step, items in logger.media_calls] == [
        (2, {"prediction"}),
        (4, {"prediction"}),
    ]
    assert result.last_metrics == logger.scalar_calls[2][1]
    assert result.eval_metrics == {"loss": logger.scalar_calls[3][1]["eval_loss"]}


def test_progress_events(tmp_path: Path) -> None:
    events: list[Any] = []
    train(
        ToyTask(interrupt_at=3), config(steps=4, log_every=2, eval_every=0), tmp_path, progress=events.append
    )
    assert events[0] == StageStarted("train", 4, "step") and events[-1] == StageFinished("train")
    assert sum(isinstance(e, Advanced) for e in events) == 3
    metrics = [e for e in events if isinstance(e, TrainMetrics)]
    assert [m.step for m in metrics] == [2] and "loss" in metrics[0].values

    events.clear()
    train(
        ToyTask(), config(steps=4, log_every=2, eval_every=0), tmp_path, resume=True, progress=events.append
    )
    assert events[:2] == [StageStarted("train", 4, "step"), Advanced("train", 3)]
    assert events[2] == Advanced("train") and events[-1] == StageFinished("train")
    metrics = [e for e in events if isinstance(e, TrainMetrics)]
    assert [m.step for m in metrics] == [4, 4] and "eval_loss" in metrics[1].values


# -- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"steps": 0},
        {"lr": 0.0},
        {"decay": "step"},
        {"min_lr_ratio": 1.5},
        {"betas": (0.9, 1.0)},
        {"grad_accum": 0},
        {"ema": 1.0},
        {"precision": "fp8"},
        {"log_every": 0},
        {"clip": -1.0},
    ],
)
def test_config_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(changes))):
        TrainConfig(**changes)


def test_config_round_trips_through_json() -> None:
    cfg = TrainConfig(betas=(0.8, 0.99), ema=None, precision="bf16")
    assert TrainConfig.from_dict(ckpt.plain(cfg.to_dict())) == cfg


def test_fp16_is_refused_on_cpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(ToyTask(), config(precision="fp16"), tmp_path)
    assert not (tmp_path / "train.json").exists()


def test_fp16_loss_scaling_skips_overflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GradScaler branch, exercised on CPU (CPU autocast does fp16 too; users only get it on CUDA)."""
    from jukebox_cli.engine.train import loop

    monkeypatch.setattr(loop, "FP16_DEVICES", ("cuda", "cpu"))
    logger = ListLogger()
    task = ToyTask(nan_steps=frozenset({1, 3}))
    result = train(task, config(precision="fp16"), tmp_path, logger=logger)
    assert (result.stopped, result.step, result.skipped_steps) == ("done", 6, 2)
    scales = [values["loss_scale"] for _, values in logger.scalar_calls if "loss_scale" in values]
    assert scales == [65536.0, 32768.0, 32768.0, 16384.0, 16384.0, 16384.0]  # halved on each overflow
    state = latest(tmp_path)
    assert state["scaler"]["scale"] == 16384.0 and all(t.isfinite().all() for t in state["model"].values())
    resumed = train(ToyTask(), config(precision="fp16", steps=8), tmp_path, resume=True, logger=logger)
    assert resumed.step == 8 and logger.scalar_calls[-2][1]["loss_scale"] == 16384.0
