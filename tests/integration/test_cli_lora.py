"""LoRA fine-tuning as a user runs it: `train prior --lora-rank`, then `generate --model BASE --adapter RUN`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import soundfile as sf
import torch

from jukebox_cli.engine.models.lora import LoRAConfig, LoRAConv1D
from tests.conftest import music_like


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "songs"
    root.mkdir()
    rows = ["path,artist,genre,lyrics"]
    for i in range(4):
        sf.write(root / f"song{i}.wav", music_like(3.0, 22050, seed=i), 22050)
        rows.append(f"song{i}.wav,alpha,rock,la la la")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def _train_args(corpus: Path, tmp_path: Path, run: Path, *extra: str) -> list:
    return ["train", "prior", corpus, "--vqvae", "tiny-random", "--from", "tiny-random", "--metadata",
            corpus / "meta.csv", "--steps", "3", "--save-every", "3", "--eval-every", "3", "--lr", "1e-2",
            "--warmup", "1", "--logger", "none", "--device", "cpu", "--quiet", "--cache-dir", tmp_path / "cache",
            "-o", run, *extra]  # fmt: skip


def test_lora_fine_tune_then_generate_with_the_adapter(corpus: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "lora"
    result = run_cli(*_train_args(corpus, tmp_path, run, "--lora-rank", "4", "--lora-alpha", "8"))
    assert result.exit_code == 0, result.stderr
    adapter = run / "adapter.safetensors"
    assert adapter.is_file() and not (run / "prior_level_2.safetensors").exists()
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["model"] and all(k.endswith(("lora_a", "lora_b")) for k in state["model"])
    assert any(v.abs().sum() > 0 for k, v in state["model"].items() if k.endswith("lora_b"))  # it learnt

    from jukebox_cli.engine.weights.adapters import load_adapter

    loaded = load_adapter(run)
    assert (loaded.lora, loaded.level, loaded.base) == (LoRAConfig(rank=4, alpha=8.0), 2, "tiny-random")

    out = tmp_path / "gen"
    result = run_cli("generate", "--model", "tiny-random", "--adapter", run, "--device", "cpu", "--duration", "1",
                     "--levels", "2", "-q", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (out / "level_2" / "item_0.wav").is_file()
    # The run records the adapted model, so that a resume (or this value as --model) samples it again.
    from jukebox_cli.engine.sampling.runs import Run

    recorded = Run.open(out).settings["model"]
    assert recorded == f"tiny-random+adapter={adapter.resolve()}"
    # The same command with --resume names the same adapted model (the run folder, not its file); another
    # adapter, or none, is another model.
    resume = ("generate", "--resume", "--model", "tiny-random", "--device", "cpu", "-q", "-o", out)
    assert run_cli(*resume, "--adapter", run).exit_code == 0
    refused = run_cli(*resume, "--adapter", tmp_path / "other.safetensors")
    assert refused.exit_code == 7 and "different settings" in refused.stderr and "model" in refused.stderr
    again = tmp_path / "again"
    result = run_cli("generate", "--model", recorded, "--device", "cpu", "--duration", "1", "--levels", "2", "-q",
                     "-o", again)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (again / "level_2" / "item_0.wav").read_bytes() == (out / "level_2" / "item_0.wav").read_bytes()

    # A base the adapter was not trained on: one line, exit 3.
    result = run_cli("generate", "--model", "demo", "--adapter", adapter, "--device", "cpu", "--duration", "1",
                     "--levels", "2", "-q", "-o", tmp_path / "wrong")  # fmt: skip
    assert result.exit_code == 3 and "another base" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    # The run alone is no model: the message says what to pass.
    result = run_cli("generate", "--model", run, "--device", "cpu", "-q", "-o", tmp_path / "alone")
    assert result.exit_code == 3 and f"--model tiny-random --adapter {run}" in result.stderr


def test_lora_needs_a_base_and_a_rank(corpus: Path, tmp_path: Path, run_cli) -> None:
    args = _train_args(corpus, tmp_path, tmp_path / "r", "--lora-rank", "4", "--preset", "tiny")
    at = args.index("--from")
    del args[at : at + 2]
    result = run_cli(*args)
    assert result.exit_code == 2 and "--from" in result.stderr
    result = run_cli(*_train_args(corpus, tmp_path, tmp_path / "r2", "--lora-alpha", "4"))
    assert result.exit_code == 2 and "--lora-rank" in result.stderr
    result = run_cli(
        *_train_args(corpus, tmp_path, tmp_path / "r3", "--lora-rank", "4", "--lora-targets", "ffn")
    )
    assert result.exit_code == 2 and "--lora-targets" in result.stderr
    result = run_cli(
        "generate", "--model", "tiny-random", "--adapter", tmp_path / "none", "-o", tmp_path / "g"
    )
    assert result.exit_code == 3 and "No adapter" in result.stderr


def _task(corpus: Path, tmp_path: Path):
    from jukebox_cli.engine.train.setup import prior_task

    return prior_task(corpus, vqvae="tiny-random", level=2, source="tiny-random", batch_size=2, seed=0,
                      metadata=corpus / "meta.csv", held_out=0.25, cache_dir=tmp_path / "cache",
                      lora=LoRAConfig(rank=2))  # fmt: skip


def test_lora_training_changes_only_adapters_and_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    from jukebox_cli.engine.progress import Advanced
    from jukebox_cli.engine.train.loop import TrainConfig, train
    from jukebox_cli.engine.weights.loading import load_bundle

    config = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup=1, save_every=2, eval_every=4, log_every=1)
    whole = _task(corpus, tmp_path)
    frozen = {n: p.detach().clone() for n, p in whole.model.named_parameters() if not p.requires_grad}
    adapters0 = copy.deepcopy(whole.model.state_dict())
    assert train(whole, config, tmp_path / "whole", handle_signals=False).stopped == "done"
    after = dict(whole.model.named_parameters())
    assert all(torch.equal(after[n], t) for n, t in frozen.items())  # the base is bit-identical
    assert any(not torch.equal(whole.model.state_dict()[k], v) for k, v in adapters0.items())
    # The frozen weights are those of the base model itself.
    base = load_bundle("tiny-random").load_prior(2).state_dict()
    wrapped = {n.replace(".base.", "."): t for n, t in frozen.items()}
    assert all(torch.equal(base[n], t) for n, t in wrapped.items())

    steps_done = []

    def stop_at_3(event) -> None:  # a Ctrl-C right after step 3 (between steps: its checkpoint is exact)
        if isinstance(event, Advanced) and event.name == "train":
            steps_done.append(event)
            if len(steps_done) == 3:
                raise KeyboardInterrupt

    broken = tmp_path / "broken"
    stopped = train(_task(corpus, tmp_path), config, broken, handle_signals=False, progress=stop_at_3)
    assert stopped.stopped == "interrupted" and stopped.step == 3
    resumed = train(_task(corpus, tmp_path), config, broken, resume=True, handle_signals=False)
    assert (resumed.stopped, resumed.step) == ("done", 4)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(broken / "checkpoints" / "latest.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert isinstance(next(m for m in whole.model.modules() if isinstance(m, LoRAConv1D)), LoRAConv1D)


def test_a_bf16_base_stays_frozen_and_its_adapter_merges_into_the_float32_base(
    corpus: Path, tmp_path: Path
) -> None:
    """What the CLI does on a GPU (--lora-rank there keeps the frozen projections in bf16), here on the CPU."""
    from jukebox_cli.engine.train.loop import TrainConfig, train
    from jukebox_cli.engine.train.setup import prior_task
    from jukebox_cli.engine.weights.loading import load_bundle

    task = prior_task(corpus, vqvae="tiny-random", level=2, source="tiny-random", batch_size=2, held_out=0.25,
                      metadata=corpus / "meta.csv", cache_dir=tmp_path / "cache", lora=LoRAConfig(rank=2),
                      base_dtype=torch.bfloat16)  # fmt: skip
    layers = [m for m in task.model.modules() if isinstance(m, LoRAConv1D)]
    assert all(m.base.w.dtype == torch.bfloat16 and m.lora_a.dtype == torch.float32 for m in layers)
    before = [m.base.w.clone() for m in layers]
    config = TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup=1, save_every=2, eval_every=2, log_every=1)
    assert train(task, config, tmp_path / "run", handle_signals=False).stopped == "done"
    assert all(torch.equal(m.base.w, w) for m, w in zip(layers, before, strict=True))
    prior = load_bundle("tiny-random", adapters=[tmp_path / "run"]).load_prior(2)
    assert next(prior.parameters()).dtype == torch.float32


def test_an_upsampler_adapter_is_used_and_recorded_by_upsample(corpus: Path, tmp_path: Path, run_cli) -> None:
    args = _train_args(corpus, tmp_path, tmp_path / "up1", "--lora-rank", "2", "--lora-targets", "attn")
    args[1] = "upsampler"
    result = run_cli(*args, "--level", "1")
    assert result.exit_code == 0, result.stderr
    from jukebox_cli.engine.sampling.runs import Run
    from jukebox_cli.engine.weights.adapters import load_adapter

    adapter = load_adapter(tmp_path / "up1")
    assert adapter.level == 1 and adapter.lora.targets == ("attn",)
    assert not any(".mlp." in key for key in adapter.tensors)
    top = tmp_path / "top"
    common = ("--device", "cpu", "-q")
    assert (
        run_cli(
            "generate", "-m", "tiny-random", "--levels", "2", "--duration", "1", *common, "-o", top
        ).exit_code
        == 0
    )
    result = run_cli("upsample", top, "--adapter", tmp_path / "up1", *common, "-o", tmp_path / "up")
    assert result.exit_code == 0, result.stderr
    assert Run.open(tmp_path / "up").settings["model"] == f"tiny-random+adapter={adapter.path}"
    assert (tmp_path / "up" / "level_0" / "item_0.wav").is_file()
