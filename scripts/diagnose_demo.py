"""Measurements behind docs/demo-model-diagnosis.md: why the demo's top prior falls into silence.

    python scripts/diagnose_demo.py windows --corpus data/dev-corpus   # quiet windows, the top codes
    python scripts/diagnose_demo.py codes                                   # what silence encodes to
    python scripts/diagnose_demo.py prior --corpus data/dev-corpus          # loss: train, held out, labels

Each prints one JSON object. ``windows`` looks at every top-prior window (2.97 s, offsets on the top-level
grid) of the training split, the chunks the data loader draws from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from jukebox_cli.engine import load_bundle
from jukebox_cli.engine.audio.quality import COLLAPSE_LEVEL_DB, frame_levels_db, median_level_db
from jukebox_cli.engine.train.data import AudioCorpus
from jukebox_cli.engine.train.prior import PriorTask

EVAL_CHUNKS = 32  # as the model card's held-out metrics


def corpus_for(bundle, folder: Path, sample_length: int) -> AudioCorpus:
    metadata = folder / "metadata.csv"
    if not metadata.is_file():
        sys.exit(f"error: {metadata} does not exist; build the corpus with scripts/make_dev_corpus.sh first.")
    return AudioCorpus.scan(
        folder, sample_rate=bundle.sample_rate, sample_length=sample_length, metadata=metadata
    )


def song_codes(bundle, audio: np.ndarray) -> np.ndarray:
    vqvae, top = bundle.vqvae, bundle.top_level
    hop = vqvae.hop_lengths[top]
    x = torch.from_numpy(audio[: len(audio) // hop * hop])[None]
    step = hop * 4096  # bounded memory; the encoder's receptive field is far shorter than a step
    with torch.no_grad():
        return torch.cat(
            [vqvae.encode_level(x[:, s : s + step], top) for s in range(0, x.shape[1], step)], 1
        )[0].numpy()


def windows(args, bundle) -> dict:
    prior_config = bundle.prior_configs[bundle.top_level]
    window, hop = prior_config.n_ctx, bundle.vqvae.hop_lengths[bundle.top_level]
    corpus = corpus_for(bundle, Path(args.corpus), window * hop)
    quiet, total, codes_all, per_song, quiet_positions = 0, 0, [], {}, []
    for index in corpus.split("train"):
        song = corpus.songs[index]
        audio = np.load(corpus._cache_files[index], mmap_mode="r").astype(np.float32)
        levels = frame_levels_db(audio)  # frames every 512 samples = every 4 top-level codes
        per_window = window * hop // 512
        medians = np.array(
            [np.median(levels[s : s + per_window]) for s in range(0, len(levels) - per_window + 1)]
        )
        codes = song_codes(bundle, audio)
        code_levels = levels[np.minimum(np.arange(len(codes)) * hop // 512, len(levels) - 1)]
        codes_all.append(codes)
        quiet_positions.append((codes, code_levels < COLLAPSE_LEVEL_DB))
        quiet += int((medians < COLLAPSE_LEVEL_DB).sum())
        total += len(medians)
        per_song[song.path.name] = {
            "seconds": round(song.n_samples / bundle.sample_rate, 1),
            "quiet_window_share": round(float((medians < COLLAPSE_LEVEL_DB).mean()), 3),
            "first_window_median_db": round(float(medians[0]), 1),
            "last_window_median_db": round(float(medians[-1]), 1),
        }
    flat = np.concatenate(codes_all)
    values, counts = np.unique(flat, return_counts=True)
    top_code = int(values[counts.argmax()])
    quiet_codes = np.concatenate([c[q] for c, q in quiet_positions])
    share_in_window = []
    for codes in codes_all:
        is_top = (codes == top_code).astype(np.float64)
        sums = np.convolve(is_top, np.ones(window), mode="valid")[::4] / window
        share_in_window.append(sums)
    share_in_window = np.concatenate(share_in_window)
    follows = np.concatenate([c[1:][c[:-1] == top_code] for c in codes_all])
    return {
        "train_windows_median_below_-35dB": round(quiet / total, 4),
        "windows_counted": total,
        "most_common_code": top_code,
        "its_token_share": round(float(counts.max() / flat.size), 4),
        "its_share_of_tokens_below_-35dB": round(float(np.mean(quiet_codes == top_code)), 3),
        "p_repeat_after_it": round(float(np.mean(follows == top_code)), 3),
        "windows_where_it_is_over_half": round(float(np.mean(share_in_window > 0.5)), 4),
        "distinct_codes_used": int(values.size),
        "songs": per_song,
    }


def codes(args, bundle) -> dict:
    """The top-level code of silence and of quiet signals, and the level of a decoded run of one code."""
    vqvae, top, rate = bundle.vqvae, bundle.top_level, bundle.sample_rate
    t = np.arange(3 * rate) / rate
    rng = np.random.default_rng(0)
    signals = {
        "digital silence": np.zeros_like(t),
        "noise at -60 dBFS": rng.normal(0, 10 ** (-60 / 20), t.size),
        "noise at -40 dBFS": rng.normal(0, 10 ** (-40 / 20), t.size),
        "sine 440 Hz at -40 dBFS": np.sqrt(2) * 10 ** (-40 / 20) * np.sin(2 * np.pi * 440 * t),
        "sine 440 Hz at -20 dBFS": np.sqrt(2) * 10 ** (-20 / 20) * np.sin(2 * np.pi * 440 * t),
    }
    out = {}
    for name, signal in signals.items():
        found = song_codes(bundle, signal.astype(np.float32))
        values, counts = np.unique(found, return_counts=True)
        order = np.argsort(-counts)[:3]
        out[name] = {str(int(values[i])): round(float(counts[i] / found.size), 3) for i in order}
    runs = {}
    for code in args.decode:
        with torch.no_grad():
            audio = vqvae.decode(torch.full((1, 1024), code, dtype=torch.long), top)[0].numpy()
        runs[str(code)] = round(median_level_db(audio), 1)
    return {"top_codes_of": out, "median_level_db_of_a_decoded_run_of": runs}


def evenly_spaced(corpus: AudioCorpus, split: str, n: int) -> list:
    """``n`` chunks evenly spaced over a split's songs laid end to end (``eval_chunks`` for any split)."""
    indices = corpus.split(split)
    starts = [corpus.songs[i].n_samples - corpus.sample_length + 1 for i in indices]
    bounds = np.cumsum([0, *starts])
    chunks = []
    for k in range(n):
        position = int((k + 0.5) * bounds[-1] / n)
        j = int(np.searchsorted(bounds, position, side="right")) - 1
        chunks.append(corpus.chunk(indices[j], position - int(bounds[j])))
    return chunks


