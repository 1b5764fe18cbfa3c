"""Checkpoint layouts, the native file format, and turning a ``--model`` value into a model.

Three layouts of the same weights (spec section 8):

- ``"original"``: OpenAI's ``.pth.tar`` files; the state dict is ``checkpoint["model"]``. Our module names
  mirror it, so only a leading ``module.`` (left by DistributedDataParallel) is stripped.
- ``"hub"``: the Hugging Face ``openai/jukebox-*`` repositories; the VQ-VAE lives under ``vqvae.`` with the
  renames of spec 8.5 (``downsample_block``, ``resnet_block.j.conv1d_1``, ``codebook``, ...).
- ``"native"``: what jukebox-cli writes: one safetensors file per model part, carrying its config as JSON
  in the file's metadata, so a file is self-describing.

Every import is strict: each key and shape must match, and a mismatch names the keys that differ.
Tensors are cast to the destination dtype (released priors store some weights in float16).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jukebox_cli.engine.errors import CheckpointError, CheckpointNotFound, ConfigError, IncompatibleCheckpoint
from jukebox_cli.engine.keymaps import HUB_PRIOR_PREFIX, HUB_VQVAE_PREFIX, prior_key_to_hub, vqvae_key_to_hub
from jukebox_cli.engine.progress import ProgressCallback, noop

LAYOUTS = ("original", "hub", "native")
FORMAT_NAME = "jukebox-cli"
FORMAT_VERSION = 1

# -- import / export ---------------------------------------------------------------------------------------


def _model_kind(model: nn.Module) -> str:
    from jukebox_cli.engine.prior import Prior
    from jukebox_cli.engine.vqvae import VQVAE

    if isinstance(model, VQVAE):
        return "vqvae"
    if isinstance(model, Prior):
        return "prior"
    raise ConfigError(f"Checkpoint layouts are not defined for {type(model).__name__}.")


def _hub_naming(model: nn.Module) -> tuple[Callable[[str], str], str]:
    """(rename original -> hub key, prefix of this part in a hub bundle)."""
    if _model_kind(model) == "vqvae":
        return vqvae_key_to_hub, HUB_VQVAE_PREFIX
    level = model.config.level
    return functools.partial(prior_key_to_hub, level=level), HUB_PRIOR_PREFIX[level]


TIED_OUTPUT_KEY, TIED_INPUT_KEY = "prior.x_out.weight", "prior.x_emb.weight"


def _is_tied(model: nn.Module) -> bool:
    return _model_kind(model) == "prior" and not model.config.merged_decoder


def _describe_foreign(keys: set[str]) -> str:
    """A guess at what a foreign state dict is, for error messages."""
    if any(k.startswith(("prior.", "y_emb.", "conditioner_blocks.", "prime_prior.")) for k in keys):
        return " It looks like a prior (top prior or upsampler), not a VQ-VAE."
    if any(k.startswith("priors.") for k in keys) and not any(k.startswith(HUB_VQVAE_PREFIX) for k in keys):
        return " It holds hub-layout priors but no VQ-VAE."
    return ""


def _check_compatible(
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
        _check_compatible(expected, {}, f"Hub checkpoint (no '{prefix}*' keys)")
    if _is_tied(model) and TIED_OUTPUT_KEY not in plan and TIED_INPUT_KEY in plan:
        # A tied head is one tensor; files may list it under both names or (native, some hub files) once.
        plan[TIED_OUTPUT_KEY] = plan[TIED_INPUT_KEY]
    _check_compatible(
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
        _finish_meta_load(model, next(iter(casted.values())).device)


def _finish_meta_load(model: nn.Module, device: torch.device) -> None:
    """Repair what ``load_state_dict(assign=True)`` on a meta-device model leaves behind."""
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_meta:  # buffers that are not saved (training statistics) start at zero
                setattr(module, name, torch.zeros_like(buffer, device=device))
        if hasattr(module, "initialised"):  # assign=True bypasses the hook that marks codebooks loaded
            module.initialised = True
    if _is_tied(model):  # assign=True replaced the shared tensor with two copies: tie them again
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
    if layout == "native" and _is_tied(model):
        del state[TIED_OUTPUT_KEY]  # stored once; safetensors refuses shared tensors
    return state


# -- files -------------------------------------------------------------------------------------------------


def _atomic_path(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(tmp)


def native_metadata(kind: str, config) -> dict[str, str]:
    """The safetensors metadata of a native file: format, version, kind and the config as JSON."""
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(config.to_dict()),
    }


def write_native(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (a temporary file beside it, then a rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    fd, tmp = _atomic_path(path)
    os.close(fd)
    try:
        save_file(dict(tensors), str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_native(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as a self-describing safetensors file (config in the metadata), atomically."""
    tensors = {k: v.contiguous().cpu() for k, v in export_state_dict(model, "native").items()}
    return write_native(path, tensors, native_metadata(_model_kind(model), model.config))


