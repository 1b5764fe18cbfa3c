"""Held-out reconstruction quality of a VQ-VAE on a corpus: spectral convergence and losses per level.

    python bench/vqvae_heldout.py data/dev-corpus --model runs/dev-vqvae      # a trained run (or any --model)
    python bench/vqvae_heldout.py data/dev-corpus --preset small --seed 0     # the same preset, untrained

The chunks are those ``jukebox train`` evaluates on (``AudioCorpus.eval_chunks``), so "before" and "after"
numbers compare the same audio.
"""

from __future__ import annotations

import argparse
import json

import torch

from jukebox_cli.engine.models import presets
from jukebox_cli.engine.models.builders import build_vqvae
from jukebox_cli.engine.train.data import AudioCorpus
from jukebox_cli.engine.train.setup import VQVAE_CHUNK_TOP_CODES
from jukebox_cli.engine.train.vqvae import VQVAETask
from jukebox_cli.engine.weights.loading import load_vqvae


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data")
    parser.add_argument("--model", help="anything --model accepts for a VQ-VAE")
    parser.add_argument("--preset", default="small", help="an untrained preset (when no --model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--metadata")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.model:
        model = load_vqvae(args.model).model
    else:
        model = build_vqvae(presets.vqvae_config(args.preset), "cpu", args.seed)
    corpus = AudioCorpus.scan(args.data, sample_rate=model.sample_rate, metadata=args.metadata,
                              sample_length=VQVAE_CHUNK_TOP_CODES * model.hop_lengths[-1])  # fmt: skip
    task = VQVAETask(model, corpus, batch_size=8, seed=args.seed, eval_size=args.chunks)
    if not args.model:  # an untrained model's codebooks come from data, as on the first training step
        model.train()
        task.loss(model, task.train_batch(0, 0, 0, 1))
    model.eval()
    values = task.evaluate(model, 0)
    keys = sorted(k for k in values if k.startswith(("spectral_convergence", "recons_loss", "loss")))
    print(json.dumps({"model": args.model or f"{args.preset} (untrained)", "chunks": args.chunks,
                      **{k: round(values[k], 4) for k in keys}}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
