"""Fully sharded training under torchrun (2 CPU processes, gloo): equal to one process over the same global
batch, stopped and resumed exactly, resumed on another world size (both ways), exported in the native layout."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from jukebox_cli.engine.models.transformer import Transformer
from jukebox_cli.engine.train import checkpoint as ckpt
from tests.integration.test_train_distributed import free_port
from tests.unit.test_train_loop import assert_identical

REPO = Path(__file__).resolve().parents[2]
VOCAB, WIDTH, LENGTH = 16, 16, 8


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.transformer = Transformer(WIDTH, LENGTH, 2, 2, [0, 0], blocks=None)
        self.out = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.transformer(self.emb(tokens)))  # (B, T, VOCAB)


class TokenTask:
    """Next-token prediction on a fixed random rule; the global batch of a step is split evenly over ranks,
    so one process and two see the same data. No dropout, no noise: runs differ only by how they compute."""

    def __init__(
        self, *, seed: int = 0, batch_size: int = 8, signal_at: int | None = None, sleep: float = 0.0
    ) -> None:
        torch.manual_seed(seed)
        self.model = TokenModel()
        self.batch_size, self.signal_at, self.sleep = batch_size, signal_at, sleep

    def train_batch(self, step: int, micro: int, rank: int, world: int) -> dict[str, Any]:
        time.sleep(self.sleep)
        generator = torch.Generator().manual_seed(1000 * step + micro)
        start = torch.randint(0, VOCAB, (self.batch_size, 1), generator=generator)
        tokens = (start + 3 * torch.arange(LENGTH + 1)) % VOCAB  # (B, T + 1)
        return {"tokens": tokens.chunk(world)[rank], "step": step}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = batch["tokens"]
        logits = model(tokens[:, :-1])
        if batch["step"] == self.signal_at:
            self.signal_at = None
            os.kill(os.getpid(), 15)
        return F.cross_entropy(logits.float().reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)), {}

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        return {"loss": float(self.loss(model, self.train_batch(10_000, 0, 0, 1))[0])}

    def media(self, model: nn.Module, step: int) -> dict[str, Any]:
        return {}

    def export(self, model: nn.Module, folder: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(Path(folder) / "tokens.safetensors"))

    def config(self) -> dict:
        return {"kind": "tokens"}


SCRIPT = """
import json, os, sys
from pathlib import Path
from tests.integration.test_train_fsdp import TokenTask
from jukebox_cli.engine.train import distributed
from jukebox_cli.engine.train.loop import TrainConfig, train

out, what = Path(sys.argv[1]), sys.argv[2]
rank = int(os.environ.get("RANK", "0"))
def config(**changes):
    values = dict(steps=6, lr=1e-2, warmup=2, grad_accum=2, ema=0.9, save_every=3, eval_every=3, log_every=1,
                  strategy="fsdp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "none")
    return TrainConfig(**{**values, **changes})
results = {}
if what == "fsdp":
    # Different initial weights on each rank: rank 0's must be the ones trained.
    results["a"] = train(TokenTask(seed=rank), config(checkpoint_activations=True), out / "a").stopped
    stopped = train(TokenTask(seed=rank, signal_at=4 if rank else None), config(), out / "b")
    results["b"] = [stopped.stopped, stopped.step]
    # What a kill -9 in the middle of a later save leaves: a partial folder that latest.pt does not name.
    if rank == 0:
        (out / "b" / "checkpoints" / "step-00000099.dcp").mkdir()
        (out / "b" / "checkpoints" / "step-00000099.dcp" / "__0_0.distcp").write_bytes(b"half a shard")
    resumed = train(TokenTask(seed=9), config(checkpoint_activations=True), out / "b", resume=True)
    results["b_resumed"] = [resumed.stopped, resumed.step]
    results["bf16"] = train(TokenTask(seed=rank), config(precision="bf16"), out / "bf16").step
elif what == "single":
    results["single"] = train(TokenTask(), config(), out / "single").step
elif what == "to-fsdp":  # a one-process run continued by two sharded processes
    results["to-fsdp"] = train(TokenTask(seed=rank), config(steps=8), out / "single", resume=True).step
elif what == "reference":  # the same continued in one process
    results["reference"] = train(TokenTask(seed=3), config(steps=8), out / "single-copy", resume=True).step
elif what == "kill":  # slow steps, a checkpoint every 2: the test kills it somewhere in between
    (out / f"pid{rank}").write_text(str(os.getpid()))
    train(TokenTask(sleep=0.05), config(steps=30, save_every=2), out / "killed", handle_signals=False)
elif what == "killed-resume":
    results["killed"] = train(TokenTask(), config(steps=30, save_every=2), out / "killed", resume=True).step
elif what == "kill-reference":
    results["reference"] = train(TokenTask(), config(steps=30, save_every=2), out / "kill-reference").step
elif what == "reshard":
    results["reshard"] = train(TokenTask(seed=5), config(steps=8), out / "a", resume=True).step
(out / f"{what}-rank{rank}.json").write_text(json.dumps(results))
distributed.teardown()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _command(tmp_path: Path, what: str, nproc: int) -> list[str]:
    script = tmp_path / "fsdp_train.py"
    script.write_text(SCRIPT)
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script), str(tmp_path), what]  # fmt: skip
    return [sys.executable, str(script), str(tmp_path), what]


def _run(tmp_path: Path, what: str, nproc: int) -> None:
    command = _command(tmp_path, what, nproc)
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]