def load_native(
    path: str | Path,
    *,
    kind: str | None = None,
    device: str | torch.device = "cpu",
    linear_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a native file one tensor at a time, straight onto ``device`` (never two copies of a model).

    On the CPU, tensors whose stored dtype is the one wanted stay memory-mapped (copy-on-write): loading is
    fast and the pages are read from disk when first used; others are cast as they are read.

    Args:
        path: a ``.safetensors`` file written by :func:`save_native` or by a conversion.
        kind: ``"vqvae"`` or ``"prior"`` to insist on one.
        device: where the weights go (read from the memory-mapped file directly).
        linear_dtype: store the Transformer's Conv1D weights in this dtype (as the released 5B priors do
            with float16); None keeps each parameter's dtype from the config.

    Raises:
        CheckpointError: not a readable jukebox-cli file.
        IncompatibleCheckpoint: another kind, a newer format, or keys/shapes that do not match the config.
    """
    from safetensors import safe_open

    from jukebox_cli.engine.prior import Prior, PriorConfig
    from jukebox_cli.engine.transformer import linear_weight_keys
    from jukebox_cli.engine.vqvae import VQVAE, VQVAEConfig

    path = Path(path)
    metadata = read_native_metadata(path)
    if metadata.get("format") != FORMAT_NAME:
        raise IncompatibleCheckpoint(f"{path} is not a jukebox-cli model file (no format metadata).")
    if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
        raise IncompatibleCheckpoint(
            f"{path} was written by a newer jukebox-cli (format {metadata['format_version']}); upgrade to read it."
        )
    found = metadata.get("kind")
    if found not in ("vqvae", "prior") or (kind is not None and found != kind):
        names = {"vqvae": "VQ-VAE", "prior": "prior", None: "jukebox-cli model"}
        raise IncompatibleCheckpoint(f"{path} holds a {found or 'unknown'} model, not a {names[kind]}.")
    model_cls, config_cls = (VQVAE, VQVAEConfig) if found == "vqvae" else (Prior, PriorConfig)
    with torch.device("meta"):
        model = model_cls(config_cls.from_dict(json.loads(metadata["config"])))
    expected = model.state_dict()
    targets = {k: t.dtype for k, t in expected.items()}
    if linear_dtype is None and getattr(model.config, "fp16_params", False):
        linear_dtype = torch.float16  # as the released 5B priors are built (see api.build_prior)
    if linear_dtype is not None:
        targets.update(dict.fromkeys(linear_weight_keys(model), linear_dtype))
    device = torch.device(device)
    tied = _is_tied(model)
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        shapes = {k: _ShapeOnly(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        if tied and TIED_OUTPUT_KEY not in shapes and TIED_INPUT_KEY in shapes:
            shapes[TIED_OUTPUT_KEY] = shapes[TIED_INPUT_KEY]
        _check_compatible(expected, shapes, f"Native file {path.name}")
        state = {}
        for key in expected:
            if tied and key == TIED_OUTPUT_KEY:
                continue
            state[key] = handle.get_tensor(key).to(device=device, dtype=targets[key])
    if tied:
        state[TIED_OUTPUT_KEY] = state[TIED_INPUT_KEY]
    model.load_state_dict(state, strict=True, assign=True)
    _finish_meta_load(model, device)
    return model.eval()


class _ShapeOnly:
    """Stands in for a tensor where only ``.shape`` is read (shape checks before any data is loaded)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = torch.Size(shape)


def read_native_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err


