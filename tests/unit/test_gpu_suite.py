"""The GPU suite's CPU-side logic: model materialisation, bytes per step, timing arithmetic, the cascade
estimate, targets and reports (bench/gpu_suite.py and its helpers). The GPU itself is exercised only on the
device; ``test_smoke_run_writes_reports`` runs the whole flow on the CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import _gpu_models as models
from bench import _gpu_report as report
from bench import _gpu_worker as worker
from bench import gpu_suite
from jukebox_cli.engine.models.transformer import BLOCK, DENSE, PREVIOUS, PRIME, TRANSPOSE

ROOT = Path(__file__).resolve().parents[2]


# -- models ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(models.SMOKE_SIZES))
def test_materialised_models_are_complete_and_tied(preset: str) -> None:
    config = models.config_for(preset, smoke=True)
    prior = models.build_ours(config, "cpu")
    tensors = [*prior.parameters(), *prior.buffers()]
    assert all(t.device.type == "cpu" and torch.isfinite(t.float()).all() for t in tensors)
    assert all(t.float().std() > 0 for t in tensors if t.numel() > 1)  # every tensor was drawn
    if not config.merged_decoder:
        assert prior.prior.x_out.weight is prior.prior.x_emb.weight
    conv_weights = {k for k in models.linear_weight_keys(prior)}
    assert conv_weights and all(
        p.dtype == torch.bfloat16 for k, p in prior.named_parameters() if k in conv_weights
    )
    assert prior.prior.x_emb.weight.dtype == torch.float32


def test_reference_built_on_meta_matches_ours_with_the_same_weights() -> None:
    pytest.importorskip("jukebox_infer")
    from jukebox_cli.engine.checkpoints.layouts import import_state_dict
    from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window
    from tests.oracle_priors import reference_sample

    config = models.config_for("1b_lyrics", smoke=True)
    reference = models.build_reference("1b_lyrics", config, "cpu", seed=3)
    ours = models.build_ours(config, "cpu", linear_dtype=None)
    import_state_dict(ours, reference.state_dict(), "original")
    codes, labels, _ = models.make_inputs(config, 2, "cpu")
    got = sample_window(ours, codes[:, :20], 12, labels, settings=SamplingSettings(greedy=True))
    assert torch.equal(got, reference_sample(reference, codes[:, :20], 12, labels, chunk_size=32))


def test_inputs_pass_the_label_checks_at_batch_16() -> None:
    for preset in models.SMOKE_SIZES:
        config = models.config_for(preset, smoke=True)
        prior = models.build_ours(config, "cpu")
        _, labels, upper = models.make_inputs(config, 16, "cpu")
        prior.conditioning(labels, upper)  # raises ConfigError on a bad label


@pytest.mark.parametrize("func", [BLOCK, TRANSPOSE, PREVIOUS, DENSE, PRIME])
def test_keys_read_counts_what_the_attention_mask_allows(func: int) -> None:
    from jukebox_cli.engine.models.transformer import Attention

    attn = Attention(16, 8, 2, func, 64, 4, prime_len=9)  # block_ctx 16, prime keys 12
    for position in range(64):
        allowed = attn._mask(position, position + 1, 0, position + 1, torch.device("cpu"))
        expected = int(allowed[:, : attn.prime_keys].sum() if func == PRIME else allowed.sum())
        assert models.keys_read(func, position, attn.block_ctx, attn.prime_keys, 0) == expected, position


def test_bytes_per_step() -> None:
    config = models.config_for("5b", smoke=True)
    prior = models.build_ours(config, "cpu")
    transformer = sum(p.numel() * p.element_size() for p in prior.prior.transformer.parameters())
    head = prior.prior.x_out.weight.numel() * 4
    assert models.weight_bytes_per_step(prior) == transformer + head
    n_state = prior.prior.transformer._attn_mods[0].attn.n_state
    position = 40  # block_ctx 16: block 8 keys, transpose 3, previous 16
    assert models.kv_bytes_per_step(prior, position, 3, 2) == 2 * (9 + 3 + 16) * n_state * 2 * 3


# -- timing arithmetic -------------------------------------------------------------------------------------------


class _FakeRunner(worker.Runner):
    """A window costs 0.5 s fixed (more on the first call), 1 ms per known code and 10 ms per new one."""

    def __init__(self) -> None:
        self.calls = 0

    def time(self, n_known: int, n_new: int) -> float:
        self.calls += 1
        return 0.5 + 0.001 * n_known + 0.01 * n_new + (2.0 if self.calls == 1 else 0.0)


def test_decode_rate_by_difference() -> None:
    runner = _FakeRunner()
    stats = worker.decode_rate(runner, n_known=100, n_short=8, n_new=64, repeats=3, budget_s=1e9,
                               deadline=math.inf)  # fmt: skip
    assert stats["per_step_s"] == pytest.approx(0.01) and stats["repeats"] == 3
    assert stats["capture_s"] == pytest.approx(2.0) and stats["fixed_s"] == pytest.approx(0.6)
    assert not stats["noisy"]
    priming = worker.priming_rate(runner, k_small=100, k_big=1100)  # warm: after the decode measurement
    assert priming["prime_codes_per_s"] == pytest.approx(1000) and priming["window_fixed_s"] == pytest.approx(
        0.51
    )


def test_decode_rate_stops_at_its_budget() -> None:
    runner = _FakeRunner()
    stats = worker.decode_rate(
        runner, n_known=0, n_short=8, n_new=64, repeats=5, budget_s=0.0, deadline=math.inf
    )
    assert stats["repeats"] == 1 and runner.calls == 3


def test_a_mode_the_code_lacks_is_unavailable_not_an_error() -> None:
    prior = models.build_ours(models.config_for("5b", smoke=True), "cpu")
    with pytest.raises(worker.Unavailable):
        worker.make_decoder(prior, "no-such-mode", 1, torch.device("cpu"))
    with pytest.raises(worker.Unavailable):  # CUDA graphs on a CPU
        worker.make_decoder(prior, worker.CAPTURE_ONLY, 1, torch.device("cpu"))


# -- derived numbers and reports ------------------------------------------------------------------------------


def _row(kind, preset, batch, mode, per_step, depth=72, **extra):
    return dict(kind=kind, preset=preset, batch=batch, mode=mode, status="ok", per_step_s=per_step,
                steps_per_s=1 / per_step, tokens_per_s=batch / per_step, depth=depth, **extra)  # fmt: skip


def _state(rows, copy_bandwidth=4.0e12):
    state = report.State(meta=dict(budget_s=450, big_batch=16, started="now", device="cuda"))
    state.env["measured"] = {"copy": dict(bandwidth_best=copy_bandwidth, bandwidth_median=copy_bandwidth,
                                          bytes_moved=4e9)}  # fmt: skip
    state.rows = rows
    return state


def test_interpolate_in_batch() -> None:
    assert report.interpolate([(1, 1.0), (16, 2.5)], 3) == (
        pytest.approx(1.2),
        "interpolated between batch 1 and 16",
    )
    assert report.interpolate([(1, 1.0), (3, 7.0)], 3)[0] == 7.0
    assert report.interpolate([(1, 1.0)], 3) == (1.0, "batch 1 (nearest measured; not interpolated)")


def test_cascade_counts_windows_with_plan_level() -> None:
    rate = report.LevelRate(
        per_step_s=0.002, prime_codes_per_s=1e4, window_fixed_s=0.1, setup_s=5.0, source="x"
    )
    c = report.cascade_estimate({"1b_lyrics": rate, "upsampler_level_0": rate})
    by_level = {e["level"]: e for e in c["levels"]}
    assert c["sample_length"] == 2645888  # 60 s at 44.1 kHz, a multiple of 128
    assert [by_level[lv]["codes"] for lv in (2, 1, 0)] == [20671, 82684, 330736]
    assert all(by_level[lv]["new_codes"] == by_level[lv]["codes"] for lv in (2, 1, 0))
    assert by_level[2]["advance"] == 768 and by_level[0]["advance"] == 4096
    seconds = sum(
        5 + e["windows"] * 0.1 + e["context_codes"] / 1e4 + e["new_codes"] * 0.002 for e in c["levels"]
    )
    assert c["minutes"] == pytest.approx(seconds / 60) and not c["lower_bound"]
    partial = report.cascade_estimate({"1b_lyrics": rate})
    assert partial["minutes"] is None


def test_targets_and_ratios() -> None:
    rows = [
        _row("ours", "upsampler_level_0", 1, "graph", 0.001, bytes_per_step=2e9),
        _row("ours", "upsampler_level_0", 1, "eager", 0.030, bytes_per_step=2e9),
        _row("ours", "upsampler_level_0", 16, "graph", 0.0012, bytes_per_step=2.5e9),
        _row("reference", "upsampler_level_0", 1, "fp16", 0.040),
        _row("ours", "1b_lyrics", 1, "graph", 0.002),
        _row("reference", "1b_lyrics", 1, "fp16", 0.030 / 2, depth=36),  # built with half the layers
        _row("ours", "5b", 1, "graph", 0.004, bytes_per_step=10e9),
        dict(kind="ours", preset="5b", batch=16, mode="graph", status="error", error="CUDA out of memory"),
    ]
    derived = report.derive(_state(rows))
    status = {t["target"]: t for t in derived["targets"]}
    ups = status["upsampler (level 0 size): ours/reference at batch 1 >= 20x"]
    assert ups["status"] == "met" and ups["value"] == pytest.approx(40)
    one_b = status["1b_lyrics top: ours/reference at batch 1 >= 20x"]
    assert one_b["status"] == "not met" and one_b["value"] == pytest.approx(15)  # 0.030 s at full depth
    hbm = status["5b top prior: >= 50% of HBM bandwidth (batch 1, vs measured copy)"]
    assert hbm["status"] == "met" and hbm["value"] == pytest.approx(10e9 / 0.004 / 4.0e12)
    assert status["upsampler (level 0 size): 16 samples cost <= 1.5x the time of 1"]["status"] == "met"
    assert status["5b top: 16 samples cost <= 1.5x the time of 1"]["status"] == "not measured"
    cascade = status["full cascade, 60 s x 3 samples of 1b_lyrics, <= 10 minutes"]
    assert cascade["status"] in ("met", "not met") and "lower bound" in cascade["detail"]
    rates = report.level_rates(_state(rows), derived["speed"])
    assert rates["upsampler_level_0"].per_step_s == pytest.approx(0.001 + 0.0002 * 2 / 15)  # graph, 1 and 16
    assert "optimistic" in rates["1b_lyrics"].source  # measured at batch 1 only
    text = report.markdown(_state(rows), derived)
    assert "CUDA out of memory" in text and "built with depth 36" in text


def test_reports_survive_an_empty_state(tmp_path: Path) -> None:
    state = report.State(meta=dict(budget_s=450, started="now", device="cuda"))
    report.write_reports(tmp_path, state, report.derive(state))
    assert "not measured" in (tmp_path / "results.md").read_text()
    reloaded = report.load_state(tmp_path / "results.json")
    assert reloaded.meta == json.loads((tmp_path / "results.json").read_text())["meta"]


def test_pytest_summary() -> None:
    text = "....s\n2 failed, 20 passed, 4 skipped in 31.2s\n"
    assert gpu_suite.pytest_summary(text) == {"failed": 2, "passed": 20, "skipped": 4}


def test_plan_orders_sections_by_value() -> None:
    args = gpu_suite.parse_args(["--out", "x"])
    sections = [t.section for t in gpu_suite.plan_tasks(args)]
    order = [s for s in gpu_suite.SECTIONS if s not in gpu_suite.PYTEST_SECTIONS]
    assert [s for i, s in enumerate(sections) if s not in sections[:i]] == order
    assert order[:7] == ["environment", "ours_b1", "reference_b1", "ours_b16", "cascade", "5b", "graph_b1"]
    pytest_files = [f for files, _ in gpu_suite.PYTEST_SECTIONS.values() for f in files]
    assert sorted(pytest_files) == sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests/gpu").glob("test_*.py")
    )
    one = gpu_suite.plan_tasks(gpu_suite.parse_args(["--out", "x", "--sections", "5b"]))
    assert {t.section for t in one} == {"5b"}


@pytest.mark.slow
def test_smoke_run_writes_reports(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "bench/gpu_suite.py", "--smoke", "--device", "cpu", "--out", str(tmp_path),
         "--sections", "environment,ours_b1,cascade", "--budget", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["env"]["measured"]["copy"]["bandwidth_best"] > 0
    eager = [r for r in data["rows"] if r.get("mode") == "eager" and r["kind"] == "ours"]
    assert {r["preset"] for r in eager} == {"upsampler_level_0", "1b_lyrics"}
    assert all(r["status"] == "ok" and r["per_step_s"] > 0 for r in eager)
    assert data["derived"]["cascade"]["minutes"] > 0
    assert "## Targets" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["crash", "hang", "poison"])
def test_a_crash_a_hang_or_a_broken_context_costs_only_its_task(tmp_path: Path, fault: str) -> None:
    first = "ours:upsampler_level_0:b1:eager+static+static-graph"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JUKEBOX_GPU_SUITE_FAULT=f"{fault}:{first}")
    result = subprocess.run(
        [sys.executable, "bench/gpu_suite.py", "--smoke", "--device", "cpu", "--out", str(tmp_path),
         "--sections", "environment,ours_b1", "--max-task-s", "20", "--budget", "240"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["tasks"][first]["status"] == {"crash": "crashed", "hang": "timeout", "poison": "ok"}[fault]
    assert data["tasks"]["ours:1b_lyrics:b1:eager+static+static-graph"]["status"] == "ok"  # a fresh worker
    assert data["env"]["measured"]["copy"]["bandwidth_best"] > 0
