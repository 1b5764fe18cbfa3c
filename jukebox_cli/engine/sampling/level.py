"""Sampling codes from a prior: one window with a key/value cache, and a whole level window by window
("Windows" in docs/ARCHITECTURE.md).

Each sample draws from its own stream, seeded per (seed, level, window, sample) (``noise.py``), so a run that
resumes from its last finished window draws exactly the tokens an uninterrupted run would have drawn, and
how the samples are split into batches does not change them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.prior import Prior, PriorConfig
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop
from jukebox_cli.engine.sampling.decode import MODES as DECODE_MODES
from jukebox_cli.engine.sampling.decode import Decoder, make_decoder, prepare, resolve_mode
from jukebox_cli.engine.sampling.filtering import sample_logits
from jukebox_cli.engine.sampling.noise import RaceNoise, stream_seed
from jukebox_cli.engine.sampling.windows import Window, plan_level, window_advance


@dataclass(frozen=True)
class SamplingSettings:
    """How one level is sampled; the defaults are the original ``sample.py``'s for an upsampler."""

    temperature: float = 0.99
    top_k: int = 0
    top_p: float = 0.0
    hop_fraction: float = 0.5  # window advance as a fraction of n_ctx (0.125 for the top level)
    chunk_size: int = 32  # known positions pushed through the Transformer at once when priming the cache
    max_batch_size: int = 16
    greedy: bool = False  # argmax instead of drawing (tests and parity checks)
    # How each token is computed: "eager", "static", "compiled", "graph" (CUDA) or "auto" (see decode.py).
    # Every mode gives the same logits up to float rounding.
    decode: str = "auto"

    def __post_init__(self) -> None:
        if self.decode not in DECODE_MODES:
            raise ConfigError(f"Unknown decode mode {self.decode!r}; use one of {', '.join(DECODE_MODES)}.")


PROGRESS_EVERY = 32  # tokens per Advanced event: one event per token costs more than a fast step


@contextlib.contextmanager
def threads_for(prior: Prior, device: torch.device) -> Iterator[None]:
    """Small priors on the CPU sample faster on one thread: per-token matmuls are too small to split, and
    thread hand-offs dominate (25x slower under CPU contention, measured on 2 cores)."""
    small = device.type == "cpu" and prior.config.width <= 512
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def sample_window(
    prior: Prior,
    context: torch.Tensor,
    n_new: int,
    labels: torch.Tensor,
    *,
    upper_codes: torch.Tensor | None = None,
    settings: SamplingSettings = SamplingSettings(),
    dtype: torch.dtype = torch.float32,
    noise: RaceNoise | None = None,
    progress: ProgressCallback = noop,
    stage: str = "tokens",
    decoder: Decoder | None = None,
) -> torch.Tensor:
    """Sample ``n_new`` codes after ``context`` within one window.

    Args:
        prior: the prior of the level being sampled (eval mode).
        context: [N, K] codes already known in this window (K may be 0).
        n_new: how many codes to sample; K + n_new <= n_ctx.
        labels: [N, label_length] label vectors of this window.
        upper_codes: upsamplers: [N, n_ctx / 4] codes of the level above covering this window.
        settings: temperature, filters, chunk size, decode mode.
        dtype: the Transformer's working dtype (float16/bfloat16 on GPU; softmax and LayerNorm stay float32).
        noise: each row's random stream (on the prior's device); None seeds one per row from torch's global
            generator.
        progress: receives a ``stage`` counted in sampled tokens (in steps of ``PROGRESS_EVERY``).
        decoder: reuse this decoder (for ``prior``, N sequences, ``dtype``) and its buffers instead of making
            one for this window from ``settings.decode``.

    Returns:
        [N, K + n_new] codes (the context unchanged, then the new codes).
    """
    c = prior.config
    batch, known = context.shape
    if known + n_new > c.n_ctx:
        raise ConfigError(f"A window holds {c.n_ctx} codes; {known} known + {n_new} new exceed it.")
    device = labels.device
    if decoder is None:
        decoder = make_decoder(prior, batch, dtype=dtype, device=device, mode=settings.decode, steps=n_new)
    if noise is None and not settings.greedy:
        noise = RaceNoise.from_global(batch, device)
    prior = decoder.prior  # Conv1D weights resident in dtype
    x_cond, y_cond, lyrics = prior.conditioning(labels, upper_codes)
    encoder_kv = prior.encode_lyrics(lyrics, dtype) if c.lyric_encoder is not None else None
    # 1b: the lyrics are the given start of the sequence, and music ids are shifted past the lyric vocabulary.
    prefix = torch.cat([lyrics, context + c.n_vocab], dim=1) if c.single_enc_dec else context
    total = prefix.shape[1] + n_new
    tokens = torch.zeros(batch, total, dtype=torch.long, device=device)
    tokens[:, : prefix.shape[1]] = prefix
    decoder.start(x_cond, y_cond, encoder_kv)
    decoder.prime(prefix, settings.chunk_size)  # the known positions fill the cache; outputs unused
    progress(StageStarted(stage, n_new, "token"))
    reported = 0
    for t in range(prefix.shape[1], total):
        logits = decoder.step()
        if settings.greedy:
            token = logits.argmax(dim=-1)
        else:
            token = sample_logits(logits, temperature=settings.temperature, top_k=settings.top_k,
                                  top_p=settings.top_p, race=noise.take(logits.shape[-1]))  # fmt: skip
        tokens[:, t] = token
        decoder.advance(token)
        done = t + 1 - prefix.shape[1]
        if done - reported == PROGRESS_EVERY or t + 1 == total:
            progress(Advanced(stage, done - reported))
            reported = done
    progress(StageFinished(stage))
    if c.single_enc_dec:
        # A lyric id sampled in a music slot becomes code 0 after the shift back, as in the original.
        return (tokens[:, c.n_tokens :] - c.n_vocab).clamp(min=0)
    return tokens


