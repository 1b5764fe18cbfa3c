"""Measure the demo model trained by scripts/train_demo.sh, copy it into the package and write its model card.

    python scripts/package_demo.py --corpus data/dev-corpus --corpus-more data/dev-corpus-more --runs runs/demo
    python scripts/package_demo.py --runs runs/demo --keep-shipped   # only the parts trained in runs/demo change
    python scripts/package_demo.py --verify --runs runs/repro   # a retraining: same bytes as shipped?
    python scripts/package_demo.py --runs /tmp/smoke --dest /tmp/smoke/package --seconds 2 \
        --eval-args="--seeds 1 --durations 2 --level0-seeds 1 --clips-per-song 1"   # a smoke run

Steps (the last stage of train_demo.sh):
1. copy each run's exported EMA weights into jukebox_cli/data/models/demo/;
2. held-out metrics: the VQ-VAE's spectral convergence per level and each prior's bits per token, on the
   corpus' held-out songs (the split `jukebox train` used);
3. one 10 s sample per genre through `jukebox generate --model demo` (a subprocess, as a user runs it,
   timed), and the spectral flatness and chroma entropy of its top level and final audio beside the same
   measures on the corpus (and on the corpus through the level-2 codec alone) and on white noise;
4. scripts/evaluate_demo.py on the packaged model (collapse share, genre agreement, audio against real
   clips, the VQ-VAE's held-out convergence), into RUNS/evaluation/; kept while the weights are the same;
5. MODEL_CARD.md and card.json (every number above, the training settings and commands, the machine, wall
   times, file hashes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE, prior_file
from jukebox_cli.engine.weights.cache import sha256_file

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jukebox_cli" / "data" / "models" / "demo"
DEST = PACKAGE  # --dest: where this run writes the model (a scratch folder for smoke runs)
# The shipped top prior is the `finetune` stage's (the `priors` stage's, trained further on the larger corpus).
RUN_OF_LEVEL = {2: "top-more", 1: "up1", 0: "up0"}
TRAINING_RUNS = ("vqvae", "top", "top-more", "up1", "up0")
PARTS = {  # shipped file: (run folder, file in it)
    VQVAE_FILE: ("vqvae", VQVAE_FILE),
    **{prior_file(level): (run, prior_file(level)) for level, run in RUN_OF_LEVEL.items()},
}
MAX_BYTES = 25 * 1000 * 1000
EVAL_CHUNKS = 32
SAMPLE_SECONDS = 10.0
NOISE_SEEDS = range(5)


def wall_seconds(stamp: dict) -> float | None:
    """Seconds between a stage's ``start`` and ``end`` in timings.json (None if it never finished)."""
    return stamp["end"] - stamp["start"] if "start" in stamp and "end" in stamp else None


