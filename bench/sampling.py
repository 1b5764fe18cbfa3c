"""Sampling speed: our prior against jukebox-infer's, same hyperparameters, same weights, same machine.

    python bench/sampling.py --preset 5b --width 256 --depth 8 --n-ctx 512 --tokens 256 --decode compiled

Builds one released prior layout with reduced sizes on both sides (see tests/oracle_priors.py: the
reference is jukebox-infer's own ``make_prior`` on its released hparams with the sizes overridden; random
seeded weights are copied into ours), then times, in one process, three sides: ours in ``eager`` decode
mode, ours in the ``--decode`` mode (``static``, ``compiled``, ``graph`` on CUDA, or ``auto``), and the
reference, each on:

* ancestral sampling of ``--tokens`` codes from an empty window (for 1b_lyrics the lyric tokens are always
  pushed through first, as in the original);
* priming: pushing ``n_ctx - tokens`` known codes through the Transformer in chunks of ``--chunk-size`` to
  fill the key/value caches (timed as a window with that context and one new token);
* a primed window: the same context, then ``--tokens`` new codes.

All sides run their whole sampling path (filter, then the categorical draw) with temperature 1 and top_k=1,
so every draw is the argmax and the codes must agree token for token; the table says whether they do. Our decoder (with its compiled step) is built and warmed up once, outside the timings, as a level's
sampling does. Prints the median tokens/s per side over ``--repeats`` runs (the sides alternate, so all see
the same machine load) and the ratios to the reference (above 1: ours is faster).
jukebox-infer is a test-only dependency: ``pip install -e .[test]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench._table import format_table as text_table  # noqa: E402

PRESETS = ("upsampler_level_0", "upsampler_level_1", "1b_lyrics", "5b", "5b_lyrics")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--preset", choices=PRESETS, default="upsampler_level_0", help="released layout to reduce")
    p.add_argument("--width", type=int, default=256, help="prior width (released: 1920 / 2048 / 4800)")
    p.add_argument("--depth", type=int, default=8, help="layers (released 72; 5b_lyrics needs >= 19 for a "
                   "cross-attention layer, 1b_lyrics >= 16 for a prime layer)")  # fmt: skip
    p.add_argument("--n-ctx", type=int, default=512, help="music positions per window (released 8192 / 6144)")
    p.add_argument("--tokens", type=int, default=256, help="codes to sample")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                   help="our Transformer working dtype; the reference runs fp16 for fp16, else fp32 (it has no "
                   "bf16), so bf16 codes may differ from the reference's")  # fmt: skip
    p.add_argument("--decode", default="compiled", choices=("auto", "static", "compiled", "graph"),
                   help="our fast side's decode mode (ours-eager is always timed too)")  # fmt: skip
    p.add_argument("--heads", type=int, default=None, help="default: the released number")
    p.add_argument(
        "--blocks",
        type=int,
        default=None,
        help="default: keep the released block length (64; 102 for 1b_lyrics) as nearly as divides",
    )
    p.add_argument(
        "--n-tokens", type=int, default=None, help="lyric tokens (default: released, scaled by n_ctx)"
    )
    p.add_argument("--vocab", type=int, default=2048, help="codebook size (released 2048)")
    p.add_argument("--chunk-size", type=int, default=32, help="priming chunk, both sides")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="runs per measurement, alternating the sides; the median counts",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _closest_divisor(n: int, target: float) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), d))


def make_reduction(args: argparse.Namespace):
    from jukebox_cli.engine.models.presets import prior_config
    from tests.oracle_priors import Reduction

    released = prior_config(args.preset)
    n_tokens = args.n_tokens
    if released.has_lyrics and n_tokens is None:
        n_tokens = max(16, round(released.n_tokens * args.n_ctx / released.n_ctx / 16) * 16)
    length = args.n_ctx + (n_tokens if released.single_enc_dec else 0)
    blocks = args.blocks
    if blocks is None:
        released_block_ctx = released.sequence_length // released.blocks
        blocks = _closest_divisor(length, length / released_block_ctx)
    extra = {}
    if released.lyric_encoder is not None:
        extra = dict(enc_width=max(64, args.width // 4 // 16 * 16), enc_depth=3, enc_heads=4,
                     enc_blocks=max(1, n_tokens // 16))  # fmt: skip
    return Reduction(width=args.width, depth=args.depth, n_ctx=args.n_ctx, blocks=blocks, heads=args.heads,
                     codebook_size=args.vocab, n_tokens=n_tokens, **extra)  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[torch.Tensor, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def run(args: argparse.Namespace) -> tuple[list[dict], object, object, str, float]:
    from jukebox_cli.engine.sampling.decode import make_decoder
    from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window
    from tests.oracle_priors import build_pair, make_inputs, reference_sample

    if args.threads:
        torch.set_num_threads(args.threads)
    reduction = make_reduction(args)
    ours, reference = build_pair(args.preset, reduction, seed=args.seed, device=args.device)
    c = ours.config
    codes, labels, upper = make_inputs(c, batch=args.batch, seed=args.seed + 1, device=args.device)
    dtype = DTYPES[args.dtype]
    known = c.n_ctx - args.tokens
    if known < 0:
        raise SystemExit(f"--tokens {args.tokens} exceeds --n-ctx {c.n_ctx}")
    # One decoder per side for the whole run, as sample_level keeps one per level.
    decoders = {mode: make_decoder(ours, args.batch, dtype=dtype, device=args.device, mode=mode,
                                   steps=10**9 if mode == "auto" else None)
                for mode in ("eager", args.decode)}  # fmt: skip

    def ours_fn(mode, context, n_new):
        settings = SamplingSettings(temperature=1.0, top_k=1, chunk_size=args.chunk_size,
                                    decode=decoders[mode].mode)  # fmt: skip
        return lambda: sample_window(ours, context, n_new, labels, upper_codes=upper, settings=settings,
                                     dtype=dtype, decoder=decoders[mode])  # fmt: skip

    def ref_fn(context, n_new):
        return lambda: reference_sample(reference, context, n_new, labels, upper, chunk_size=args.chunk_size,
                                        fp16=dtype == torch.float16, seed=args.seed)  # fmt: skip

    sides = {"eager": partial(ours_fn, "eager"), "fast": partial(ours_fn, args.decode), "reference": ref_fn}
    warm_up = time.perf_counter()
    for fn in sides.values():  # allocator, kernels, lazy imports; the fast side compiles here
        fn(codes[:, :5], 3)()
    warm_up = time.perf_counter() - warm_up
    empty, context = codes[:, :0], codes[:, :known]
    cases = [
        ("ancestral", f"{args.tokens} new from an empty window", empty, args.tokens, args.tokens),
        ("prime", f"{known} known in chunks of {args.chunk_size} (+1 new)", context, 1, known),
        ("primed window", f"{known} known + {args.tokens} new", context, args.tokens, args.tokens),
    ]
    rows = []
    for name, what, ctx, n_new, counted in cases:
        if counted == 0:
            continue
        times: dict[str, list[float]] = {side: [] for side in sides}
        agree = {"fast": True, "eager": True}
        for _ in range(max(1, args.repeats)):  # alternate, so every side sees the same machine load
            got = {}
            for side, fn in sides.items():
                got[side], elapsed = _timed(fn(ctx, n_new), args.device)
                times[side].append(elapsed)
            agree["fast"] &= torch.equal(got["fast"].cpu(), got["eager"].cpu())
            agree["eager"] &= torch.equal(got["eager"].cpu(), got["reference"].cpu())
        rate = {side: counted * args.batch / statistics.median(t) for side, t in times.items()}
        rows.append(dict(name=name, what=what, rate=rate, agree=agree))
    return rows, c, reduction, decoders[args.decode].mode, warm_up


def describe(args, c, reduction) -> str:
    funcs = c.attn_funcs()
    kinds = {0: "dense", 1: "block", 2: "transpose", 3: "previous", 6: "cross", 7: "prime"}
    counts = ", ".join(f"{sum(f == k for f in funcs)} {name}" for k, name in kinds.items() if k in funcs)
    parts = [f"preset {args.preset} (reduced): width {c.width}, depth {c.depth} ({counts}), heads {c.heads}, "
             f"n_ctx {c.n_ctx}, blocks {c.blocks} (block_ctx {c.sequence_length // c.blocks}), vocab "
             f"{c.codebook_size}"]  # fmt: skip
    if c.single_enc_dec:
        parts.append(f"  lyrics in sequence: {c.n_tokens} tokens (sequence {c.sequence_length})")
    if c.lyric_encoder is not None:
        e = c.lyric_encoder
        parts.append(
            f"  lyric encoder: {c.n_tokens} tokens, width {e.width}, depth {e.depth}, heads {e.heads}"
        )
        if 6 not in funcs:
            parts.append("  note: depth < 19 has no cross-attention layer")
    parts.append(f"  batch {args.batch}, {args.device}, {args.dtype}, threads {torch.get_num_threads()}, "
                 f"torch {torch.__version__}")  # fmt: skip
    return "\n".join(parts)


def format_table(rows: list[dict], fast_mode: str) -> str:
    header = ("measurement", "what", "eager tok/s", f"{fast_mode} tok/s", "reference tok/s", "eager/ref",
              f"{fast_mode}/ref", f"{fast_mode} = eager", "eager = ref")  # fmt: skip
    body = []
    for r in rows:
        rate, agree = r["rate"], r["agree"]
        body.append((r["name"], r["what"], f"{rate['eager']:.1f}", f"{rate['fast']:.1f}", f"{rate['reference']:.1f}",
                     f"{rate['eager'] / rate['reference']:.2f}x", f"{rate['fast'] / rate['reference']:.2f}x",
                     "identical" if agree["fast"] else "DIFFER",
                     "identical" if agree["eager"] else "DIFFER"))  # fmt: skip
    return text_table([header, *body], left=2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import jukebox_infer  # noqa: F401
    except ImportError:
        print("jukebox-infer is not installed (pip install -e .[test]); nothing to compare against.",
              file=sys.stderr)  # fmt: skip
        return 2
    # jukebox_infer.transformer.ops decorates with torch.jit.script at import (not our code).
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    rows, c, reduction, fast_mode, warm_up = run(args)
    print(describe(args, c, reduction))
    print(
        f"  fast side: decode {fast_mode}; warm-up (compiles) {warm_up:.1f} s; median of {args.repeats} runs"
    )
    print()
    print(format_table(rows, fast_mode))
    # bf16 rounds differently from the reference's float32, so only our two sides must then agree.
    must_agree = ("fast",) if args.dtype == "bf16" else ("fast", "eager")
    return 0 if all(r["agree"][k] for r in rows for k in must_agree) else 1


if __name__ == "__main__":
    raise SystemExit(main())