def _full(run: Path) -> dict[str, torch.Tensor]:
    """A run's model weights (sharded or not) as plain tensors, read in this process (DCP without a group)."""
    from torch.distributed.checkpoint import load

    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run))
    if state["sharded"] is None:
        return {"model": state["model"], "ema": state["ema"], "step": state["step"]}
    model = TokenModel()
    tensors = {
        "model": dict(model.state_dict()),
        "ema": {n: p.detach().clone() for n, p in model.named_parameters()},
    }
    load(tensors, checkpoint_id=str(run / "checkpoints" / state["sharded"]))
    return {**tensors, "step": state["step"]}


def _everything(run: Path, scratch: Path) -> dict[str, Any]:
    """Every tensor of a sharded checkpoint (model, optimizer, EMA, buffers), gathered into one dict."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run))
    target = scratch / f"{run.name}-full.pt"
    dcp_to_torch_save(run / "checkpoints" / state["sharded"], target)
    return torch.load(target, weights_only=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fsdp_equals_one_process_resumes_exactly_and_reshards(tmp_path: Path) -> None:
    _run(tmp_path, "fsdp", 2)
    _run(tmp_path, "single", 1)
    ranks = [json.loads((tmp_path / f"fsdp-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == {"a": "done", "b": ["interrupted", 5], "b_resumed": ["done", 6], "bf16": 6}

    # Two processes with half the batch each, sharded, equal one process with the whole batch.
    sharded, single = _full(tmp_path / "a"), _full(tmp_path / "single")
    assert sharded["step"] == single["step"] == 6
    for name, value in single["model"].items():
        torch.testing.assert_close(sharded["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(sharded["ema"][name], single["ema"][name], rtol=1e-4, atol=1e-5)
    # Only the latest sharded folder is kept, next to latest.pt.
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["latest.pt", "step-00000006.dcp"]

    # The export is the native single file a one-process run writes: the same keys, the EMA weights.
    exported = safetensors.torch.load_file(str(tmp_path / "a" / "tokens.safetensors"))
    reference = safetensors.torch.load_file(str(tmp_path / "single" / "tokens.safetensors"))
    assert exported.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(exported[name], value, rtol=1e-4, atol=1e-5, msg=name)
        if name in sharded["ema"]:
            torch.testing.assert_close(exported[name], sharded["ema"][name], rtol=0, atol=0)

    # Stopped by SIGTERM on one rank after step 5, then resumed (with recomputed activations): bit-identical
    # to the run that went through, optimizer included.
    stopped = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "b"))
    through = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "a"))
    for key in ("step", "skipped_steps", "rng"):
        assert_identical(stopped[key], through[key], key)
    assert_identical(_everything(tmp_path / "b", tmp_path), _everything(tmp_path / "a", tmp_path))
    # The partial folder a kill left was ignored on resume and removed by the next save.
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["latest.pt", "step-00000006.dcp"]

    # A one-process run continues under fsdp (its whole-model checkpoint read by each rank, then sharded) as
    # it would have continued alone.
    shutil.copytree(tmp_path / "single", tmp_path / "single-copy")
    _run(tmp_path, "to-fsdp", 2)
    _run(tmp_path, "reference", 1)
    continued, reference = _full(tmp_path / "single"), _full(tmp_path / "single-copy")
    assert continued["step"] == reference["step"] == 8
    for name, value in reference["model"].items():
        torch.testing.assert_close(continued["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        torch.testing.assert_close(continued["ema"][name], reference["ema"][name], rtol=1e-4, atol=1e-5)

    # The 2-process sharded run continues in one unsharded process (DCP reshards on load).
    _run(tmp_path, "reshard", 1)
    assert json.loads((tmp_path / "reshard-rank0.json").read_text()) == {"reshard": 8}
    continued = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "a"))
    assert continued["step"] == 8 and continued["sharded"] is None
    assert all(t.isfinite().all() for t in continued["model"].values())
    assert any(not torch.equal(continued["model"][n], v) for n, v in sharded["model"].items())


def test_fsdp_resume_after_kill_9_equals_uninterrupted(tmp_path: Path) -> None:
    run = tmp_path / "killed"
    child = subprocess.Popen(_command(tmp_path, "kill", 2), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)  # fmt: skip

    def kill_all() -> None:  # both workers and torchrun at once, as a node failure would
        for rank in (0, 1):
            pid_file = tmp_path / f"pid{rank}"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
        child.kill()

    try:
        deadline = time.monotonic() + 120
        while not ckpt.checkpoint_path(run).exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(0.4)  # somewhere in the following steps, or in the middle of a save
        kill_all()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            kill_all()
            child.wait()
    for rank in (0, 1):  # the workers are gone before the resume takes the run folder
        pid = int((tmp_path / f"pid{rank}").read_text())
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    killed_at = ckpt.load_checkpoint(ckpt.checkpoint_path(run))["step"]
    assert 2 <= killed_at < 30

    _run(tmp_path, "killed-resume", 2)
    _run(tmp_path, "kill-reference", 2)
    assert json.loads((tmp_path / "killed-resume-rank0.json").read_text()) == {"killed": 30}
    assert_identical(_everything(run, tmp_path), _everything(tmp_path / "kill-reference", tmp_path))
    assert sorted(os.listdir(run / "checkpoints")) == ["latest.pt", "step-00000030.dcp"]