def save_card(card: dict) -> None:
    """card.json and the MODEL_CARD.md rendered from it."""
    from model_card import write_card  # scripts/model_card.py: the card's text

    (DEST / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    write_card(card, DEST / "MODEL_CARD.md")


def machine() -> str:
    """The CPU this runs on (packaging runs where the training ran, right after it)."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def evaluate(runs: Path, corpus_dir: Path, files: dict, extra: str) -> dict:
    """scripts/evaluate_demo.py on the packaged weights, run again only when they or its arguments changed."""
    out = runs / "evaluation"
    stamp = {"files": {name: f["sha256"] for name, f in files.items()}, "args": extra}
    done = (out / "results.json").is_file() and (out / "weights.json").is_file()
    if done and json.loads((out / "weights.json").read_text()) == stamp:
        print(f"evaluation: reusing {out / 'results.json'}")
        return json.loads((out / "results.json").read_text())
    command = [sys.executable, str(ROOT / "scripts" / "evaluate_demo.py"), "--corpus", str(corpus_dir), "-o",
               str(out), "--model", str(DEST), *shlex.split(extra)]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    (out / "weights.json").write_text(json.dumps(stamp, indent=1) + "\n")
    return json.loads((out / "results.json").read_text())


def evaluation_summary(results: dict, extra: str) -> dict:
    """What the card shows of evaluate_demo.py's results.json (not every take)."""
    keep = ("takes", "collapsed", "classified_right", "classified_right_not_collapsed")
    top = {}
    for duration, per in results["top"].items():
        top[duration] = {
            "takes": per["takes"], "collapsed": per["collapsed"], "collapsed_share": per["collapsed_share"],
            "classified_right": per["classified_right"],
            "agreement": {k: v.get("mean") for k, v in per["agreement"].items()},
            "genres": {g: {k: v[k] for k in keep} for g, v in per["genres"].items()},
        }  # fmt: skip
    chroma = {}
    for name, table in (("real clips", results["real"]["genres"]),
                        ("real clips through the level-2 codec", results["real"]["genres_codec"]),
                        ("generated top level", results["top_audio"]["genres"]),
                        ("generated level 0", results["level0"]["genres"])):  # fmt: skip
        chroma[name] = {g: m["frame_chroma_entropy_bits"] for g, m in table.items()}
    s = results["settings"]
    return {
        "command": f"python scripts/evaluate_demo.py --corpus data/dev-corpus-more -o OUT --model demo {extra}".strip(),
        "artist": s["artist"], "temperature": s["temperature"], "top": top, "frame_chroma_entropy": chroma,
        "level0_subset": results["level0"]["subset"], "real_subset": results["real"]["subset"],
        "classifier": results["classifier"],
        "heldout_spectral_convergence": results.get("heldout_spectral_convergence"),
        "wall_seconds": results["wall_seconds"],
    }  # fmt: skip


def copy_parts(runs: Path, corpus_dir: Path, shipped: dict | None) -> dict:
    """Each run's export into DEST; with ``shipped`` (the current card), a part not in ``runs`` stays as it is."""
    DEST.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (run, file) in PARTS.items():
        source = runs / run / file
        if not source.is_file() and shipped is not None:
            if sha256_file(DEST / name) != shipped["files"][name]["sha256"]:
                sys.exit(f"{DEST / name} is not the file its card describes: it cannot be kept.")
            files[name] = shipped["files"][name]
            continue
        if not source.is_file():
            sys.exit(
                f"{source} is missing: run the vqvae, priors and finetune stages of scripts/train_demo.sh."
            )
        tmp = DEST / f".{name}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, DEST / name)
        files[name] = {"bytes": (DEST / name).stat().st_size, "sha256": sha256_file(DEST / name)}
    licenses = DEST / "licenses"
    shutil.rmtree(licenses, ignore_errors=True)
    shutil.copytree(corpus_dir / "licenses", licenses)  # CC-BY-SA asks that the texts travel along
    total = sum(f["bytes"] for f in files.values())
    if total > MAX_BYTES:
        sys.exit(f"The demo model takes {total / 1e6:.1f} MB; the package allows {MAX_BYTES / 1e6:.0f} MB.")
    return files


def same_content(a: Path, b: Path) -> bool:
    """Equal tensors (names, dtypes, shapes, bits) and equal metadata.

    Not the file bytes: safetensors writes the metadata keys in a random order per process (safetensors
    issue #584), so two saves of the same weights can differ in their header alone.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        if fa.metadata() != fb.metadata():
            return False
    ta, tb = load_file(a), load_file(b)
    return ta.keys() == tb.keys() and all(
        ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k]) for k in ta
    )


def verify_parts(runs: Path, card: dict) -> dict:
    """Each shipped file against the export of a retraining in ``runs``: identical, different or not rerun."""
    files = {}
    for name, (run, file) in PARTS.items():
        source = runs / run / file
        if not source.is_file():
            files[name] = "not rerun"
        elif sha256_file(source) == card["files"][name]["sha256"]:
            files[name] = "identical"
        else:
            files[name] = "identical" if same_content(source, DEST / name) else "different"
        print(f"{name:28} {files[name]}")
    timings = json.loads((runs / "timings.json").read_text()) if (runs / "timings.json").is_file() else {}
    minutes = {
        name: round(wall / 60, 1) for name, t in timings.items() if (wall := wall_seconds(t)) is not None
    }
    return {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "files": files,
            "wall_minutes": minutes}  # fmt: skip


def training_record(runs: Path, name: str, timings: dict) -> dict:
    from jukebox_cli.engine.train.checkpoint import checkpoint_path

    info = json.loads((runs / name / "train.json").read_text())
    state = torch.load(checkpoint_path(runs / name), map_location="cpu", weights_only=True)
    stamp = timings.get(name, {})
    task = info["task"]
    options = {k: task[k] for k in ("min_level_db", "label_dropout", "artist_dropout") if k in task}
    if task.get("kind") == "vqvae":
        options["revival_threshold"] = task["model"].get("revival_threshold")
    return {"steps": int(state["step"]), "skipped_steps": int(state["skipped_steps"]),
            "wall_seconds": wall_seconds(stamp), "settings": info["config"], "options": options,
            "command": stamp.get("command"), "threads": stamp.get("threads"), "log": f"{name}.log",
            **({"note": stamp["note"]} if "note" in stamp else {})}  # fmt: skip


def heldout_metrics(corpus_dir: Path, vqvae) -> dict:
    from jukebox_cli.engine.checkpoints.native import load_native
    from jukebox_cli.engine.train.data import AudioCorpus
    from jukebox_cli.engine.train.prior import PriorTask
    from jukebox_cli.engine.train.setup import VQVAE_CHUNK_TOP_CODES, parameter_count
    from jukebox_cli.engine.train.vqvae import VQVAETask

    metadata = corpus_dir / "metadata.csv"
    corpus = AudioCorpus.scan(corpus_dir, sample_rate=vqvae.sample_rate, metadata=metadata,
                              sample_length=VQVAE_CHUNK_TOP_CODES * vqvae.hop_lengths[-1])  # fmt: skip
    values = VQVAETask(vqvae, corpus, batch_size=8, eval_size=EVAL_CHUNKS).evaluate(vqvae, 0)
    out = {
        "held_out_songs": [corpus.songs[i].path.name for i in corpus.split("eval")],
        "held_out_genres": sorted({corpus.songs[i].genre for i in corpus.split("eval")}),
        "vqvae": {
            "parameters": parameter_count(vqvae),
            "chunk_samples": corpus.sample_length,
            "spectral_convergence": {
                str(level): values[f"spectral_convergence_l{level + 1}"] for level in range(vqvae.levels)
            },
        },
        "priors": {},
    }
    for level in (2, 1, 0):
        prior = load_native(DEST / prior_file(level), kind="prior").eval()
        windows = AudioCorpus.scan(corpus_dir, sample_rate=vqvae.sample_rate, metadata=metadata,
                                   sample_length=prior.config.window_samples)  # fmt: skip
        task = PriorTask(prior, vqvae, windows, batch_size=8, eval_size=EVAL_CHUNKS)
        c = prior.config
        out["priors"][str(level)] = {
            "parameters": parameter_count(prior),
            "width": c.width, "depth": c.depth, "heads": c.heads, "n_ctx": c.n_ctx,
            "window_seconds": c.window_samples / c.sample_rate,
            "bits_per_token": task.evaluate(prior, 0)["bpd"],
            "uniform_bits_per_token": float(np.log2(c.codebook_size)),
        }  # fmt: skip
    return out


def genres_of_model() -> list[str]:
    from jukebox_cli.engine.weights.resolve import label_tables

    _, labels = label_tables(DEST)
    return sorted(g for g in labels.genres if g != "unknown")  # "unknown" is id 0, never trained on


def generate_samples(runs: Path, genres: list[str], seconds: float) -> dict:
    """One sample per genre with the CLI, as a user runs it, with 2 threads."""
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    model = "demo" if DEST == PACKAGE else str(DEST)
    for genre in genres:
        out = runs / "samples" / genre
        command = ["jukebox", "generate", "--model", model, "--genre", genre, "--duration", f"{seconds:g}",
                   "--seed", "0", "--force", "--quiet", "-o", str(out)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        shown = (
            " ".join(a for a in command if a not in ("--force", "--quiet"))
            .replace(str(out), f"OUT/{genre}")
            .replace(str(DEST), "demo")
        )
        results[genre] = {
            "command": shown,
            "wall_seconds": time.perf_counter() - start,
            "folder": os.path.relpath(out, ROOT),
        }
    return results


def _summary(audio: np.ndarray, rate: int) -> dict:
    from jukebox_cli.engine.audio.analysis import summarize

    s = summarize(audio, rate)
    return {"flatness": s.spectral_flatness, "chroma_entropy": s.chroma_entropy_bits,
            "frame_chroma_entropy": s.frame_chroma_entropy_bits, "rms_dbfs": s.rms_dbfs}  # fmt: skip


def _aggregate(rows: list[dict]) -> dict:
    out = {"n": len(rows)}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = {"mean": statistics.fmean(values), "sd": statistics.pstdev(values)}
    return out


def character(corpus_dir: Path, samples: dict, vqvae) -> dict:
    """Spectral flatness and chroma entropy: generated audio vs. corpus excerpts vs. white noise."""
    from jukebox_cli.engine.audio.io import audio_info, load_audio

    rate = vqvae.sample_rate
    rows: dict[str, list[dict]] = {"generated top level (level 2)": [], "generated final audio (level 0)": []}
    for sample in samples.values():
        folder = ROOT / sample["folder"]
        for level, key in ((2, "generated top level (level 2)"), (0, "generated final audio (level 0)")):
            audio = load_audio(folder / f"level_{level}" / "item_0.wav", rate)
            rows[key].append(_summary(audio, rate))
    corpus, through_top = [], []
    with open(corpus_dir / "metadata.csv", newline="") as handle:
        paths = [corpus_dir / row["path"] for row in csv.DictReader(handle)]
    for path in paths:  # the middle SAMPLE_SECONDS of every song
        offset = max(0.0, (audio_info(path).duration - SAMPLE_SECONDS) / 2)
        audio = load_audio(path, rate, offset=offset, duration=SAMPLE_SECONDS)
        corpus.append(_summary(audio, rate))
        with torch.no_grad():
            codes = vqvae.encode_level(torch.from_numpy(audio)[None], 2)
            decoded = vqvae.decode(codes, 2)[0].clamp(-1, 1).numpy()
        through_top.append(_summary(decoded, rate))
    rows["corpus excerpts"] = corpus
    rows["corpus through the level-2 codec"] = through_top
    noise = [np.random.default_rng(seed).normal(0, 0.1, int(SAMPLE_SECONDS * rate)) for seed in NOISE_SEEDS]
    rows["white noise"] = [_summary(n.astype(np.float32), rate) for n in noise]
    return {name: _aggregate(values) for name, values in rows.items()}


def _metadata(corpus_dir: Path) -> list[dict]:
    with open(corpus_dir / "metadata.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def corpus_table(corpus_dir: Path, more_dir: Path, vqvae) -> list[dict]:
    """Every song of the larger corpus, its split, and whether every part or only the top prior's second
    stage learnt from it."""
    from jukebox_cli.engine.train.data import AudioCorpus

    corpus = AudioCorpus.scan(more_dir, sample_rate=vqvae.sample_rate, metadata=more_dir / "metadata.csv",
                              sample_length=vqvae.hop_lengths[-1])  # fmt: skip
    held_out = {corpus.songs[i].path.name for i in corpus.split("eval")}
    base = {row["path"] for row in _metadata(corpus_dir)}
    keep = ("title", "artist", "album", "package", "genre", "duration_s", "license")
    return [{**{k: row[k] for k in keep}, "split": "held-out" if row["path"] in held_out else "train",
             "used_by": "every part" if row["path"] in base else "top prior, second stage"}
            for row in _metadata(more_dir)]  # fmt: skip


def training_records(runs: Path, timings: dict, shipped: dict | None) -> dict:
    records = {}
    for name in TRAINING_RUNS:
        if (runs / name / "train.json").is_file():
            records[name] = training_record(runs, name, timings)
        elif shipped is not None and name in shipped["training"]:
            records[name] = shipped["training"][name]
        else:
            sys.exit(f"{runs / name} is missing: run the stage of scripts/train_demo.sh that trains it.")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "dev-corpus", help="held-out metrics")
    parser.add_argument(
        "--corpus-more",
        type=Path,
        default=ROOT / "data" / "dev-corpus-more",
        help="the larger corpus (make_dev_corpus.sh --more): evaluation, samples' character, the card's song list",
    )
    parser.add_argument(
        "--keep-shipped",
        action="store_true",
        help="parts with no run folder in --runs keep the shipped file and its card record",
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument(
        "--seconds", type=float, default=SAMPLE_SECONDS, help="length of each sample (a quick check)"
    )
    parser.add_argument(
        "--card-only", action="store_true", help="only re-render MODEL_CARD.md from card.json"
    )
    parser.add_argument(
        "--dest", type=Path, default=PACKAGE, help="model folder to write (default: the package's)"
    )
    parser.add_argument(
        "--eval-args", default="", help="extra arguments of scripts/evaluate_demo.py (quick checks)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare a retraining in --runs with the shipped files (every tensor, bit for bit) and record the "
        "result in the card",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    global DEST
    DEST = args.dest.resolve()

    from jukebox_cli import __version__

    if args.card_only:
        save_card(json.loads((DEST / "card.json").read_text()))
        return
    if args.verify:
        card = json.loads((DEST / "card.json").read_text())
        card["reproduced"] = verify_parts(args.runs, card)
        save_card(card)
        sys.exit(0 if all(v == "identical" for v in card["reproduced"]["files"].values()) else 1)
    shipped = json.loads((DEST / "card.json").read_text()) if args.keep_shipped else None
    files = copy_parts(args.runs, args.corpus_more, shipped)
    timings = json.loads((args.runs / "timings.json").read_text())
    training = training_records(args.runs, timings, shipped)
    from jukebox_cli.engine.checkpoints.native import load_native

    vqvae = load_native(DEST / VQVAE_FILE, kind="vqvae").eval()
    metrics = heldout_metrics(args.corpus, vqvae)
    genres = genres_of_model()
    samples = generate_samples(args.runs, genres, args.seconds)
    evaluation = evaluation_summary(
        evaluate(args.runs, args.corpus_more, files, args.eval_args), args.eval_args
    )
    card = {
        "name": "demo",
        "jukebox_cli_version": __version__,
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "training": training,
        "metrics": metrics,
        "genres": genres,
        "samples": samples,
        "character": character(args.corpus_more, samples, vqvae),
        "corpus": corpus_table(args.corpus, args.corpus_more, vqvae),
        "evaluation": evaluation,
        "machine": machine(),
        "torch": torch.__version__,
    }
    save_card(card)
    print(f"Packaged {DEST} ({card['total_bytes'] / 1e6:.1f} MB); card in {DEST / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
