"""Training throughput: our VQ-VAE and prior against jukebox-infer's, same batch, same weights, same process.

    python bench/train_speed.py --threads 2 --batch 2 --samples 32768 --repeats 5

One training step is forward + loss + backward + ``torch.optim.Adam`` step (lr 1e-4), both models in train
mode (the VQ-VAE codebooks' EMA updates run on both sides). Two models:

* ``vqvae``: the released VQ-VAE architecture, built as in the oracle tests (tests/oracle.py): the
  reference is jukebox-infer's ``make_vqvae`` on the released hyperparameters with random seeded weights,
  encoder output projections rescaled and codebooks filled from its own latents on the batch, then loaded
  into ours with the ``"original"`` layout. Ours trains with ``vqvae_loss`` (the released recipe from our
  config), the reference with its own ``forward(x, hps, loss_fn="lmix")`` on the same recipe and the same
  bandwidth normalisers (computed from the batch).
* ``prior``: the ``upsampler_level_0`` layout with width 256, depth 8, n_ctx 1024, blocks 32 (every other
  size, the conditioner included, as released), built as in tests/oracle_priors.py: jukebox-infer's
  ``make_prior`` with the sizes overridden, every parameter redrawn from a seed and copied into ours. Ours
  trains on ``prior(codes, labels, upper_codes).loss``, the reference on ``z_forward(...)``'s loss (its
  teacher-forced training loss, bits per token).

Warm-up steps first (the first one's losses are printed side by side), then ``--repeats`` timed steps per
side, ours and the reference alternating so that load from other processes hits both alike. Prints the
median seconds per step, steps/s and ref/ours (above 1: ours is faster). Exit status 1 if a loss is not
finite. Needs ``jukebox-infer`` (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._table import format_table  # noqa: E402
from jukebox_cli.engine.audio import metrics as M  # noqa: E402
from jukebox_cli.engine.checkpoints.layouts import import_state_dict  # noqa: E402
from jukebox_cli.engine.models.builders import build_vqvae  # noqa: E402
from jukebox_cli.engine.models.presets import prior_config  # noqa: E402
from jukebox_cli.engine.train.vqvae import vqvae_loss  # noqa: E402
from tests import oracle, oracle_priors  # noqa: E402

PRIOR_PRESET = "upsampler_level_0"
LR = 1e-4
# The loss components both VQ-VAEs report under the same names (summed over levels).
VQVAE_TERMS = ("recons_loss", "spectral_loss", "multispectral_loss", "commit_loss")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch", type=int, default=2, help="examples per step (VQ-VAE chunks, prior windows)")
    p.add_argument("--samples", type=int, default=32768, help="VQ-VAE chunk length (a multiple of 128)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per side (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (at least 1)")
    p.add_argument("--only", choices=("vqvae", "prior"), default=None, help="time one model only")
    p.add_argument("--width", type=int, default=256, help="prior width (released 1920)")
    p.add_argument("--depth", type=int, default=8, help="prior depth (released 72)")
    p.add_argument("--n-ctx", type=int, default=1024, help="prior window in codes (released 8192)")
    p.add_argument("--blocks", type=int, default=32, help="prior attention blocks (released 128)")
    p.add_argument("--cond-width", type=int, default=None, help="upsampler conditioner width (default: 1024)")
    p.add_argument("--cond-depth", type=int, default=None, help="upsampler conditioner depth (default: 16)")
    p.add_argument(
        "--ref-cond-checkpoint",
        choices=("on", "off"),
        default="on",
        help="the reference conditioner's gradient checkpointing (released cond_c_res=1: on)",
    )
    p.add_argument(
        "--ema-restore",
        choices=("even", "original"),
        default="even",
        help="VQ-VAE codebook EMA re-seeding: 2 uses per code, or the original's sample_length // hop",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.samples % oracle.HOP_LENGTHS[-1] or args.samples <= 2048:
        p.error(f"--samples must be a multiple of {oracle.HOP_LENGTHS[-1]} above 2048")
    if args.warmup < 1 or args.repeats < 1 or args.batch < 1:
        p.error("--warmup, --repeats and --batch must be at least 1")
    return args


# -- timing -----------------------------------------------------------------------------------------------


def time_steps(
    step_ours: Callable[[], dict], step_ref: Callable[[], dict], warmup: int, repeats: int
) -> tuple[list[float], list[float], dict, dict]:
    """Seconds per step of each side, and each side's values from its first warm-up step.

    Warm-up steps run ours then the reference; timed steps alternate the order every round (ours, ref, ref,
    ours, ...), so a burst of load from another process falls on both sides alike.
    """
    steps = {"ours": step_ours, "ref": step_ref}
    first: dict[str, dict] = {}
    for i in range(warmup):
        for name, step in steps.items():
            values = step()
            if i == 0:
                first[name] = values
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for r in range(repeats):
        for name in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times["ours"], times["ref"], first["ours"], first["ref"]


def train_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, loss_fn: Callable
) -> Callable[[], dict]:
    """One optimiser step: ``loss_fn()`` returns (loss, {name: value}); the step returns the values as floats."""

    def step() -> dict:
        optimiser.zero_grad(set_to_none=True)
        loss, values = loss_fn()
        loss.backward()
        optimiser.step()
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in values.items()}}

    return step


def _trainable(model: torch.nn.Module) -> torch.nn.Module:
    """Train mode with every parameter trainable (the reference's factories freeze their models)."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model.train()


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _quiet():
    """Swallow the reference's prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# -- VQ-VAE -----------------------------------------------------------------------------------------------


def _reference_stft(sig: torch.Tensor, hps) -> torch.Tensor:
    """Stand-in for jukebox-infer's ``audio_utils.stft`` on current PyTorch.

    The reference calls ``torch.stft`` without ``return_complex``, which PyTorch 1.x answered with a
    ``[..., 2]`` real tensor (real, imaginary) and PyTorch 2 rejects for real input. This asks for the
    complex result and views it as that same real tensor, so the reference's ``norm(..., dim=-1)`` still
    yields the magnitude. Same STFT arguments (its Hann window is still rebuilt on every call).
    """
    window = torch.hann_window(hps.window_size, device=sig.device)
    spec = torch.stft(sig, hps.n_fft, hps.hop_length, win_length=hps.window_size, window=window,
                      return_complex=True)  # fmt: skip
    return torch.view_as_real(spec)


def _average_metrics(per_level: list[dict]) -> dict:
    """Stand-in for jukebox-infer's ``average_metrics``, a stub there that returns its list unchanged.

    The reference's training ``forward`` spreads the result into a dict, so the stub makes it fail after the
    loss is computed. OpenAI's original averaged each bottleneck metric over the levels; so does this.
    """
    keys = per_level[0].keys() if per_level else ()
    return {k: sum(m[k] for m in per_level) / len(per_level) for k in keys}


def make_batch(batch: int, samples: int, seed: int) -> torch.Tensor:
    """``batch`` consecutive chunks [batch, samples] of the oracle tests' deterministic test audio."""
    audio = oracle.make_test_audio((batch * samples + oracle.HOP_LENGTHS[-1]) / 44100, seed=seed)
    return audio[0, : batch * samples].reshape(batch, samples).contiguous()


def reference_vqvae_hparams(bandwidth: dict[str, float]):
    """The reference's released VQ-VAE hparams (the lmix/multispectral/commit recipe) plus ``bandwidth``."""
    from jukebox_infer.hparams import setup_hparams

    hps = setup_hparams("vqvae", {"restore_vqvae": ""})
    hps.bandwidth = dict(bandwidth)
    return hps


def bench_vqvae(args: argparse.Namespace) -> tuple[tuple, list[str], bool]:
    """(table row, lines about the first batch's losses, all losses finite)."""
    import jukebox_infer.utils.audio_utils as ref_audio
    import jukebox_infer.vqvae.vqvae as ref_vqvae

    ref_audio.stft = _reference_stft  # spec() looks it up in the module at call time
    ref_vqvae.average_metrics = _average_metrics
    x = make_batch(args.batch, args.samples, args.seed)
    bandwidth = M.bandwidth([x])

    ref = oracle.build_reference_vqvae(seed=args.seed, sample_length=args.samples)
    oracle.normalise_reference_latents(ref, x)
    oracle.seed_reference_codebooks(ref, (x,), seed=args.seed)
    ours = build_vqvae("jukebox", seed=args.seed + 1)
    import_state_dict(ours, ref.state_dict(), "original")
    c = ours.config
    hps = reference_vqvae_hparams(bandwidth)
    recipe = {"lmix_l1": c.lmix_l1, "lmix_l2": c.lmix_l2, "lmix_linf": c.lmix_linf, "linf_k": c.linf_k,
              "spectral": c.spectral, "multispectral": c.multispectral, "commit": c.commit}  # fmt: skip
    theirs = {k: hps[k] for k in recipe}
    if theirs != recipe or hps.loss_fn != "lmix":
        raise SystemExit(f"loss recipes differ: ours {recipe}, reference {theirs} (loss_fn {hps.loss_fn})")

    # EMA statistics re-seeded with restore_k, as the original does when training resumes from a checkpoint.
    # "even": every code credited 2 uses, so none is below the revival threshold (1) at the first update.
    # "original": the original's num_tokens = sample_length // hop, which for short chunks leaves levels 1-2
    # below the threshold, so their first update restarts every code with random latents.
    for level, hop in enumerate(oracle.HOP_LENGTHS):
        num_tokens = args.samples // hop if args.ema_restore == "original" else 2 * ours.config.codebook_size
        ours.bottleneck[level].restore_k(num_tokens, threshold=1.0)
        ref.bottleneck.level_blocks[level].restore_k(num_tokens=num_tokens, threshold=1.0)
    ours, ref = _trainable(ours), _trainable(ref)

    x_ref = x.unsqueeze(-1)  # the reference takes [N, T, 1]

    def ours_loss():
        loss, logs = vqvae_loss(ours, x, bandwidth)
        return loss, {k: logs[k] for k in VQVAE_TERMS}

    def ref_loss():
        _, loss, metrics = ref(x_ref, hps, loss_fn=hps.loss_fn)
        return loss, {k: metrics[k] for k in VQVAE_TERMS}

    step_ours = train_step(ours, torch.optim.Adam(ours.parameters(), lr=LR), ours_loss)
    step_ref = train_step(ref, torch.optim.Adam(ref.parameters(), lr=LR), ref_loss)
    t_ours, t_ref, first_ours, first_ref = time_steps(step_ours, step_ref, args.warmup, args.repeats)

    lines = [
        f"VQ-VAE: {_n_params(ours):,} parameters (ours) / {_n_params(ref):,} (reference); batch "
        f"{tuple(x.shape)}, {args.batch * args.samples / 44100:.2f} s of audio per step; bandwidth "
        + ", ".join(f"{k} {v:.4g}" for k, v in bandwidth.items())
    ]
    lines += _compare("VQ-VAE", first_ours, first_ref, ("loss", *VQVAE_TERMS))
    finite = all(math.isfinite(v) for d in (first_ours, first_ref) for v in d.values())
    row = (f"vqvae (B={args.batch}, T={args.samples})", t_ours, t_ref)
    return row, lines, finite


# -- prior ------------------------------------------------------------------------------------------------


def bench_prior(args: argparse.Namespace) -> tuple[tuple, list[str], bool]:
    """(table row, lines about the first batch's losses, all losses finite)."""
    base = prior_config(PRIOR_PRESET)
    cond = base.conditioner
    reduction = oracle_priors.Reduction(
        width=args.width,
        depth=args.depth,
        n_ctx=args.n_ctx,
        blocks=args.blocks,
        codebook_size=base.codebook_size,
        n_genres=base.n_genres,
        n_artists=base.n_artists,
        cond_width=args.cond_width or cond.width,
        cond_depth=args.cond_depth or cond.depth,
    )
    # Everything but the four sizes (and any conditioner override) stays as released.
    wanted = dataclasses.replace(
        base,
        width=args.width,
        depth=args.depth,
        n_ctx=args.n_ctx,
        blocks=args.blocks,
        conditioner=dataclasses.replace(cond, width=reduction.cond_width, depth=reduction.cond_depth),
    )
    if oracle_priors.our_config(PRIOR_PRESET, reduction) != wanted:
        raise SystemExit("the reduced prior config is not the released preset with the requested sizes")
    ours, ref = oracle_priors.build_pair(PRIOR_PRESET, reduction, seed=args.seed)
    codes, labels, upper = oracle_priors.make_inputs(ours.config, batch=args.batch, seed=args.seed + 1)
    if args.ref_cond_checkpoint == "off":
        for module in ref.modules():
            if getattr(module, "checkpoint_res", 0) == 1 and hasattr(module, "blocks"):
                module.checkpoint_res = 0  # Resnet1D: run its blocks (kept as a ModuleList) without recompute
                module.model = torch.nn.Sequential(*module.blocks)
    ours, ref = _trainable(ours), _trainable(ref)

    def ours_loss():
        out = ours(codes, labels, upper)
        return out.loss, {"gen_loss": out.gen_loss}

    def ref_loss():
        with _quiet():
            loss, metrics = ref.z_forward(z=codes, z_conds=[upper], y=labels)
        return loss, {"gen_loss": metrics["gen_loss"]}

    step_ours = train_step(ours, torch.optim.Adam(ours.parameters(), lr=LR), ours_loss)
    step_ref = train_step(ref, torch.optim.Adam(ref.parameters(), lr=LR), ref_loss)
    t_ours, t_ref, first_ours, first_ref = time_steps(step_ours, step_ref, args.warmup, args.repeats)

    c = ours.config
    lines = [
        f"prior: {PRIOR_PRESET} width {c.width}, depth {c.depth}, n_ctx {c.n_ctx}, blocks {c.blocks}, heads "
        f"{c.heads}, codebook {c.codebook_size}, conditioner {c.conditioner.width} x {c.conditioner.depth} "
        f"(reference gradient checkpointing {args.ref_cond_checkpoint}); {_n_params(ours):,} parameters "
        f"(ours) / {_n_params(ref):,} (reference); codes {tuple(codes.shape)}, upper {tuple(upper.shape)}, "
        f"labels {tuple(labels.shape)}"
    ]
    lines += _compare("prior (bits/token)", first_ours, first_ref, ("loss", "gen_loss"))
    finite = all(math.isfinite(v) for d in (first_ours, first_ref) for v in d.values())
    row = (f"prior (B={args.batch}, n_ctx={c.n_ctx})", t_ours, t_ref)
    return row, lines, finite


# -- report -----------------------------------------------------------------------------------------------


def _compare(title: str, ours: dict, ref: dict, keys: tuple[str, ...]) -> list[str]:
    lines = [f"{title}, first batch (before any update): term, ours, reference, |diff|, relative"]
    for key in keys:
        a, b = ours[key], ref[key]
        rel = abs(a - b) / max(abs(b), 1e-30)
        lines.append(f"  {key:<20} {a:>14.7g} {b:>14.7g} {abs(a - b):>10.3g} {rel:>10.3g}")
    return lines


def print_table(rows: list[tuple[str, list[float], list[float]]]) -> None:
    header = ("model", "ours s/step", "ref s/step", "ours steps/s", "ref steps/s", "ref/ours",
              "ours min-max", "ref min-max")  # fmt: skip
    table = [header]
    for name, t_ours, t_ref in rows:
        mine, theirs = statistics.median(t_ours), statistics.median(t_ref)
        table.append((name, f"{mine:.3f}", f"{theirs:.3f}", f"{1 / mine:.3f}", f"{1 / theirs:.3f}",
                      f"{theirs / mine:.2f}", f"{min(t_ours):.2f}-{max(t_ours):.2f}",
                      f"{min(t_ref):.2f}-{max(t_ref):.2f}"))  # fmt: skip
    print(format_table(table))
    print("\nMedian of the timed steps; ref/ours > 1 means ours is faster.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # codebook restarts draw from the global RNG on both sides
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}"
        f" ({os.cpu_count()} CPUs), load average {load[0]:.2f}; Adam lr {LR}; {args.warmup} warm-up + "
        f"{args.repeats} timed steps per side",
        flush=True,
    )
    rows, finite = [], True
    for name, bench in (("vqvae", bench_vqvae), ("prior", bench_prior)):
        if args.only not in (None, name):
            continue
        row, lines, ok = bench(args)
        rows.append(row)
        finite &= ok
        print("\n".join(lines), flush=True)
    print(f"\nload average now {os.getloadavg()[0]:.2f}\n")
    print_table(rows)
    if not finite:
        print("A loss is not finite.")
    return 0 if finite else 1


if __name__ == "__main__":
    raise SystemExit(main())
