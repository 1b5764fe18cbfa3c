"""Released-size priors with random weights, built without a CPU initialisation, for the GPU suite.

Speed does not depend on the weights' values, so nothing is downloaded: each model is built on the
``meta`` device (shapes only, no memory), given storage directly on the target device (``to_empty``) and
filled there with seeded random values on the scales ``tests/oracle_priors.randomise_weights`` uses (so
activations stay finite in half precision through 72 layers). A fp32 CPU initialisation of a 5B model would
take minutes and 20 GB; this takes seconds.

Also here: the bytes a decode step must read (weights once, plus the keys and values its attention
layers see), which turns steps/s into a fraction of the memory bandwidth.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from jukebox_cli.engine.models.prior import Prior, PriorConfig
from jukebox_cli.engine.models.transformer import (
    BLOCK,
    CROSS,
    DENSE,
    PREVIOUS,
    PRIME,
    TRANSPOSE,
    linear_weight_keys,
)

# ``--smoke``: each released layout with tiny sizes (every other hyperparameter as released, as in the oracle
# tests), so the flow, the reference included, runs on a CPU in seconds. 1b_lyrics keeps 16 layers: its first
# prime-attention layer is layer 15.
SMOKE_SIZES = {
    "upsampler_level_0": dict(width=32, depth=3, n_ctx=256, blocks=16),
    "1b_lyrics": dict(width=32, depth=16, n_ctx=128, blocks=9, n_tokens=16),
    "5b": dict(width=64, depth=3, n_ctx=128, blocks=8),
}


def config_for(preset: str, *, smoke: bool = False, depth: int | None = None) -> PriorConfig:
    """Our released config of ``preset`` (tiny sizes with ``smoke``), optionally with fewer layers."""
    from jukebox_cli.engine.models.presets import prior_config

    if smoke:
        from tests.oracle_priors import Reduction, our_config

        config = our_config(preset, Reduction(**SMOKE_SIZES[preset]))
    else:
        config = prior_config(preset)
    if depth is not None and depth != config.depth:
        config = dataclasses.replace(config, depth=depth)
    return config


# -- materialising ------------------------------------------------------------------------------------------


def _shared_parameters(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Groups of (module, name) that hold the same Parameter (a tied output head)."""
    groups: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                groups.setdefault(id(param), []).append((module, name))
    return [refs for refs in groups.values() if len(refs) > 1]


def materialise(model: nn.Module, device: torch.device | str, *, seed: int = 0,
                linear_dtype: torch.dtype | None = None) -> nn.Module:  # fmt: skip
    """Give a meta-device ``model`` storage on ``device`` and fill it with random values, in place.

    Args:
        model: built under ``torch.device("meta")``.
        device: where the weights live.
        seed: seeds the device-side generator.
        linear_dtype: store the Conv1D weights and biases in this dtype, as sampling makes them resident in
            the working dtype (``with_linear_dtype``; a model already in it is used as it is, not copied);
            None keeps the model's own dtypes.

    Returns:
        The same model, in eval mode.
    """
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:  # none in either model today; to_empty would leave them as garbage, so fail loudly
        raise RuntimeError(f"Cannot materialise a model with buffers: {', '.join(buffers)}.")
    if linear_dtype is not None:
        weights = dict(model.named_parameters(remove_duplicate=False))
        for key in linear_weight_keys(model):
            for name in (key, key[:-1] + "b"):  # the Conv1D's .w and .b
                weights[name].data = weights[name].data.to(linear_dtype)
    shared = _shared_parameters(model)
    model.to_empty(device=device)
    for (first, first_name), *others in shared:  # to_empty gives each reference its own storage: re-tie
        for module, name in others:
            setattr(module, name, getattr(first, first_name))
    randomise(model, seed=seed)
    return model.eval()


