"""Time our VQ-VAE against the jukebox-infer reference on the same audio, weights and process.

Both models use the released architecture with the same random weights (built as in the oracle tests, see
tests/oracle.py): nothing is downloaded. For each operation the best of ``--repeats`` wall-clock runs is
reported, after one untimed warm-up run, under ``torch.inference_mode()``; our runs and the reference's
alternate, so load from other processes affects both alike.

    python bench/vqvae_speed.py --seconds 10 --repeats 3 --device cpu --threads 2

Needs the ``jukebox-infer`` package (``pip install jukebox-infer==0.1.2``, part of the ``test`` extra).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._table import format_table  # noqa: E402
from jukebox_cli.engine import build_vqvae  # noqa: E402
from jukebox_cli.engine.checkpoints.layouts import import_state_dict  # noqa: E402
from tests import oracle  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the test audio (44.1 kHz)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per operation (best is reported)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--chunk-samples",
        type=int,
        default=2**19,
        help="our encode/decode chunk size in samples (default: our default, 2**19); 0 for one pass",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight / audio seed")
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def best_times(
    fn_ours: Callable[[], object], fn_ref: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float, object, object]:
    """Best wall time of each of two functions over ``repeats`` runs, after one warm-up run of each.

    The runs are interleaved (ours, ref, ref, ours, ...) so that load from other processes hits both alike.
    Also returns each function's last result.
    """
    fns = {"ours": fn_ours, "ref": fn_ref}
    best = {"ours": float("inf"), "ref": float("inf")}
    results = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            results[name] = fn()
            _sync(device)
        for r in range(repeats):
            for name in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
                start = time.perf_counter()
                results[name] = fns[name]()
                _sync(device)
                best[name] = min(best[name], time.perf_counter() - start)
    return best["ours"], best["ref"], results["ours"], results["ref"]


def build_models(audio: torch.Tensor, seed: int):
    """(reference, ours) on CPU with identical weights and codebooks seeded from ``audio``."""
    ref = oracle.build_reference_vqvae(seed=seed)
    oracle.normalise_reference_latents(ref, audio)
    oracle.seed_reference_codebooks(ref, (audio,), seed=seed)
    ours = build_vqvae("jukebox", seed=seed + 1)
    import_state_dict(ours, ref.state_dict(), "original")
    return ref.eval(), ours.eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    chunk = args.chunk_samples or None

    audio = oracle.make_test_audio(args.seconds, seed=args.seed)
    seconds = audio.shape[-1] / 44100
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}; audio {seconds:.2f} s ({audio.shape[-1]} samples), "
        f"best of {args.repeats} (after 1 warm-up), our chunk_samples={chunk}",
        flush=True,
    )
    ref, ours = build_models(audio, args.seed)
    ref, ours, audio = ref.to(device), ours.to(device), audio.to(device)

    rows = []
    t_ours, t_ref, our_codes, ref_codes = best_times(
        lambda: ours.encode(audio, chunk_samples=chunk),
        lambda: oracle.reference_encode(ref, audio),
        args.repeats,
        device,
    )
    rows.append(("encode (3 levels)", t_ours, t_ref))
    agreement = []
    for level, (mine, theirs) in enumerate(zip(our_codes, ref_codes, strict=True)):
        if mine.shape != theirs.shape:
            agreement.append(f"level {level}: shapes differ {tuple(mine.shape)} vs {tuple(theirs.shape)}")
        else:
            differ = int((mine != theirs).sum())
            agreement.append(
                f"level {level}: {'identical' if differ == 0 else f'{differ} differ'} "
                f"({theirs.numel()} codes, {theirs.unique().numel()} distinct)"
            )

    decode_diffs = []
    for level in range(3):
        codes = ref_codes[level]
        t_ours, t_ref, our_audio, ref_audio = best_times(
            lambda codes=codes, level=level: ours.decode(codes, level, chunk_samples=chunk),
            lambda codes=codes, level=level: oracle.reference_decode(ref, codes, level),
            args.repeats,
            device,
        )
        rows.append((f"decode level {level}", t_ours, t_ref))
        decode_diffs.append(
            f"level {level}: max |ours - ref| = {(our_audio - ref_audio).abs().max().item():.3g}"
        )

    header = ("operation", "ours (s)", "reference (s)", "ours (audio s/s)", "ref (audio s/s)", "ref/ours")
    table = [header] + [
        (
            name,
            f"{mine:.3f}",
            f"{theirs:.3f}",
            f"{seconds / mine:.1f}",
            f"{seconds / theirs:.1f}",
            f"{theirs / mine:.2f}",
        )
        for name, mine, theirs in rows
    ]
    print()
    print(format_table(table))
    print("\nref/ours > 1 means ours is faster.")
    print("codes (ours vs reference): " + "; ".join(agreement))
    print("decoded audio: " + "; ".join(decode_diffs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
