"""A top prior that hears further back, started from a trained one: more context, the same weights.

    python scripts/extend_context.py jukebox_cli/data/models/demo/prior_level_2.safetensors OUT
    cp jukebox_cli/data/models/demo/vqvae.safetensors OUT/     # OUT is then a model folder --from reads
    jukebox train prior data/dev-corpus-more --vqvae demo --from OUT ... -o runs/demo/top-long

The new prior has ``--factor`` times the positions per window and as many more attention blocks, so each block
keeps its length and every layer its weights (attention is factorised over blocks of fixed length; no weight
depends on how many blocks there are). Only the learnt position table grows: it is repeated, so that a position
in the second half starts from what the same position in the first half learnt, and the fine-tuning that
follows tells them apart (the timing embedding already does: it says where in the song each position lies). The
shortest song the prior accepts grows to its new window, as for a prior trained at that size from scratch.

Tried on the demo model (docs/demo-model-diagnosis.md, fourth round): it predicts the corpus better and falls
quiet more often, as its first window holds more of a song's soft opening.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from jukebox_cli.engine.checkpoints.folder import prior_file
from jukebox_cli.engine.checkpoints.native import load_native, save_native
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.prior import Prior

POSITION_TABLE = "prior.pos_emb.pos_emb"


def extend(prior: Prior, factor: int) -> Prior:
    """``prior`` with ``factor`` times its context (see the module docstring)."""
    c = prior.config
    if c.is_upsampler or c.n_tokens:
        raise ValueError("only a top-level prior without lyrics can be extended")
    window = factor * c.n_ctx * c.hop_length / c.sample_rate
    config = dataclasses.replace(
        c, n_ctx=factor * c.n_ctx, blocks=factor * c.blocks, min_duration=round(window, 3)
    )
    extended = build_prior(config, "cpu", seed=0)
    state = prior.state_dict()
    target = extended.state_dict()
    if set(state) != set(target):
        raise ValueError("the extended prior's parameters are not the trained prior's")
    for key, value in target.items():
        if key == POSITION_TABLE:
            target[key] = state[key].repeat(factor, 1)
        elif state[key].shape == value.shape:
            target[key] = state[key]
        else:
            raise ValueError(f"{key} depends on the context length ({tuple(state[key].shape)})")
    extended.load_state_dict(target)
    return extended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prior", type=Path, help="a native prior file (prior_level_2.safetensors)")
    parser.add_argument("output", type=Path, help="folder for the extended prior")
    parser.add_argument("--factor", type=int, default=2, help="times the context (default 2)")
    args = parser.parse_args(argv)
    if args.factor < 2:
        parser.error("--factor must be at least 2")
    torch.set_num_threads(1)
    prior = load_native(args.prior, kind="prior")
    try:
        extended = extend(prior, args.factor)
    except ValueError as err:
        sys.exit(f"error: {args.prior}: {err}")
    args.output.mkdir(parents=True, exist_ok=True)
    path = save_native(extended, args.output / prior_file(extended.config.level))
    c = extended.config
    print(
        f"wrote {path}: {c.n_ctx} positions ({c.window_samples / c.sample_rate:.2f} s) in {c.blocks} blocks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
