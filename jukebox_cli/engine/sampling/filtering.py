"""Turning logits into tokens: temperature, top-k / top-p filtering and the categorical draw.

The released settings use neither filter (top_k 0, top_p 0.0); they are here because the original
implements them. Draws are ``torch.multinomial``'s single-sample computation (see :func:`draw`), racing
against Exp(1) values from an explicit ``torch.Generator`` or given by the caller (``noise.RaceNoise``: one
stream per sample), so a seeded run gives the same tokens every time on the same device.
"""

from __future__ import annotations

import math

import torch

from jukebox_cli.engine.errors import ConfigError


def _check_filters(top_k: int, top_p: float) -> None:
    if top_k < 0:
        raise ConfigError(f"top_k must be 0 (off) or a positive number of tokens, got {top_k}.")
    if math.isnan(top_p) or not 0.0 <= top_p <= 1.0:
        raise ConfigError(f"top_p must be between 0 (off) and 1, got {top_p}.")
    if top_k > 0 and top_p > 0.0:
        raise ConfigError(f"Use top_k or top_p, not both (got top_k {top_k} and top_p {top_p}).")


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set the logits of filtered-out tokens to ``-inf``.

    top-k keeps every logit >= the k-th largest (ties at the threshold survive). top-p (nucleus) sorts the
    tokens by probability and removes those reached after the cumulative probability exceeds ``top_p``: the
    removal mask is shifted right by one, so the token that crosses ``top_p`` and the most probable token
    always survive. ``top_p = 1`` keeps everything (rather than letting rounding in the cumulative sum drop
    the tail).

    Args:
        logits: ``[..., V]`` scores over the vocabulary.
        top_k: Keep the k best tokens (0: off; values above V keep everything).
        top_p: Keep the smallest set of best tokens whose probability reaches ``top_p`` (0.0: off).

    Returns:
        A new tensor of the same shape and dtype; ``logits`` is not modified.

    Raises:
        ConfigError: both filters set, a negative top_k, or a top_p outside [0, 1].
    """
    _check_filters(top_k, top_p)
    logits = logits.clone()
    vocab = logits.shape[-1]
    if top_k > 0:
        threshold = torch.topk(logits, min(top_k, vocab), dim=-1).values[..., -1:]  # [..., 1]
        logits = logits.masked_fill(logits < threshold, -math.inf)
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [..., V] each
        cumulative = torch.softmax(sorted_logits.float(), dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative > top_p
        # Shift right: a token is removed only when the tokens before it already exceed top_p.
        remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, -math.inf)
    return logits


def sample_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
    race: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token per row: ``softmax(filter(logits / temperature))``, then a categorical draw (:func:`draw`).

    The division and the filtering run in float32 whatever the dtype of ``logits``: the original draws from
    float32 logits even when the Transformer runs in half precision.

    Args:
        logits: ``[..., V]`` scores.
        temperature: Divides the logits; must be positive (the original uses 0.98-0.99).
        top_k: See ``filter_logits``.
        top_p: See ``filter_logits``.
        generator: The random source (on the logits' device); None uses torch's global one.
        race: Exp(1) values shaped like ``logits`` to draw with instead of ``generator`` (see :func:`draw`).

    Returns:
        ``[...]`` int64 token ids.

    Raises:
        ConfigError: a non-positive or non-finite temperature, or bad filter settings.
    """
    if not math.isfinite(temperature) or temperature <= 0.0:
        raise ConfigError(f"temperature must be a positive number, got {temperature}.")
    scaled = logits.float() / temperature
    probs = torch.softmax(filter_logits(scaled, top_k=top_k, top_p=top_p), dim=-1)
    return draw(probs, generator, race=race)


def draw(
    probs: torch.Tensor, generator: torch.Generator | None = None, *, race: torch.Tensor | None = None
) -> torch.Tensor:
    """One categorical draw per row of ``probs`` [..., V] -> [...] int64, without waiting for the device.

    This is the computation ``torch.multinomial(probs, 1)`` performs for a single sample: argmax(p / q) with
    q ~ Exp(1) drawn by ``exponential_`` from ``generator`` (the exponential-race form of the Gumbel-max
    trick). Written out, it gives the same tokens from the same generator state, but skips multinomial's
    validity checks of ``probs``, which on some versions read a value back to the host on every call; a
    decode loop that launches work ahead of the device must not stall on each token. ``race``: the q values
    (shaped like ``probs``), when the caller keeps its own streams; ``generator`` is then unused.
    """
    flat = probs.reshape(-1, probs.shape[-1])  # (rows, V)
    if race is None:
        race = torch.empty_like(flat).exponential_(1, generator=generator)
    return (flat / race.reshape(flat.shape)).argmax(dim=-1).reshape(probs.shape[:-1])
