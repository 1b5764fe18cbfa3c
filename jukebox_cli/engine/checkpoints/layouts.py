"""Checkpoint layouts: the key names of the same weights in OpenAI's files, the hub's and ours.

- ``"original"``: OpenAI's ``.pth.tar`` files; the state dict is ``checkpoint["model"]``. Our module names
  mirror it, so only a leading ``module.`` (left by DistributedDataParallel) is stripped.
- ``"hub"``: the Hugging Face ``openai/jukebox-*`` repositories; the VQ-VAE lives under ``vqvae.`` and the
  priors under ``priors.N.``, with the renames in ``keymaps.py`` (``downsample_block``,
  ``resnet_block.j.conv1d_1``, ``codebook``, ...).
- ``"native"``: what jukebox-cli writes (``native.py``): our own key names, a tied output head stored once.

Every import is strict: each key and shape must match, and a mismatch names the keys that differ.
Tensors are cast to the destination dtype (released priors store some weights in float16).
"""

from __future__ import annotations

import functools
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from jukebox_cli.engine.checkpoints.keymaps import (
    HUB_PRIOR_PREFIX,
    HUB_VQVAE_PREFIX,
    prior_key_to_hub,
    vqvae_key_to_hub,
)
from jukebox_cli.engine.errors import CheckpointError, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.models.prior import Prior
from jukebox_cli.engine.models.vqvae import VQVAE

LAYOUTS = ("original", "hub", "native")

# -- import / export ---------------------------------------------------------------------------------------


def model_kind(model: nn.Module) -> str:
    """``"vqvae"`` or ``"prior"``.

    Raises:
        ConfigError: another kind of module.
    """
    if isinstance(model, VQVAE):
        return "vqvae"
    if isinstance(model, Prior):
        return "prior"
    raise ConfigError(f"Checkpoint layouts are not defined for {type(model).__name__}.")


def _hub_naming(model: nn.Module) -> tuple[Callable[[str], str], str]:
    """(rename original -> hub key, prefix of this part in a hub bundle)."""
    if model_kind(model) == "vqvae":
        return vqvae_key_to_hub, HUB_VQVAE_PREFIX
    level = model.config.level
    return functools.partial(prior_key_to_hub, level=level), HUB_PRIOR_PREFIX[level]


TIED_OUTPUT_KEY, TIED_INPUT_KEY = "prior.x_out.weight", "prior.x_emb.weight"


def is_tied(model: nn.Module) -> bool:
    return model_kind(model) == "prior" and not model.config.merged_decoder


def _describe_foreign(keys: set[str]) -> str:
    """A guess at what a foreign state dict is, for error messages."""
    if any(k.startswith(("prior.", "y_emb.", "conditioner_blocks.", "prime_prior.")) for k in keys):
        return " It looks like a prior (top prior or upsampler), not a VQ-VAE."
    if any(k.startswith("priors.") for k in keys) and not any(k.startswith(HUB_VQVAE_PREFIX) for k in keys):
        return " It holds hub-layout priors but no VQ-VAE."
    return ""


def check_compatible(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str
) -> None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong_shape = [
        f"{k} {tuple(given[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong_shape):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    raise IncompatibleCheckpoint(
        f"{what} does not match this architecture: {'; '.join(parts)}.{_describe_foreign(set(given))}"
    )