def prior(args, bundle) -> dict:
    model = bundle.load_prior(bundle.top_level).eval()
    corpus = corpus_for(bundle, Path(args.corpus), model.config.window_samples)
    task = PriorTask(model, bundle.vqvae, corpus, batch_size=8)
    genres = sorted({s.genre for s in corpus.songs})

    def bits(chunks, **labels) -> float:
        chunks = [dataclasses.replace(c, **labels) for c in chunks]
        total = 0.0
        for s in range(0, len(chunks), 8):
            part = chunks[s : s + 8]
            _, values = task.loss(model, (torch.stack([c.audio for c in part]), task._labels(part)))
            total += values["bpd"] * len(part)
        return round(total / len(chunks), 3)

    out = {}
    with torch.no_grad():
        for split in ("eval", "train"):
            chunks = evenly_spaced(corpus, split, args.chunks)
            out[f"{split}_bits_per_token"] = bits(chunks)
            out[f"{split}_bits_per_token_artist_unknown"] = bits(chunks, artist="unknown")
            by_genre = {}
            for genre in genres:
                mine = [c for c in chunks if c.genre == genre]
                if mine:
                    by_genre[genre] = {f"as {g}": bits(mine, genre=g) for g in [*genres, "unknown"]}
                    by_genre[genre]["n"] = len(mine)
            out[f"{split}_by_true_genre"] = by_genre
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("windows", "codes", "prior"))
    parser.add_argument("--corpus", default="data/dev-corpus")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--chunks", type=int, default=EVAL_CHUNKS, help="chunks per split for `prior`")
    parser.add_argument("--decode", type=lambda s: [int(v) for v in s.split(",")], default=[173, 46])
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    bundle = load_bundle(args.model)
    result = {"windows": windows, "codes": codes, "prior": prior}[args.what](args, bundle)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
