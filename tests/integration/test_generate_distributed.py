"""Sampling one run with several processes, as users launch it: torchrun, 2 CPU processes, gloo, tiny-random."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
ARGS = ("--model", "tiny-random", "--device", "cpu", "--duration", "1", "--seed", "3")

# Runs the CLI's entry point in each process, with hooks the test needs: a Ctrl-C or an error at a chosen
# window, and a record of every file each rank writes (every run file is written by os.replace) or locks.
SCRIPT = """
import json, os, sys
from pathlib import Path
import jukebox_cli.engine.locks as locks
import jukebox_cli.engine.sampling.level as level
from jukebox_cli.cli.app import main
from jukebox_cli.engine.errors import ConfigError

out, stop, args = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
rank = int(os.environ["RANK"])
log = open(out / f"rank{rank}.log", "w", buffering=1)  # line by line: torchrun may stop rank 1 at any time
real_replace, real_hold, real_window = os.replace, locks.hold_folder, level.sample_window

def replace(src, dst, *a, **k):
    print(dst, file=log)
    return real_replace(src, dst, *a, **k)

def hold(folder, *a, **k):
    print("lock", folder, file=log)
    return real_hold(folder, *a, **k)

calls = {"n": 0}

def window(prior, *a, **k):
    calls["n"] += prior.config.level == stop["level"]
    if calls["n"] == stop["window"] and rank in stop["ranks"]:
        raise KeyboardInterrupt if stop["kind"] == "interrupt" else ConfigError("boom on rank %d" % rank)
    return real_window(prior, *a, **k)

os.replace, locks.hold_folder, level.sample_window = replace, hold, window
import jukebox_cli.engine.sampling.generation as generation
generation.hold_folder = hold
try:
    main(args)
except SystemExit as exit_:
    print("exit", exit_.code, file=log)
    raise