def load_torch_file(path: Path) -> Mapping:
    """``torch.load`` restricted to tensors and plain containers (never arbitrary pickled objects)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Legacy (pre-zipfile) files cannot be memory-mapped; they are still read with weights_only.
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"Cannot read {path} as a PyTorch checkpoint: {_first_line(err)}") from err
    except Exception as err:  # pickle.UnpicklingError for non-tensor payloads, EOFError for truncation, ...
        raise CheckpointError(
            f"Refusing or unable to read {path}: {_first_line(err)} (only tensors and plain containers are "
            "loaded, with weights_only=True)."
        ) from err


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


# -- resolving --model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedVQVAE:
    """A VQ-VAE and where it came from (for messages and run records)."""

    model: nn.Module
    source: str
    pretrained: bool


def _config_from_original_hps(hps: Mapping) -> dict:
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


def load_vqvae(
    spec: str | Path,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    download: bool = False,
    progress: ProgressCallback = noop,
) -> LoadedVQVAE:
    """Resolve a ``--model`` value to a VQ-VAE.

    Args:
        spec: ``demo`` (the bundled model's VQ-VAE), a preset name (``tiny``: random weights from ``seed``),
            ``tiny-random`` (the VQ-VAE of that model), a released model name or ``jukebox`` (the released
            VQ-VAE, from the model cache), a native ``.safetensors`` file, a folder holding
            ``vqvae.safetensors``, an original-layout ``.pth``/``.pth.tar`` file, or a hub-layout
            ``.bin``/``.safetensors`` file with ``vqvae.*`` keys.
        device: where the model should live.
        seed: initialisation seed for presets without weights.
        cache_dir: the model cache (for released names).
        download: fetch the released VQ-VAE when it is not in the cache.
        progress: download events.

    Raises:
        CheckpointNotFound: no such file, or released weights that are not downloaded.
        IncompatibleCheckpoint: a checkpoint of another kind or architecture.
        CheckpointError: an unreadable file.
    """
    from jukebox_cli.engine import bundled, models, presets, remote
    from jukebox_cli.engine.bundle import TINY_RANDOM
    from jukebox_cli.engine.vqvae import VQVAEConfig

    path = Path(spec)
    if not path.exists() and str(spec) in bundled.BUNDLED_MODELS:
        file = bundled.bundled_folder(str(spec)) / "vqvae.safetensors"
        return LoadedVQVAE(load_native(file, kind="vqvae", device=device), str(spec), True)
    if not path.exists() and str(spec) == TINY_RANDOM:
        return LoadedVQVAE(
            build_vqvae_from_config(presets.vqvae_config("tiny"), device, 0), TINY_RANDOM, False
        )
    if not path.exists() and (str(spec) in models.MODELS or str(spec) in presets.NEEDS_WEIGHTS):
        # Every released model shares the one released VQ-VAE; the smallest model that holds it is used.
        name = str(spec) if str(spec) in models.MODELS else "1b_lyrics"
        cache = models.ModelCache(cache_dir)
        if not cache.has_part("vqvae") and download:
            models.ensure_vqvae(name, cache_dir=cache_dir, progress=progress)
        if not cache.has_part("vqvae"):
            raise CheckpointNotFound(
                f"The released VQ-VAE is not downloaded; run `jukebox models download {name}` (or pass the "
                "path of vqvae.pth.tar with --model)."
            )
        return LoadedVQVAE(load_native(cache.part_file("vqvae"), kind="vqvae", device=device), name, True)
    if not path.exists() and str(spec) in presets.VQVAE_PRESETS:
        name = str(spec)
        return LoadedVQVAE(build_vqvae_from_config(presets.vqvae_config(name), device, seed), name, False)
    if not path.exists() and (remote.is_url(str(spec)) or remote.parse_repo(str(spec))):
        fetcher = remote.fetch_url if remote.is_url(str(spec)) else remote.fetch_repo
        vqvae_file, _ = fetcher(str(spec), cache_dir=cache_dir, progress=progress)
        if vqvae_file.suffix in (".pth", ".tar", ".bin"):
            return LoadedVQVAE(load_vqvae(vqvae_file, device=device).model, str(spec), True)
        return LoadedVQVAE(load_native(vqvae_file, kind="vqvae", device=device), str(spec), True)
    if not path.exists():
        known = ", ".join(presets.VQVAE_PRESETS)
        raise CheckpointNotFound(f"No checkpoint at {path} and no preset of that name (presets: {known}).")
    if path.is_dir():
        candidate = path / "vqvae.safetensors"
        if not candidate.is_file():
            raise CheckpointNotFound(f"{path} is a folder without a vqvae.safetensors file.")
        path = candidate

    if path.suffix == ".safetensors":
        metadata = read_native_metadata(path)
        if metadata.get("format") == FORMAT_NAME:
            return LoadedVQVAE(load_native(path, kind="vqvae", device=device), str(path), True)
        from safetensors.torch import load_file

        state, layout, config = load_file(str(path)), None, presets.vqvae_config("jukebox")
    else:
        state, layout = load_torch_file(path), None
        hps = state.get("hps") if isinstance(state, Mapping) else None
        values = _config_from_original_hps(hps) if isinstance(hps, Mapping) else {}
        config = VQVAEConfig(**values) if values else presets.vqvae_config("jukebox")
    if not isinstance(state, Mapping):
        raise IncompatibleCheckpoint(f"{path} does not contain a state dict.")
    model = build_vqvae_from_config(config, "meta")
    import_state_dict(model, state, layout or detect_layout(state))
    return LoadedVQVAE(model.to(device).eval(), str(path), True)


def build_vqvae_from_config(config, device: str | torch.device = "cpu", seed: int | None = 0) -> nn.Module:
    """Build a VQ-VAE; weights are initialised from ``seed`` (skipped on the meta device)."""
    from jukebox_cli.engine.vqvae import VQVAE

    device = torch.device(device)
    if device.type == "meta":
        with device:
            return VQVAE(config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = VQVAE(config).eval()
        _seed_codebooks(model)
    return model.to(device).eval()


@torch.no_grad()
def _seed_codebooks(model: nn.Module, n_samples: int = 2**15) -> None:
    """Seed untrained codebooks from encoder outputs on noise (the original's data-driven init, spec 3.7).

    An all-zero codebook maps every latent to code 0, so an untrained model would not exercise its codes.
    The blocks stay marked uninitialised, so training still re-initialises them from real data.
    """
    noise = 0.1 * torch.randn(1, 1, max(n_samples, model.hop_lengths[-1] * 8))
    for level, block in enumerate(model.bottleneck.level_blocks):
        latent = model.encoders[level](noise)
        block.init_codebook(latent.permute(0, 2, 1).reshape(-1, latent.shape[1]))
        block.initialised = False
