"""The jukebox-cli engine: models, checkpoints, sampling, audio and training, usable without the CLI.

Attributes are imported lazily (PEP 562), so ``import jukebox_cli.engine.errors`` stays cheap and does not
import torch; the CLI relies on that for a fast ``--help``. ``docs/ARCHITECTURE.md`` maps the subpackages.

Public API:
    load_bundle(model, adapters=()) -> Bundle (VQ-VAE + priors + labellers, priors loaded on demand; LoRA
        adapter files or runs merged into their level's prior as it loads); load_adapter(path) -> Adapter
    prepare_generate / prepare_continue / prepare_upsample / prepare_resume -> GenerationJob
        (job.plan(), job.run() -> GenerationResult); generate / continue_from / upsample do both
    load_vqvae(model, device="cpu") -> LoadedVQVAE; reconstruct(vqvae, audio, levels=None, ...) -> Reconstruction
    build_vqvae(preset="jukebox", device="cpu", seed=0) -> VQVAE; build_prior(preset, device="cpu", seed=0) -> Prior
    save_native(model, path); import_state_dict / export_state_dict (checkpoint layouts)
    run_cascade(bundle, run, request, device=...) (the cascade itself, under the jobs)
    summarize(audio, sample_rate) -> AudioSummary; resolve_device(name) -> torch.device
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "build_vqvae": "jukebox_cli.engine.models.builders",
    "build_prior": "jukebox_cli.engine.models.builders",
    "VQVAE": "jukebox_cli.engine.models.vqvae",
    "VQVAEConfig": "jukebox_cli.engine.models.vqvae",
    "import_state_dict": "jukebox_cli.engine.checkpoints.layouts",
    "export_state_dict": "jukebox_cli.engine.checkpoints.layouts",
    "save_native": "jukebox_cli.engine.checkpoints.native",
    "Bundle": "jukebox_cli.engine.weights.bundle",
    "load_bundle": "jukebox_cli.engine.weights.loading",
    "load_vqvae": "jukebox_cli.engine.weights.loading",
    "load_adapter": "jukebox_cli.engine.weights.adapters",
    "LoRAConfig": "jukebox_cli.engine.models.lora",
    "run_cascade": "jukebox_cli.engine.sampling.cascade",
    "GenerationJob": "jukebox_cli.engine.sampling.generation",
    "GenerationResult": "jukebox_cli.engine.sampling.generation",
    "prepare_generate": "jukebox_cli.engine.sampling.generation",
    "prepare_continue": "jukebox_cli.engine.sampling.generation",
    "prepare_upsample": "jukebox_cli.engine.sampling.generation",
    "prepare_resume": "jukebox_cli.engine.sampling.generation",
    "generate": "jukebox_cli.engine.sampling.generation",
    "continue_from": "jukebox_cli.engine.sampling.generation",
    "upsample": "jukebox_cli.engine.sampling.generation",
    "reconstruct": "jukebox_cli.engine.audio.reconstruct",
    "Reconstruction": "jukebox_cli.engine.audio.reconstruct",
    "summarize": "jukebox_cli.engine.audio.analysis",
    "resolve_device": "jukebox_cli.engine.devices",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from jukebox_cli.engine.audio.analysis import summarize  # noqa: F401
    from jukebox_cli.engine.audio.reconstruct import Reconstruction, reconstruct  # noqa: F401
    from jukebox_cli.engine.checkpoints.layouts import export_state_dict, import_state_dict  # noqa: F401
    from jukebox_cli.engine.checkpoints.native import save_native  # noqa: F401
    from jukebox_cli.engine.devices import resolve_device  # noqa: F401
    from jukebox_cli.engine.models.builders import build_prior, build_vqvae  # noqa: F401
    from jukebox_cli.engine.models.lora import LoRAConfig  # noqa: F401
    from jukebox_cli.engine.models.vqvae import VQVAE, VQVAEConfig  # noqa: F401
    from jukebox_cli.engine.sampling.cascade import run_cascade  # noqa: F401
    from jukebox_cli.engine.sampling.generation import (  # noqa: F401
        GenerationJob,
        GenerationResult,
        continue_from,
        generate,
        prepare_continue,
        prepare_generate,
        prepare_resume,
        prepare_upsample,
        upsample,
    )
    from jukebox_cli.engine.weights.adapters import load_adapter  # noqa: F401
    from jukebox_cli.engine.weights.bundle import Bundle  # noqa: F401
    from jukebox_cli.engine.weights.loading import load_bundle, load_vqvae  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jukebox_cli.engine' has no attribute {name!r}")
