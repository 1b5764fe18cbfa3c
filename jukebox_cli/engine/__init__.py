"""The jukebox-cli engine: models, checkpoints, audio and metrics, usable without the CLI.

Attributes are imported lazily (PEP 562), so ``import jukebox_cli.engine.errors`` stays cheap and does not
import torch; the CLI relies on that for a fast ``--help``.

Public API:
    build_vqvae(preset="jukebox", device="cpu", seed=0) -> VQVAE
    build_prior(preset, device="cpu", seed=0) -> Prior
    load_bundle(spec) -> Bundle (VQ-VAE + priors + labellers); run_cascade(bundle, run, request, device=...)
    load_vqvae(spec, device="cpu") -> LoadedVQVAE
    save_native(model, path)
    reconstruct(vqvae, audio, levels=None, ...) -> Reconstruction
    summarize(audio, sample_rate) -> AudioSummary
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "build_vqvae": "jukebox_cli.engine.api",
    "build_prior": "jukebox_cli.engine.api",
    "load_bundle": "jukebox_cli.engine.bundle",
    "run_cascade": "jukebox_cli.engine.generate",
    "load_vqvae": "jukebox_cli.engine.checkpoints",
    "save_native": "jukebox_cli.engine.checkpoints",
    "import_state_dict": "jukebox_cli.engine.checkpoints",
    "export_state_dict": "jukebox_cli.engine.checkpoints",
    "VQVAE": "jukebox_cli.engine.vqvae",
    "VQVAEConfig": "jukebox_cli.engine.vqvae",
    "reconstruct": "jukebox_cli.engine.reconstruct",
    "Reconstruction": "jukebox_cli.engine.reconstruct",
    "summarize": "jukebox_cli.engine.analysis",
    "resolve_device": "jukebox_cli.engine.devices",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from jukebox_cli.engine.analysis import summarize  # noqa: F401
    from jukebox_cli.engine.api import build_prior, build_vqvae  # noqa: F401
    from jukebox_cli.engine.bundle import load_bundle  # noqa: F401
    from jukebox_cli.engine.checkpoints import export_state_dict, import_state_dict, load_vqvae, save_native  # noqa: F401
    from jukebox_cli.engine.devices import resolve_device  # noqa: F401
    from jukebox_cli.engine.generate import run_cascade  # noqa: F401
    from jukebox_cli.engine.reconstruct import Reconstruction, reconstruct  # noqa: F401
    from jukebox_cli.engine.vqvae import VQVAE, VQVAEConfig  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jukebox_cli.engine' has no attribute {name!r}")
