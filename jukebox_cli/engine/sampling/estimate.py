"""How long a run will take on the device at hand, said before it starts: a short probe of the decode step.

The probe builds a slice of each level's prior: one block of each attention type the prior uses, at its real
width and context, with random weights (speed does not depend on their values, so a released model needs no
download), on the device, in the working dtype, in the decode mode the run will use. It times decoding steps
and priming at the run's batch size, and scales them from the slice's blocks to the prior's depth; it times a window's conditioning (the
upsamplers' conv stack, the lyric encoder) too. A level's time is then, for each batch piece, each window's
conditioning and the priming of its known codes, plus one step per new token.

What the probe leaves out: the VQ-VAE decode and the lyric alignment (seconds, next to hours of sampling).
Compiling on the CPU takes tens of seconds per decoder, more than a probe should; there the probe times the
eager step and applies the compiled/eager ratio measured at the nearest width (see ``_CPU_COMPILED_SPEEDUP``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.prior import PriorConfig
from jukebox_cli.engine.models.transformer import attention_pattern
from jukebox_cli.engine.sampling.decode import make_decoder, prepare, resolve_mode
from jukebox_cli.engine.sampling.level import threads_for
from jukebox_cli.engine.sampling.plan import LevelPlan
from jukebox_cli.engine.sampling.request import CascadeRequest
from jukebox_cli.engine.sampling.windows import plan_level, window_advance
from jukebox_cli.engine.weights.bundle import Bundle

# Compiled / eager time per decode step on the CPU, by width (one thread, fp32; measured on an idle 2-core
# Xeon with AVX-512: the table in sampling/decode.py, whose batch-1 rows these ratios are).
_CPU_COMPILED_SPEEDUP = {64: 0.17, 128: 0.28, 256: 0.34, 1024: 0.73}
# Compiling one CPU decoder, seconds (the same measurements: 4 to 37 s, growing with width).
_CPU_COMPILE_SECONDS = {64: 15.0, 128: 10.0, 256: 17.0, 1024: 37.0}
_PROBE_TOKENS = (4, 12)  # two window lengths: their difference is the time of the extra steps
_PROBE_CONTEXT = 64  # known codes primed in a third window: the priming cost per code
_CONDITIONING_PART = 8  # an upsampler's conditioning is timed on this fraction of a window (1/8)


@dataclass(frozen=True)
class LevelEstimate:
    """Expected time of one level on one device.

    Attributes:
        level: the VQ-VAE level.
        mode: the decode mode the run will use there.
        step_seconds: one decode step of the whole prior at the run's batch size.
        prime_seconds_per_code: priming one known code (per batch piece).
        window_seconds: a window's conditioning (the upsampler's conv stack, or the lyric encoder).
        sampling_seconds: all windows of the level: conditioning, priming and decoding, every batch piece.
        one_off_seconds: compiling or capturing the decode step, once per level (0 in eager mode).
        probed: how the step was measured, for the record.
    """

    level: int
    mode: str
    step_seconds: float
    prime_seconds_per_code: float
    window_seconds: float
    sampling_seconds: float
    one_off_seconds: float
    probed: str

    @property
    def seconds(self) -> float:
        return self.sampling_seconds + self.one_off_seconds


def probe_config(config: PriorConfig) -> PriorConfig:
    """The slice of a prior the probe builds: one block per attention type, everything else as it is."""
    kinds = list(dict.fromkeys(config.attn_funcs()[: config.depth]))
    encoder = config.lyric_encoder
    if encoder is not None:
        enc_kinds = list(
            dict.fromkeys(encoder.attn_pattern or attention_pattern(encoder.attn_order, encoder.depth))
        )
        encoder = dataclasses.replace(encoder, depth=len(enc_kinds), attn_pattern=tuple(enc_kinds))
    return dataclasses.replace(
        config, depth=len(kinds), attn_pattern=tuple(kinds), lyric_encoder=encoder, alignment_layer=None
    )


def _architecture(config: PriorConfig) -> str:
    """What decides a probe's timings: the config apart from which level (and hop) it serves."""
    return repr({k: v for k, v in config.to_dict().items() if k not in ("level", "hop_length")})


def _probe_labels(config: PriorConfig, batch: int, device: torch.device) -> torch.Tensor:
    total = (
        math.ceil(config.min_duration * config.sample_rate) if config.min_duration else config.window_samples
    )
    row = [max(total, config.window_samples), 0, config.window_samples, 0]
    row += [0] + [-1] * (config.max_genres - 1) + [0] * config.n_tokens
    return torch.tensor([row] * batch, dtype=torch.long, device=device)


def _nearest(table: dict[int, float], width: int) -> float:
    return table[min(table, key=lambda w: abs(math.log(w / width)))]


@dataclass(frozen=True)
class Probe:
    """Whole-prior costs measured on a slice (see :func:`probe`), in seconds."""

    step: float  # one decode step
    prime_per_code: float  # priming one known code
    per_window: float  # a window's conditioning: the upsampler's conv stack, or the lyric encoder
    one_off: float  # compiling or capturing the step, once per level
    how: str


