"""Key renaming between OpenAI's original checkpoint names (which our modules use) and the Hugging Face hub
layout of ``openai/jukebox-*``.

Only the forward direction (original -> hub) is written down; importing builds the inverse from the model's
own keys, so the two directions can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

HUB_VQVAE_PREFIX = "vqvae."
# Prior level -> prefix in the hub bundle: the hub numbers the priors top-down, so the top prior (level 2) is
# ``priors.0.`` and the bottom upsampler (level 0) is ``priors.2.`` (the VQ-VAE keeps its level order).
HUB_PRIOR_PREFIX: dict[int, str] = {2: "priors.0.", 1: "priors.1.", 0: "priors.2."}


def _resnet_hub(rest: str) -> str:
    """``{model|blocks}.j.model.{1,3}.X`` inside a resnet -> ``resnet_block.j.conv1d_{1,2}.X``."""
    match = re.fullmatch(r"(?:model|blocks)\.(\d+)\.model\.([13])\.(\w+)", rest)
    if match is None:
        raise KeyError(rest)
    block, conv, param = match.groups()
    return f"resnet_block.{block}.conv1d_{1 if conv == '1' else 2}.{param}"


def _encoder_block_hub(rest: str) -> str:
    if m := re.fullmatch(r"model\.(\d+)\.0\.(\w+)", rest):  # strided conv of step i
        return f"downsample_block.{2 * int(m[1])}.{m[2]}"
    if m := re.fullmatch(r"model\.(\d+)\.1\.(.+)", rest):  # resnet of step i
        return f"downsample_block.{2 * int(m[1]) + 1}.{_resnet_hub(m[2])}"
    if m := re.fullmatch(r"model\.\d+\.(\w+)", rest):  # the final projection, model.{down_t}
        return f"proj_out.{m[1]}"
    raise KeyError(rest)


def _decoder_block_hub(rest: str) -> str:
    if m := re.fullmatch(r"model\.0\.(\w+)", rest):
        return f"proj_in.{m[1]}"
    if m := re.fullmatch(r"model\.([1-9]\d*)\.0\.(.+)", rest):  # resnet of step i (model index i + 1)
        return f"upsample_block.{2 * (int(m[1]) - 1)}.{_resnet_hub(m[2])}"
    if m := re.fullmatch(r"model\.([1-9]\d*)\.1\.(\w+)", rest):  # transposed conv of step i
        return f"upsample_block.{2 * (int(m[1]) - 1) + 1}.{m[2]}"
    raise KeyError(rest)


def vqvae_key_to_hub(key: str) -> str:
    """Original/native VQ-VAE key -> key in the Hugging Face ``JukeboxModel`` (with the ``vqvae.`` prefix).

    Raises:
        KeyError: a key that is not part of a VQ-VAE.
    """
    if m := re.fullmatch(r"(encoders\.\d+\.level_blocks\.\d+)\.(.+)", key):
        return HUB_VQVAE_PREFIX + f"{m[1]}.{_encoder_block_hub(m[2])}"
    if m := re.fullmatch(r"(decoders\.\d+\.level_blocks\.\d+)\.(.+)", key):
        return HUB_VQVAE_PREFIX + f"{m[1]}.{_decoder_block_hub(m[2])}"
    if re.fullmatch(r"decoders\.\d+\.out\.\w+", key):
        return HUB_VQVAE_PREFIX + key
    if m := re.fullmatch(r"bottleneck\.level_blocks\.(\d+)\.k", key):
        return HUB_VQVAE_PREFIX + f"bottleneck.level_blocks.{m[1]}.codebook"
    raise KeyError(key)


# -- priors ------------------------------------------------------------------------------------------------

_LAYER_NORM = {"ln_0": "layer_norm_0", "ln_1": "layer_norm_1"}
_CONV1D_PARAM = {"w": "weight", "b": "bias"}


def _transformer_hub(rest: str) -> str:
    """``_attn_mods.d.*`` inside a Transformer: ``.w``/``.b`` -> ``.weight``/``.bias``, ``ln_*`` renamed."""
    if m := re.fullmatch(
        r"_attn_mods\.(\d+)\.(attn\.(?:c_attn|c_proj|c_enc_kv)|mlp\.(?:c_fc|c_proj))\.([wb])", rest
    ):
        return f"_attn_mods.{m[1]}.{m[2]}.{_CONV1D_PARAM[m[3]]}"
    if m := re.fullmatch(r"_attn_mods\.(\d+)\.(ln_[01])\.(weight|bias)", rest):
        return f"_attn_mods.{m[1]}.{_LAYER_NORM[m[2]]}.{m[3]}"
    raise KeyError(rest)


def _conditional_autoregressive_hub(rest: str) -> str:
    """A ``ConditionalAutoregressive`` (``prior.*`` or ``prime_prior.*``) without its prefix."""
    if rest == "x_emb.weight":
        return "embed_tokens.weight"
    if rest == "x_out.weight":
        return "fc_proj_out.weight"
    if rest in ("pos_emb.pos_emb", "start_token"):
        return rest
    if rest.startswith("transformer."):
        return "transformer." + _transformer_hub(rest[len("transformer.") :])
    raise KeyError(rest)


def _prior_rest_hub(key: str) -> str:
    """Original prior key -> hub key without the ``priors.N.`` prefix."""
    if key.startswith("conditioner_blocks.0."):
        rest = key[len("conditioner_blocks.0.") :]
        if rest == "x_emb.weight":
            return "conditioner_blocks.embed_tokens.weight"
        if m := re.fullmatch(r"ln\.(weight|bias)", rest):
            return f"conditioner_blocks.layer_norm.{m[1]}"
        if rest.startswith("cond."):  # a decoder conv block: proj_in, then (resnet, transposed conv) pairs
            return "conditioner_blocks.upsampler." + _decoder_block_hub(rest[len("cond.") :])
    elif m := re.fullmatch(r"y_emb\.(artist_emb|bow_genre_emb)\.emb\.weight", key):
        return f"metadata_embedding.{m[1]}.weight"
    elif m := re.fullmatch(r"y_emb\.((?:total_length|absolute_pos|relative_pos)_emb)\.emb\.weight", key):
        return f"metadata_embedding.{m[1]}.emb.weight"
    elif key.startswith("prior."):
        rest = key[len("prior.") :]
        if rest == "start_token":  # only the lyric encoder (``prime_prior``) has a start token
            raise KeyError(key)
        return "prior." + _conditional_autoregressive_hub(rest)
    elif key.startswith("prime_prior."):
        rest = key[len("prime_prior.") :]
        if rest == "x_out.weight":  # the lyric encoder's output head is ``prime_x_out``
            raise KeyError(key)
        return "encoder." + _conditional_autoregressive_hub(rest)
    elif m := re.fullmatch(r"prime_state_proj\.([wb])", key):
        return f"encoder.proj_in.{_CONV1D_PARAM[m[1]]}"
    elif m := re.fullmatch(r"prime_state_ln\.(weight|bias)", key):
        return f"encoder.final_layer_norm.{m[1]}"
    elif key == "prime_x_out.weight":
        return "encoder.lm_head.weight"
    raise KeyError(key)


def prior_key_to_hub(key: str, level: int) -> str:
    """Original key of a prior file (top prior or upsampler) -> key in the Hugging Face ``JukeboxModel``,
    prefix included (``priors.0.`` for the top prior, level 2; ``priors.2.`` for level 0).

    Raises:
        KeyError: an unknown level, or a key that is not part of a prior.
    """
    if level not in HUB_PRIOR_PREFIX:
        raise KeyError(f"prior level {level!r}")
    try:
        rest = _prior_rest_hub(key)
    except KeyError:
        raise KeyError(key) from None
    return HUB_PRIOR_PREFIX[level] + rest


def hub_key_map(keys: Iterable[str], rename: Callable[[str], str]) -> dict[str, str]:
    """``{hub_key: original_key}`` for ``keys`` renamed by ``rename`` (e.g. ``vqvae_key_to_hub`` or
    ``functools.partial(prior_key_to_hub, level=2)``); use it to read a hub state dict into our names.

    Raises:
        KeyError: ``rename`` rejects a key.
        ValueError: two original keys map to the same hub key.
    """
    inverse: dict[str, str] = {}
    for key in keys:
        hub = rename(key)
        if hub in inverse and inverse[hub] != key:
            raise ValueError(f"Keys {inverse[hub]!r} and {key!r} both map to the hub key {hub!r}.")
        inverse[hub] = key
    return inverse