def source_key_plan(model: nn.Module, state_dict: Mapping, layout: str) -> tuple[Mapping, dict[str, str]]:
    """Match a checkpoint's keys to ``model``'s: (the state dict itself, our key -> its key), checked strictly.

    Args:
        model: the destination (its keys and shapes; a meta-device skeleton is enough).
        state_dict: for ``"original"`` the file's dict (``{"model": ...}``) or its ``model`` entry; for
            ``"hub"`` a (possibly whole-bundle) hub state dict; for ``"native"`` ours.
        layout: one of ``"original"``, ``"hub"``, ``"native"``.

    Raises:
        ConfigError: unknown layout.
        IncompatibleCheckpoint: keys or shapes differ (the message lists them).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"Unknown checkpoint layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    if layout == "original" and isinstance(state_dict.get("model"), Mapping):
        state_dict = state_dict["model"]
    expected = model.state_dict()
    from_hub: dict[str, str] = {}
    prefix = ""
    if layout == "hub":
        to_hub, prefix = _hub_naming(model)
        from_hub = {to_hub(k): k for k in expected}
    plan: dict[str, str] = {}
    for source in state_dict:
        key = source[len("module.") :] if source.startswith("module.") else source
        if layout == "hub":
            if not key.startswith(prefix):
                continue  # another part of the bundle
            key = from_hub.get(key, f"<hub> {key}")
        plan[key] = source
    if layout == "hub" and not plan:
        check_compatible(expected, {}, f"Hub checkpoint (no '{prefix}*' keys)")
    if is_tied(model) and TIED_OUTPUT_KEY not in plan and TIED_INPUT_KEY in plan:
        # A tied head is one tensor; files may list it under both names or (native, some hub files) once.
        plan[TIED_OUTPUT_KEY] = plan[TIED_INPUT_KEY]
    check_compatible(
        expected, {k: state_dict[s] for k, s in plan.items()}, f"{layout.capitalize()}-layout checkpoint"
    )
    return state_dict, plan


def import_state_dict(model: nn.Module, state_dict: Mapping, layout: str) -> None:
    """Load weights given in ``layout`` into ``model``, strictly, casting to each destination dtype.

    Args:
        model: a model built with the matching config (any device, ``meta`` included: then the tensors
            are assigned rather than copied).
        state_dict: see :func:`source_key_plan`.
        layout: one of ``"original"``, ``"hub"``, ``"native"``.

    Raises:
        ConfigError: unknown layout.
        IncompatibleCheckpoint: keys or shapes differ (the message lists them).
    """
    state_dict, plan = source_key_plan(model, state_dict, layout)
    expected = model.state_dict()
    on_meta = any(t.is_meta for t in expected.values())
    casted = {
        k: state_dict[plan[k]].to(dtype=expected[k].dtype, device=None if on_meta else expected[k].device)
        for k in expected
    }
    model.load_state_dict(casted, strict=True, assign=on_meta)
    if on_meta:
        finish_meta_load(model, next(iter(casted.values())).device)


def finish_meta_load(model: nn.Module, device: torch.device) -> None:
    """Repair what ``load_state_dict(assign=True)`` on a meta-device model leaves behind."""
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_meta:  # buffers that are not saved (training statistics) start at zero
                setattr(module, name, torch.zeros_like(buffer, device=device))
        if hasattr(module, "initialised"):  # assign=True bypasses the hook that marks codebooks loaded
            module.initialised = True
    if is_tied(model):  # assign=True replaced the shared tensor with two copies: tie them again
        model.prior.x_out.weight = model.prior.x_emb.weight


def export_state_dict(model: nn.Module, layout: str) -> dict[str, torch.Tensor]:
    """``model``'s weights in ``layout`` (for ``"original"``: the ``model`` entry of a ``.pth.tar``).

    Raises:
        ConfigError: unknown layout.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"Unknown checkpoint layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if layout == "hub":
        to_hub, _ = _hub_naming(model)
        return {to_hub(k): v for k, v in state.items()}
    if layout == "native" and is_tied(model):
        del state[TIED_OUTPUT_KEY]  # stored once; safetensors refuses shared tensors
    return state


# -- files -------------------------------------------------------------------------------------------------


def load_torch_file(path: Path) -> Mapping:
    """``torch.load`` restricted to tensors and plain containers (never arbitrary pickled objects)."""
    # torch warns about a plain pickle's protocol before refusing it; the refusal below says all there is.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return _load_weights_only(path)


def _load_weights_only(path: Path) -> Mapping:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise _read_error(path, err) from err
    except RuntimeError:
        # Legacy (pre-zipfile) files cannot be memory-mapped; they are still read with weights_only.
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise _read_error(path, err) from err
    except Exception as err:  # EOFError for truncation, ...
        raise _read_error(path, err) from err


def _read_error(path: Path, err: BaseException) -> CheckpointError:
    """Our message for a checkpoint ``torch.load`` could not or would not read.

    When the restricted unpickler refuses an object, torch's own text advises loading again without the
    restriction, which would run whatever code the file carries: that advice is never passed on.
    """
    text = str(err)
    if not (isinstance(err, pickle.UnpicklingError) and text.startswith("Weights only load failed")):
        return CheckpointError(f"Cannot read {path} as a PyTorch checkpoint: {_first_line(err)}")
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    holds = f"Python objects ({found[1]})" if found else "Python objects"
    return CheckpointError(
        f"Refusing {path}: besides tensors it holds pickled {holds}, and unpickling a file can run any code it "
        "carries, so only tensors and plain containers are read. Use a .safetensors copy of the weights; or, "
        "only if you trust where the file came from, load it with torch yourself and save its tensors with "
        "safetensors.torch.save_file, then pass that file."
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def detect_layout(state_dict: Mapping) -> str:
    """Guess a VQ-VAE state dict's layout from its keys."""
    if isinstance(state_dict.get("model"), Mapping):
        return "original"
    keys = list(state_dict)
    if any(k.startswith(HUB_VQVAE_PREFIX) for k in keys):
        return "hub"
    return "original"


def original_vqvae_config(hps: Mapping) -> dict:
    """Map the original hparams names found in a ``.pth.tar`` onto VQVAEConfig fields."""
    names = {
        "sr": "sample_rate",
        "levels": "levels",
        "downs_t": "downs_t",
        "strides_t": "strides_t",
        "emb_width": "emb_width",
        "l_bins": "codebook_size",
        "l_mu": "ema_decay",
        "width": "width",
        "depth": "depth",
        "hvqvae_multipliers": "multipliers",
        "m_conv": "m_conv",
        "dilation_growth_rate": "dilation_growth_rate",
        "dilation_cycle": "dilation_cycle",
        "vqvae_reverse_decoder_dilation": "reverse_decoder_dilation",
        "commit": "commit",
    }
    return {ours: hps[theirs] for theirs, ours in names.items() if theirs in hps}