"""


def _torchrun(tmp_path: Path, *args: str, stop: dict | None = None) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
              "127.0.0.1", "--master-port", str(free_port())]  # fmt: skip
    if stop is None:  # the command exactly as the README gives it
        command = [*launch, "-m", "jukebox_cli", *args]
    else:
        script = tmp_path / "hooked.py"
        script.write_text(SCRIPT)
        command = [*launch, str(script), str(tmp_path), json.dumps(stop), *args]
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log(tmp_path: Path, rank: int) -> list[str]:
    return (tmp_path / f"rank{rank}.log").read_text().splitlines()


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}


def _one_process(*args: str) -> subprocess.CompletedProcess:
    """``python -m jukebox_cli`` in one process, under the thread count torchrun gives its workers."""
    command = [sys.executable, "-m", "jukebox_cli", *args]
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)


def _assert_same_run(a: Path, b: Path, levels=(2, 1, 0), takes: int = 3) -> None:
    for level in levels:
        codes = [load_file(run / f"level_{level}" / "codes.safetensors")["codes"] for run in (a, b)]
        assert codes[0].shape[0] == takes and torch.equal(*codes), f"level {level}"
        for take in range(takes):
            audio = [(run / f"level_{level}" / f"item_{take}.wav").read_bytes() for run in (a, b)]
            assert audio[0] == audio[1], f"level {level} take {take}"
    settings = [json.loads((run / "run.json").read_text())["settings"] for run in (a, b)]
    assert settings[0] == settings[1]


def test_two_processes_sample_what_one_process_samples(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    done = _one_process("generate", *ARGS, "-n", "3", "--quiet", "-o", str(one))
    assert done.returncode == 0, done.stderr
    done = _torchrun(tmp_path, "generate", *ARGS, "-n", "3", "-o", str(two))
    assert done.returncode == 0, done.stdout + done.stderr
    # 3 takes over 2 ranks (2 + 1), each with its own random stream: the same codes and audio, bit for bit.
    _assert_same_run(one, two)
    assert json.loads((two / "run.json").read_text())["state"]["processes"] == 2
    # Rank 0 alone speaks: one plan, one line per finished level, one closing line.
    assert done.stderr.count("Plan:") == 1 and done.stderr.count("level 0 ready") == 1
    assert done.stderr.count("done in") == 1 and "one of 2 processes sharing the takes" in done.stderr


def test_stopped_two_process_run_resumes_in_one(tmp_path: Path) -> None:
    reference, run = tmp_path / "reference", tmp_path / "run"
    args = (*ARGS, "-n", "3", "--quiet")
    assert _one_process("generate", *args, "-o", str(reference)).returncode == 0
    # Ctrl-C reaches every process: here both stop while sampling the second window of level 1.
    stop = {"level": 1, "window": 2, "ranks": [0, 1], "kind": "interrupt"}
    done = _torchrun(tmp_path, "generate", *args, "-o", str(run), stop=stop)
    assert done.returncode != 0
    logs = [_log(tmp_path, rank) for rank in (0, 1)]
    assert logs[0][-1] == "exit 130" and "stopped:" in done.stderr and done.stderr.count("resume with") == 1
    # Rank 0 alone held the folder and wrote in it; rank 1 wrote nothing at all.
    # (rank 1 may be ended by torchrun, which terminates the others once rank 0 has exited: at once, or
    # through the SIGTERM handler)
    assert logs[1] in ([], ["exit 130"], ["exit 143"]) and logs[0][0] == f"lock {run}"
    assert all(line == f"lock {run}" or line.startswith(f"{run}/") for line in logs[0][:-1])
    assert f"{run}/level_1/codes.safetensors" in logs[0]
    with safe_open(str(run / "level_1" / "codes.safetensors"), "pt") as saved:  # the first window's codes
        assert saved.metadata()["windows_done"] == "1" and saved.get_slice("codes").get_shape() == [3, 256]
    assert not (run / "level_0").exists()

    done = _one_process("generate", "--resume", "--quiet", "-o", str(run))
    assert done.returncode == 0, done.stderr
    _assert_same_run(reference, run)


def test_upsample_stopped_under_two_processes_resumes_under_two(tmp_path: Path) -> None:
    takes, one, two = tmp_path / "takes", tmp_path / "one", tmp_path / "two"
    assert (
        _one_process("generate", *ARGS, "-n", "3", "--levels", "2", "--quiet", "-o", str(takes)).returncode
        == 0
    )
    upsample = ("upsample", str(takes), "--takes", "2,0,1", "--device", "cpu", "--quiet")
    assert _one_process(*upsample, "-o", str(one)).returncode == 0
    stop = {"level": 0, "window": 2, "ranks": [0, 1], "kind": "interrupt"}
    assert _torchrun(tmp_path, *upsample, "-o", str(two), stop=stop).returncode != 0
    assert (two / "level_2" / "item_2.wav").exists() and not (two / "level_0" / "item_0.wav").exists()
    with safe_open(str(two / "level_0" / "codes.safetensors"), "pt") as saved:
        assert saved.metadata()["windows_done"] == "1"
    done = _torchrun(tmp_path, "generate", "--resume", "--device", "cpu", "--quiet", "-o", str(two))
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_same_run(one, two)


def test_an_error_on_one_rank_stops_both_and_rank_0_reports_it(tmp_path: Path) -> None:
    stop = {"level": 2, "window": 2, "ranks": [1], "kind": "error"}
    done = _torchrun(tmp_path, "generate", *ARGS, "-n", "2", "--levels", "2", "-o", str(tmp_path / "run"),
                     stop=stop)  # fmt: skip
    assert done.returncode != 0
    # Rank 0 exits with the code of rank 1's error (a ConfigError: 2), named by its rank, printed once.
    assert _log(tmp_path, 0)[-1] == "exit 2" and _log(tmp_path, 1) in (
        [],
        ["exit 1"],
        ["exit 143"],
    )  # 143: ended by torchrun
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rank 1: boom on rank 1"], done.stderr


def test_fewer_takes_than_processes_is_refused(tmp_path: Path) -> None:
    done = _torchrun(tmp_path, "generate", *ARGS, "-n", "1", "--levels", "2", "-o", str(tmp_path / "run"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 2 processes share 1 take(s)"), done.stderr
    assert "Plan:" not in done.stderr  # refused before the plan, as a refusal of the folder is
    assert not (tmp_path / "run").exists()