@torch.no_grad()
def probe(config: PriorConfig, *, batch: int, dtype: torch.dtype, device: torch.device, mode: str,
          chunk_size: int = 32) -> Probe:  # fmt: skip
    """The costs of the whole prior, measured on its slice and scaled to its depth.

    Args:
        config: the level's prior.
        batch: sequences decoded together.
        dtype, device: the working dtype and the device.
        mode: a resolved decode mode (not ``auto``).
        chunk_size: known codes primed at once.
    """
    sliced = probe_config(config)
    probe_mode = "eager" if device.type == "cpu" and mode == "compiled" else mode
    prior = prepare(build_prior(sliced, device, seed=0), dtype, device, probe_mode)
    decoder = make_decoder(prior, batch, dtype=dtype, device=device, mode=probe_mode)
    labels = _probe_labels(config, batch, device)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - start

    with threads_for(prior, device):  # the sampler's own thread count for this prior
        if config.is_upsampler:
            # The conv stack costs the same per code and per sample: time one sample's first eighth of the
            # window and scale, rather than spend a minute on it; the steps see a conditioning of zeros.
            upper = config.n_ctx // config.conditioner.upsampling
            part = max(upper // _CONDITIONING_PART, 1)
            codes = torch.zeros(1, part, dtype=torch.long, device=device)
            (_, y_cond, tokens), conditioning = timed(lambda: prior.conditioning(labels[:1], codes))
            conditioning *= batch * upper / part
            x_cond = torch.zeros(batch, config.n_ctx, config.width, device=device)
            y_cond = y_cond.expand(batch, -1, -1)
        else:
            (x_cond, y_cond, tokens), conditioning = timed(lambda: prior.conditioning(labels, None))
        encoder_kv, encoding = None, 0.0
        if config.lyric_encoder is not None:
            encoder_kv, encoding = timed(lambda: prior.encode_lyrics(tokens, dtype))
            encoding *= config.lyric_encoder.depth / sliced.lyric_encoder.depth

        def window(known: int, new: int) -> float:
            def run() -> None:
                decoder.start(x_cond, y_cond, encoder_kv)
                # Priming is timed per code (the 1b lyric prefix is counted as codes in estimate_cascade), so
                # the probe windows leave the prefix out: four fewer primings of up to 512 codes.
                decoder.prime(torch.zeros(batch, known, dtype=torch.long, device=device), chunk_size)
                for _ in range(new):
                    decoder.advance(decoder.step().argmax(dim=-1))

            return timed(run)[1]

        short, long = _PROBE_TOKENS
        first = window(0, short)  # the first window compiles or captures, where the mode does
        runs = [window(0, short), window(0, long), window(_PROBE_CONTEXT, short)]
    scale = config.depth / sliced.depth
    step = max(runs[1] - runs[0], 1e-9) / (long - short) * scale
    prime = max(runs[2] - runs[0], 0.0) / _PROBE_CONTEXT * scale
    one_off = max(first - runs[0], 0.0) if probe_mode != "eager" else 0.0
    how = f"{probe_mode} step of {sliced.depth} of {config.depth} blocks at width {config.width}, scaled"
    if probe_mode != mode:  # a compiled CPU step, from the eager one
        step *= _nearest(_CPU_COMPILED_SPEEDUP, config.width)
        one_off = _nearest(_CPU_COMPILE_SECONDS, config.width)
        how += " x the measured compiled/eager ratio"
    return Probe(step, prime, conditioning + encoding, one_off, how)


def estimate_cascade(
    bundle: Bundle, request: CascadeRequest, plans: list[LevelPlan], *, device: torch.device, decode: str,
    dtype: torch.dtype, processes: int = 1,
) -> list[LevelEstimate]:  # fmt: skip
    """The expected time of each planned level on ``device`` (see the module docstring).

    Args:
        bundle: the model (only its prior configs are read).
        request: the run's settings (samples, batch sizes, chunk size).
        plans: from ``plan.plan_cascade``.
        device: where the run will sample.
        decode: the run's decode mode (``auto`` is resolved per level as the sampler resolves it).
        dtype: the working dtype.
        processes: processes sharing the takes (torchrun): the time is that of the largest share.
    """
    n = -(-len(request.samples) // processes)
    estimates = []
    probes: dict[tuple, Probe] = {}
    for plan in plans:
        config = bundle.prior_configs[plan.level]
        batch = plan.batch_size
        pieces = -(-n // batch)
        windows = plan_level(plan.total_codes, plan.existing_codes, config.n_ctx,
                             window_advance(request.hop_fraction[plan.level], config.n_ctx))  # fmt: skip
        mode = resolve_mode(decode, device, steps=pieces * plan.new_tokens)
        # Both released upsamplers share one architecture: probe it once.
        key = (_architecture(config), batch, mode)
        if key not in probes:
            probes[key] = probe(
                config, batch=batch, dtype=dtype, device=device, mode=mode, chunk_size=request.chunk_size
            )
        cost = probes[key]
        lyrics = config.n_tokens if config.single_enc_dec else 0  # 1b_lyrics primes its lyrics every window
        primed = sum(w.n_context + lyrics for w in windows)
        per_piece = (
            plan.new_tokens * cost.step + primed * cost.prime_per_code + len(windows) * cost.per_window
        )
        estimates.append(LevelEstimate(plan.level, mode, cost.step, cost.prime_per_code, cost.per_window,
                                       pieces * per_piece, cost.one_off if windows else 0.0, cost.how))  # fmt: skip
    return estimates
