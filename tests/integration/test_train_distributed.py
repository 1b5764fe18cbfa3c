"""Data-parallel training as users launch it: torchrun, 2 CPU processes, gloo, the toy task of the loop tests."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jukebox_cli.engine.errors import TrainingError
from jukebox_cli.engine.train import checkpoint as ckpt
from jukebox_cli.engine.train import distributed
from tests.unit.test_train_loop import assert_same_run

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from tests.unit.test_train_loop import ListLogger, ToyTask
from jukebox_cli.engine.train import distributed
from jukebox_cli.engine.train.loop import TrainConfig, train

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
# Different initial weights on each rank: DDP must start every rank from rank 0's.
task = ToyTask(seed=rank, batch_size=8, parts=2)
config = TrainConfig(steps=30, lr=1e-2, warmup=3, grad_accum=2, ema=0.9, save_every=10, eval_every=15, log_every=1)
logger = ListLogger()
result = train(task, config, out / "run", logger=logger)
torch.save({n: p.detach() for n, p in task.model.named_parameters()}, out / f"rank{rank}.pt")
# The same run again, with Ctrl-C on rank 1 only in the middle of step index 12, then resumed.
stopped = train(ToyTask(seed=rank, batch_size=8, parts=2, signal_at=12 if rank else None), config, out / "b")
resumed = train(ToyTask(seed=7, batch_size=8, parts=2), config, out / "b", resume=True)
(out / f"rank{rank}.json").write_text(json.dumps({
    "world": distributed.get_world_size(), "step": result.step, "stopped": result.stopped,
    "losses": [v["loss"] for _, v in logger.scalar_calls if "loss" in v],
    "batches": sorted({(s, m, r, w) for s, m, r, w in task.calls}),
    "interrupted": [stopped.stopped, stopped.step], "resumed": [resumed.stopped, resumed.step],
}))
distributed.teardown()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_training_with_torchrun(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script), str(tmp_path),
    ]  # fmt: skip
    # PyTorch deprecations triggered by our DDP call (broadcast_buffers in 2.13) fail the run.
    warnings = "error::FutureWarning:jukebox_cli.engine.train.distributed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": warnings}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world"], r["step"], r["stopped"]) for r in ranks] == [(2, 30, "done")] * 2
    # Each rank drew its own data, both micro steps of every step.
    assert {tuple(b[2:]) for b in ranks[1]["batches"]} == {(1, 2)} and len(ranks[0]["batches"]) == 60
    # Only rank 0 logs; its losses are averaged over ranks and go down.
    losses = ranks[0]["losses"]
    assert ranks[1]["losses"] == [] and len(losses) == 30
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.75 * sum(losses[:5])

    params = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, value in params[0].items():
        assert torch.equal(value, params[1][name]), name
        assert value.isfinite().all()

    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "toy.safetensors", "train.json"]
    assert os.listdir(run / "checkpoints") == ["latest.pt"]
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run))
    assert state["step"] == 30 and json.loads((run / "train.json").read_text())["config"]["grad_accum"] == 2
    for name, value in params[0].items():  # saved from the unwrapped model: no "module." prefix
        assert torch.equal(state["model"][name], value)
    # Every rank's RNG is saved (they differ: each rank was seeded with seed + rank).
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])

    # Ctrl-C on one rank stops both after the same step; resuming gives the uninterrupted run exactly.
    assert [(r["interrupted"], r["resumed"]) for r in ranks] == [(["interrupted", 13], ["done", 30])] * 2
    assert_same_run(state, ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "b")))


# -- the helpers in one process --------------------------------------------------------------------------


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_single_process_is_not_distributed(no_torchrun: pytest.MonkeyPatch) -> None:
    info = distributed.setup("cpu")
    assert (info.rank, info.world, info.local_rank, info.device) == (0, 1, 0, torch.device("cpu"))
    assert not distributed.is_distributed() and distributed.is_main()
    assert distributed.all_reduce_mean({"loss": 2, "lr": 0.5}) == {"loss": 2.0, "lr": 0.5}
    assert distributed.any_rank([True, False]) == [True, False]
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    model = torch.nn.Linear(2, 1)
    assert distributed.unwrap(model) is model
    distributed.barrier()
    distributed.teardown()


def test_setup_needs_torchrun_variables(no_torchrun: pytest.MonkeyPatch) -> None:
    no_torchrun.setenv("WORLD_SIZE", "2")
    no_torchrun.setenv("RANK", "0")
    with pytest.raises(TrainingError, match="MASTER_ADDR and MASTER_PORT not set"):
        distributed.setup("cpu")
    no_torchrun.setenv("RANK", "2")
    with pytest.raises(TrainingError, match="RANK=2 is outside WORLD_SIZE=2"):
        distributed.setup("cpu")
