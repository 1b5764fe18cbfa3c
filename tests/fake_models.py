"""Tiny models in the exact file layouts of the releases, for the fake hub and the fake OpenAI mirror.

The registry's parts load into the released presets; ``use_tiny_presets`` points them at the ``tiny*``
presets, which have the same module tree (so the same key names, hub renames and tying) at a fraction of the
size. Everything else (sharding, index, file formats, ``{"model": ...}`` wrappers) is as released.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch

TINY_PRESETS = {
    "vqvae": "tiny",
    "upsampler_level_0": "tiny_upsampler_level_0",
    "upsampler_level_1": "tiny_upsampler_level_1",
    "1b_lyrics_top": "tiny_1b_lyrics",
    "5b_top": "tiny_5b",
    "5b_lyrics_top": "tiny_5b_lyrics",
}


def use_tiny_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    from jukebox_cli.engine.weights import registry

    for part_id, preset in TINY_PRESETS.items():
        monkeypatch.setitem(
            registry.PARTS, part_id, dataclasses.replace(registry.PARTS[part_id], preset=preset)
        )


def tiny_parts(top: str = "1b_lyrics_top", seed: int = 0) -> dict[str, torch.nn.Module]:
    """Part id -> a tiny model with seeded random weights (what the fake servers hold)."""
    from jukebox_cli.engine.models.builders import build_prior, build_vqvae

    parts = {"vqvae": build_vqvae("tiny", seed=seed)}
    for i, part_id in enumerate(("upsampler_level_0", "upsampler_level_1", top)):
        parts[part_id] = build_prior(TINY_PRESETS[part_id], seed=seed + 1 + i)
    return parts


def _save(obj: object, *, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def hub_repo_files(parts: dict[str, torch.nn.Module], n_shards: int = 2) -> dict[str, bytes]:
    """A hub repository like ``openai/jukebox-1b-lyrics``: sharded float32 ``.bin`` files, index, config."""
    from jukebox_cli.engine.checkpoints.layouts import export_state_dict

    state: dict[str, torch.Tensor] = {}
    for model in parts.values():
        # The hub files are float32 throughout and list tied heads under both names.
        state.update({k: v.float().clone() for k, v in export_state_dict(model, "hub").items()})
    keys = list(state)
    names = [f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin" for i in range(n_shards)]
    per = -(-len(keys) // n_shards)
    weight_map = {k: names[i // per] for i, k in enumerate(keys)}
    files = {
        name: _save({k: state[k] for k in keys if weight_map[k] == name}) for name in names
    }  # fmt: skip
    files["pytorch_model.bin.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(t.numel() * 4 for t in state.values())}, "weight_map": weight_map}
    ).encode()
    files["config.json"] = json.dumps(
        {"architectures": ["JukeboxModel"], "model_type": "jukebox", "nb_priors": 3,
         "hop_fraction": [0.125, 0.5, 0.5], "sampling_rate": 22050, "max_duration": 600.0}
    ).encode()  # fmt: skip
    for name in ("artists.json", "genres.json", "lyrics.json"):
        files[name] = b"{}"
    files["tokenizer_config.json"] = b'{"tokenizer_class": "JukeboxTokenizer"}'
    files["special_tokens_map.json"] = b'{"unk_token": "<|endoftext|>"}'
    return files


def original_file(model: torch.nn.Module, *, legacy: bool = True) -> bytes:
    """A ``.pth.tar`` as OpenAI's training wrote it (PyTorch 1.4's legacy pickle format by default)."""
    from jukebox_cli.engine.checkpoints.layouts import export_state_dict

    return _save({"model": export_state_dict(model, "original"), "step": 0}, legacy=legacy)


def original_files(parts: dict[str, torch.nn.Module]) -> dict[str, bytes]:
    """URL path -> file, as served under a mirror prefix."""
    from jukebox_cli.engine.weights.registry import PARTS

    return {f"/jukebox/models/{PARTS[p].original_file}": original_file(m) for p, m in parts.items()}


class CodeExecution:
    """A pickle payload that would run a command when unpickled without ``weights_only``."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/jukebox-cli-pwned",))


def malicious_file() -> bytes:
    return _save({"model": {"x": torch.zeros(1)}, "payload": CodeExecution()})
