"""scripts/extend_context.py: a trained top prior with more context keeps every weight."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from jukebox_cli.engine.checkpoints.native import load_native, save_native
from jukebox_cli.engine.models.builders import build_prior

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "extend_context.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("extend_context", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twice_the_context_keeps_every_weight_and_repeats_the_positions(script, tmp_path: Path) -> None:
    prior = build_prior("tiny_5b", "cpu", seed=3)
    save_native(prior, tmp_path / "prior_level_2.safetensors")
    assert script.main([str(tmp_path / "prior_level_2.safetensors"), str(tmp_path / "long")]) == 0
    extended = load_native(tmp_path / "long" / "prior_level_2.safetensors", kind="prior")
    c, e = prior.config, extended.config
    assert (e.n_ctx, e.blocks) == (2 * c.n_ctx, 2 * c.blocks)
    assert e.window_samples == 2 * c.window_samples and e.min_duration == round(
        e.window_samples / e.sample_rate, 3
    )
    old, new = prior.state_dict(), extended.state_dict()
    table = old[script.POSITION_TABLE]
    assert torch.equal(new[script.POSITION_TABLE], torch.cat([table, table]))
    assert all(torch.equal(old[k], new[k]) for k in old if k != script.POSITION_TABLE)
    # It samples: a window of the new length, conditioned as the trained prior was.
    labels = torch.tensor([[e.window_samples * 2, 0, e.window_samples, 0, 0]])
    with torch.no_grad():
        logits = extended.logits(torch.zeros(1, e.n_ctx, dtype=torch.long), labels)
    assert logits.shape == (1, e.n_ctx, e.codebook_size) and torch.isfinite(logits).all()


def test_a_lyrics_prior_or_an_upsampler_is_refused(script, tmp_path: Path) -> None:
    for preset in ("tiny_5b_lyrics", "tiny_upsampler_level_1"):
        prior = build_prior(preset, "cpu", seed=0)
        with pytest.raises(ValueError, match="only a top-level prior without lyrics"):
            script.extend(prior, 2)