LabelsForWindow = Callable[[Window], torch.Tensor]


def level_decode(config: PriorConfig, existing: int, total: int, rows: int, settings: SamplingSettings,
                 device: torch.device) -> tuple[str, list[int]]:  # fmt: skip
    """The decode mode `sample_level` will run a level in (``settings.decode`` resolved for the tokens it
    will sample) and the batch sizes it will make decoders for: from ``existing`` codes to ``total``, for
    ``rows`` sequences in pieces of ``settings.max_batch_size``."""
    plan = plan_level(total, existing, config.n_ctx, window_advance(settings.hop_fraction, config.n_ctx))
    step = settings.max_batch_size
    pieces = [min(step, rows - start) for start in range(0, rows, step)]
    mode = resolve_mode(settings.decode, torch.device(device), steps=len(pieces) * sum(w.n_new for w in plan))
    return mode, sorted(set(pieces))


@torch.no_grad()
def sample_level(
    prior: Prior,
    codes: torch.Tensor,
    total: int,
    labels_for: LabelsForWindow,
    *,
    upper_codes: torch.Tensor | None = None,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    first_window: int = 0,
    on_window: Callable[[torch.Tensor, int], None] | None = None,
    progress: ProgressCallback = noop,
    first_sample: int = 0,
) -> torch.Tensor:
    """Extend one level's codes [N, K] to ``total`` codes, window by window (``windows.plan_level``).

    Args:
        prior: this level's prior.
        codes: [N, K] codes already present (empty for ancestral sampling); they are kept verbatim.
        total: codes the level must have at the end.
        labels_for: label vectors [N, label_length] for a window.
        upper_codes: upsamplers: [N, total / 4] codes of the level above.
        settings: sampling settings of this level.
        seed: the run's seed.
        first_window: index of the first window of this plan within the whole level (resumed runs), so each
            window's random seed is the one an uninterrupted run would use.
        on_window: called with (codes so far, windows done) after every window, e.g. to save them.
        progress: receives ``"level L windows"`` and per-window token stages.
        first_sample: the run's index of ``codes``' first row, which seeds its random stream (a process that
            samples a share of the run's samples, ``ranks.Ranks.share``, draws what one process would).

    Returns:
        [N, total] codes.
    """
    c = prior.config
    hop = window_advance(settings.hop_fraction, c.n_ctx)
    plan = plan_level(total, codes.shape[1], c.n_ctx, hop)
    if c.is_upsampler and plan:
        factor = c.conditioner.upsampling
        if total < c.n_ctx:
            raise ConfigError(
                f"Level {c.level} needs at least {c.n_ctx} codes ({c.window_samples} samples) for one window of "
                f"its upsampler; the song has {total}. Ask for a longer duration."
            )
        if upper_codes is None or upper_codes.shape[1] * factor < total:
            raise ConfigError(f"Level {c.level} needs the codes of level {c.level + 1} for the whole song.")
    stage = f"level {c.level} windows"
    progress(StageStarted(stage, len(plan), "window"))
    # One decoder per batch-piece size serves every window of the level (its buffers and compiled step are
    # reused), over Conv1D weights cast to the working dtype once for the whole level.
    mode, _ = level_decode(c, codes.shape[1], total, codes.shape[0], settings, codes.device)
    prior = prepare(prior, dtype, codes.device, mode)
    decoders: dict[int, Decoder] = {}

    def decoder_for(batch: int) -> Decoder:
        if batch not in decoders:
            decoders[batch] = make_decoder(prior, batch, dtype=dtype, device=codes.device, mode=mode)
        return decoders[batch]

    with threads_for(prior, codes.device):
        codes = _run_windows(prior, codes, plan, labels_for, upper_codes, settings, seed, dtype, first_window,
                             on_window, progress, stage, decoder_for, first_sample)  # fmt: skip
    progress(StageFinished(stage))
    return codes


def _run_windows(prior, codes, plan, labels_for, upper_codes, settings, seed, dtype, first_window, on_window,
                 progress, stage, decoder_for, first_sample):  # fmt: skip
    c = prior.config
    for index, window in enumerate(plan, start=first_window):
        context = codes[:, window.start : window.new_start]
        labels = labels_for(window)
        upper = None
        if c.is_upsampler:
            factor = c.conditioner.upsampling
            upper = upper_codes[:, window.start // factor : window.end // factor]
        pieces = []
        for rows in torch.arange(codes.shape[0]).split(settings.max_batch_size):
            seeds = [stream_seed(seed, c.level, index, first_sample + int(row)) for row in rows]
            noise = RaceNoise(seeds, codes.device)
            out = sample_window(
                prior, context[rows], window.n_new, labels[rows],
                upper_codes=None if upper is None else upper[rows], settings=settings, dtype=dtype,
                noise=noise, progress=progress, stage=f"window {index + 1} tokens",
                decoder=decoder_for(len(rows)),
            )  # fmt: skip
            pieces.append(out[:, -window.n_new :])
        codes = torch.cat([codes, torch.cat(pieces, dim=0)], dim=1)
        if on_window is not None:
            on_window(codes, index + 1)
        progress(Advanced(stage))
    return codes