@torch.no_grad()
def randomise(model: nn.Module, *, seed: int = 0, gain: float = 0.6, qkv_gain: float = 1.5,
              bias_std: float = 0.02, ln_std: float = 0.1, emb_std: float = 0.25, token_std: float = 0.15,
              pos_std: float = 1.0) -> None:  # fmt: skip
    """Redraw every parameter on its own device, on the scales of ``oracle_priors.randomise_weights``.

    Works on our priors and on jukebox-infer's (modules matched by class name, as there). Parameters no rule
    covers (the upsampler conditioner's convolutions) get N(0, 1 / fan_in) weights and small biases.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    done: set[int] = set()

    def draw(param: torch.Tensor, std: float, mean: float = 0.0) -> None:
        if id(param) in done:
            return
        done.add(id(param))
        param.normal_(mean, std, generator=gen)

    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, nn.Embedding):
            is_token_table = name in ("prior.x_emb", "prime_prior.x_emb")
            draw(module.weight, token_std if is_token_table else emb_std)
        elif kind == "Conv1D":
            is_qkv = name.endswith(("attn.c_attn", "attn.c_enc_kv"))
            draw(module.w, (qkv_gain if is_qkv else gain) / math.sqrt(module.w.shape[0]))
            draw(module.b, bias_std)
        elif isinstance(module, nn.LayerNorm):
            draw(module.weight, ln_std, 1.0)
            draw(module.bias, ln_std)
    for module in model.modules():  # after the embeddings: a tied head is the embedding, already drawn
        if isinstance(module, nn.Linear):
            draw(module.weight, gain / math.sqrt(module.weight.shape[1]))
    for name, param in model.named_parameters():
        if name.endswith("pos_emb.pos_emb"):
            draw(param, pos_std)
        elif name.endswith("start_token"):
            draw(param, emb_std)
        elif param.dim() >= 2:
            draw(param, 1.0 / math.sqrt(param.numel() // param.shape[0]))
        else:
            draw(param, bias_std)


def build_ours(config: PriorConfig, device: torch.device | str, *, seed: int = 0,
               linear_dtype: torch.dtype | None = torch.bfloat16) -> Prior:  # fmt: skip
    """Our prior of ``config`` on ``device`` with random weights (Conv1D tensors in ``linear_dtype``)."""
    with torch.device("meta"):
        model = Prior(config)
    if config.fp16_params and linear_dtype is None:
        linear_dtype = torch.float16
    return materialise(model, device, seed=seed, linear_dtype=linear_dtype)


def build_reference(preset: str, config: PriorConfig, device: torch.device | str, *, seed: int = 0):
    """jukebox-infer's prior with ``config``'s sizes on ``device``, random weights, its own dtypes.

    ``make_prior`` (the reference's factory) runs under the meta device, so its fp32 initialisation costs
    nothing; ``preset`` names the released hparam set that supplies every other hyperparameter.
    """
    from jukebox_infer.make_models import make_prior

    from tests.oracle_priors import (
        Reduction,
        _allow_cpu_long_tensors,
        _quiet,
        _VQVAEShapes,
        reference_hparams,
    )

    _allow_cpu_long_tensors()  # its token-type assertions name torch.cuda.LongTensor (--smoke runs on a CPU)

    extra = {}
    if config.conditioner is not None:
        extra.update(cond_width=config.conditioner.width, cond_depth=config.conditioner.depth)
    if config.lyric_encoder is not None:
        e = config.lyric_encoder
        extra.update(enc_width=e.width, enc_depth=e.depth, enc_heads=e.heads, enc_blocks=e.blocks)
    reduction = Reduction(width=config.width, depth=config.depth, n_ctx=config.n_ctx, blocks=config.blocks,
                          heads=config.heads, codebook_size=config.codebook_size, n_genres=config.n_genres,
                          n_artists=config.n_artists, n_tokens=config.n_tokens or None, **extra)  # fmt: skip
    hps = reference_hparams(preset, reduction)
    shapes = _VQVAEShapes(config.codebook_size, hps.level, hps.n_ctx)
    with torch.device("meta"), _quiet():
        model = make_prior(hps, shapes, device="meta", auto_download=False)
    return materialise(model, device, seed=seed)


# -- inputs -------------------------------------------------------------------------------------------------


def make_inputs(config: PriorConfig, batch: int, device: torch.device | str, *, seed: int = 0):
    """(codes [N, n_ctx], labels [N, label_length], upper codes [N, n_ctx / 4] or None), valid at any batch.

    Every row is a 60 s song (or the model's minimum) sampled from its start, one artist and genre per row,
    random lyric ids: the label checks pass for the top priors at any batch size.
    """
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(config.codebook_size, (batch, config.n_ctx), generator=gen)
    upper = None
    if config.is_upsampler:
        upper = torch.randint(config.codebook_size, (batch, config.n_ctx // config.conditioner.upsampling),
                              generator=gen)  # fmt: skip
    sr = config.sample_rate
    total = max(60 * sr, int((config.min_duration or 0) * sr) + 1, config.window_samples)
    labels = torch.full((batch, config.label_length), -1, dtype=torch.long)
    labels[:, 0], labels[:, 1], labels[:, 2] = total, 0, config.window_samples
    labels[:, 3] = torch.arange(batch) % config.n_artists
    labels[:, 4] = torch.arange(batch) % config.n_genres
    if config.n_tokens:
        labels[:, 4 + config.max_genres :] = torch.randint(1, config.n_vocab, (batch, config.n_tokens),
                                                           generator=gen)  # fmt: skip
    return codes.to(device), labels.to(device), None if upper is None else upper.to(device)


# -- bytes a decode step reads ------------------------------------------------------------------------------


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def weight_bytes_per_step(prior: Prior) -> int:
    """Bytes of the weights one decode step reads once: the Transformer and the output head."""
    core = prior.prior
    return _bytes([*core.transformer.parameters(), core.x_out.weight])


def keys_read(attn_func: int, position: int, block_ctx: int, prime_keys: int, n_tokens: int) -> int:
    """Key (and value) positions that the query at ``position`` attends to, by attention type."""
    if attn_func == BLOCK:
        return position % block_ctx + 1
    if attn_func == TRANSPOSE:
        return position // block_ctx + 1
    if attn_func == PREVIOUS:
        return block_ctx if position >= block_ctx else 0
    if attn_func == DENSE:
        return position + 1
    if attn_func == PRIME:
        return min(position + 1, prime_keys)
    if attn_func == CROSS:
        return n_tokens
    raise ValueError(f"unknown attention type {attn_func}")


def kv_bytes_per_step(prior: Prior, position: int, batch: int, element_size: int) -> int:
    """Bytes of cached keys and values one decode step at ``position`` (in the sequence) must read."""
    total = 0
    for block in prior.prior.transformer._attn_mods:
        attn = block.attn
        n = keys_read(attn.attn_func, position, attn.block_ctx, attn.prime_keys, prior.config.n_tokens)
        total += 2 * n * attn.n_state * element_size * batch
    return total


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
