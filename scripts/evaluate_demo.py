"""How often the demo model's samples collapse, how much the genre label matters, and how they compare with
the real corpus.

    python scripts/evaluate_demo.py --corpus data/dev-corpus -o out/eval-demo               # the full run
    python scripts/evaluate_demo.py --corpus data/dev-corpus -o out/quick --seeds 2 --durations 10

Writes ``results.json`` and ``report.md`` to the output folder (and the sampled run folders under ``runs/``).

- Top level, every genre x ``--seeds`` seeds x every duration: only the top prior samples (``levels=[2]``)
  and the VQ-VAE decodes its codes, which is cheap. The seeds of one genre are the takes of one batch with
  ``--base-seed``, so take ``i`` of every genre draws the same random numbers: genre agreement at equal
  seeds compares takes that differ only by their label. A take collapsed when its decoded audio's median
  frame level is below -35 dBFS or one code is above half its tokens.
- Level 0 (the final audio), a subset: the first ``--level0-seeds`` takes of each genre at the first
  duration are upsampled (``prepare_upsample``), as upsampling is most of the cost on a CPU.
- Real clips: ``--clips-per-song`` clips of the first duration, evenly spaced through every corpus song,
  as they are and through the level-2 codec alone (the fair reference for decoded top-level takes).
- A nearest-centroid genre classifier on simple timbre/harmony features, fitted on the real clips (its
  leave-one-song-out accuracy is reported), then applied to the generated audio.
- The VQ-VAE's held-out spectral convergence per level, on the chunks ``jukebox train`` evaluates on.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jukebox_cli.engine import load_bundle, prepare_generate, prepare_upsample
from jukebox_cli.engine.audio.analysis import summarize
from jukebox_cli.engine.audio.io import load_audio
from jukebox_cli.engine.audio.quality import (
    CentroidClassifier,
    check_collapse,
    code_agreement,
    genre_features,
    leave_one_group_out_accuracy,
    median_level_db,
)
from jukebox_cli.engine.errors import JukeboxError
from jukebox_cli.engine.train.data import AudioCorpus
from jukebox_cli.engine.train.setup import VQVAE_CHUNK_TOP_CODES
from jukebox_cli.engine.train.vqvae import VQVAETask

HELD_OUT_CHUNKS = 32  # as the model card's held-out metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", required=True, help="the dev corpus folder (scripts/make_dev_corpus.sh)")
    parser.add_argument("-o", "--output", required=True, help="folder for results.json, report.md, runs/")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--genres", help="comma-separated (default: every genre of the corpus)")
    parser.add_argument("--seeds", type=int, default=8, help="takes per genre and duration")
    parser.add_argument("--base-seed", type=int, default=0)
    parser.add_argument("--durations", default="10,30", help="seconds, comma-separated")
    parser.add_argument("--temperature", type=float, default=0.99, help="of the top prior")
    parser.add_argument("--artist", default="unknown", help="conditioning artist (the CLI's default)")
    parser.add_argument("--total-duration", type=float, help="timing conditioning (default: the duration)")
    parser.add_argument("--level0-seeds", type=int, default=2, help="takes per genre upsampled to level 0")
    parser.add_argument("--clips-per-song", type=int, default=4)
    parser.add_argument("--skip-heldout", action="store_true", help="skip the VQ-VAE held-out metrics")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        args.durations = [float(d) for d in args.durations.split(",")]
    except ValueError:
        parser.error(f"--durations must be numbers separated by commas, got {args.durations!r}")
    if args.seeds < 1 or args.level0_seeds < 0 or args.clips_per_song < 1 or not args.durations:
        parser.error("--seeds and --clips-per-song must be at least 1, --level0-seeds at least 0")
    args.level0_seeds = min(args.level0_seeds, args.seeds)
    return args


def corpus_rows(corpus: Path) -> list[dict]:
    metadata = corpus / "metadata.csv"
    if not metadata.is_file():
        sys.exit(f"error: {metadata} does not exist; build the corpus with scripts/make_dev_corpus.sh first.")
    with open(metadata, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def mean_sd(values: list[float]) -> dict:
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 3),
        "sd": round(sd, 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def audio_measures(audio: np.ndarray, rate: int) -> dict:
    summary = summarize(audio, rate)
    return {
        "median_level_db": median_level_db(audio),
        "rms_dbfs": summary.rms_dbfs,
        "frame_chroma_entropy_bits": summary.frame_chroma_entropy_bits,
        "spectral_flatness": summary.spectral_flatness,
    }


# ---- generated takes ---------------------------------------------------------------------------------------


def sample_top(bundle, args, genre: str, duration: float, out: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Top-level codes [seeds, T] and the decoded top-level audio of each take."""
    job = prepare_generate(
        bundle, genre=genre, artist=args.artist, duration=duration, total_duration=args.total_duration,
        samples=args.seeds, seed=args.base_seed, levels=[bundle.top_level], temperature=args.temperature,
        output=out,
    )  # fmt: skip
    result = job.run(device="cpu", alignment=False)
    codes = result.codes[bundle.top_level].numpy()
    folder = out / f"level_{bundle.top_level}"
    audio = [load_audio(folder / f"item_{i}.wav", bundle.sample_rate) for i in range(codes.shape[0])]
    return codes, audio


def upsample_takes(bundle, run: Path, takes: int, out: Path) -> list[np.ndarray]:
    prepare_upsample(run, takes=list(range(takes)), model=bundle, output=out).run(device="cpu")
    return [load_audio(out / "level_0" / f"item_{i}.wav", bundle.sample_rate) for i in range(takes)]


def agreement_table(codes: dict[str, np.ndarray], collapsed: dict[str, list[bool]]) -> dict:
    pairs, overall, both, neither = {}, [], [], []
    for a, b in itertools.combinations(sorted(codes), 2):
        values = [code_agreement(x, y) for x, y in zip(codes[a], codes[b], strict=True)]
        pairs[f"{a}/{b}"] = mean_sd(values)
        overall += values
        for value, ca, cb in zip(values, collapsed[a], collapsed[b], strict=True):
            (both if ca and cb else neither if not (ca or cb) else []).append(value)
    return {
        "pairs": pairs,
        "all": mean_sd(overall),
        "both_collapsed": mean_sd(both),
        "neither": mean_sd(neither),
    }


# ---- real clips --------------------------------------------------------------------------------------------


def real_clips(bundle, corpus: Path, rows: list[dict], seconds: float, per_song: int):
    """(genre, song, audio, audio through the top-level codec) for clips evenly spaced through each song."""
    vqvae, rate, top = bundle.vqvae, bundle.sample_rate, bundle.top_level
    hop = vqvae.hop_lengths[top]
    length = int(seconds * rate) // hop * hop
    clips = []
    for row in rows:
        song = load_audio(corpus / row["path"], rate)
        if len(song) < length:
            continue
        for k in range(per_song):
            start = int((k + 0.5) * (len(song) - length) / per_song)
            clip = song[start : start + length]
            with torch.no_grad():
                codes = vqvae.encode_level(torch.from_numpy(clip)[None], top)
                coded = vqvae.decode(codes, top)[0].clamp(-1, 1).numpy()
            clips.append((row["genre"], row["path"], clip, coded))
    return clips


def heldout_convergence(bundle, corpus: Path) -> dict:
    """Spectral convergence per level on the held-out chunks that ``jukebox train vqvae`` evaluates on."""
    model = bundle.vqvae
    data = AudioCorpus.scan(corpus, sample_rate=model.sample_rate, metadata=corpus / "metadata.csv",
                            sample_length=VQVAE_CHUNK_TOP_CODES * model.hop_lengths[-1])  # fmt: skip
    task = VQVAETask(model, data, batch_size=8, eval_size=HELD_OUT_CHUNKS)
    model.eval()
    values = task.evaluate(model, 0)
    # The training logs name levels from 1 (l1 is level 0).
    return {
        str(level): round(values[f"spectral_convergence_l{level + 1}"], 4) for level in range(model.levels)
    }


# ---- report ------------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        "# demo model evaluation",
        "",
        f"Model `{s['model']}`, artist `{s['artist']}`, top-level temperature {s['temperature']}, "
        f"total duration {s['total_duration'] or 'as the duration'}, takes 0..{s['seeds'] - 1} of base seed "
        f"{s['base_seed']} per genre (take i of every genre draws the same random numbers).",
        "",
        "## Top level: collapse and genre agreement",
        "",
        "Collapsed: median frame level of the decoded top level below -35 dBFS, or one code above 50 % of "
        "the tokens. Classified right: by the classifier fitted on real clips through the level-2 codec; in "
        "brackets, among the takes that did not collapse.",
        "",
        "| duration | genre | collapsed | median level (dBFS) | dominant-code share | classified right (not collapsed) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    agreement = []
    for duration, per in results["top"].items():
        for genre, g in per["genres"].items():
            lines.append(
                f"| {duration} s | {genre} | {g['collapsed']}/{g['takes']} | {g['median_level_db']['mean']} "
                f"| {g['dominant_share']['mean']} | {g['classified_right']} ({g['classified_right_not_collapsed']}) |"
            )
        lines.append(
            f"| {duration} s | **all** | **{per['collapsed']}/{per['takes']}** | | | {per['classified_right']} |"
        )
        a = per["agreement"]
        agreement.append(
            f"- {duration} s: all pairs {a['all'].get('mean')} (n {a['all']['n']}); both takes collapsed "
            f"{a['both_collapsed'].get('mean')} (n {a['both_collapsed']['n']}); neither collapsed "
            f"{a['neither'].get('mean')} (n {a['neither']['n']})."
        )
    lines += ["", "Genre agreement (share of equal top-level tokens at equal seeds):", "", *agreement]
    lines += ["", "## Audio against real clips", ""]
    sub = results["level0"]
    lines.append(f"Level 0: {sub['subset']}. Real clips: {results['real']['subset']}.")
    lines += [
        "",
        "| audio | genre | n | median level (dBFS) | RMS (dBFS) | per-frame chroma entropy (bits) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, table in (("real clips", results["real"]["genres"]), ("real through level-2 codec",
                        results["real"]["genres_codec"]), ("generated level 0", sub["genres"]),
                        ("generated top level", results["top_audio"]["genres"])):  # fmt: skip
        for genre, m in table.items():
            lines.append(
                f"| {name} | {genre} | {m['median_level_db']['n']} | {m['median_level_db'].get('mean')} "
                f"| {m['rms_dbfs'].get('mean')} | {m['frame_chroma_entropy_bits'].get('mean')} |"
            )
    c = results["classifier"]
    lines += [
        "",
        "## Genre classifier",
        "",
        f"Nearest centroid on {c['features']}; leave-one-song-out accuracy on real clips "
        f"{c['real_accuracy']}, on real clips through the level-2 codec {c['codec_accuracy']} (chance "
        f"{c['chance']}). Generated level 0 classified as its label: {c.get('level0_right', '-')}.",
    ]
    if results.get("heldout_spectral_convergence"):
        lines += ["", "## VQ-VAE held-out spectral convergence", "", "| level | spectral convergence |",
                  "| --- | --- |"]  # fmt: skip
        lines += [f"| {k} | {v} |" for k, v in results["heldout_spectral_convergence"].items()]
    lines += ["", f"Wall time {results['wall_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def summarise_measures(items: list[tuple[str, dict]]) -> dict:
    out: dict[str, dict] = {}
    for genre in sorted({g for g, _ in items}):
        ms = [m for g, m in items if g == genre]
        out[genre] = {k: mean_sd([m[k] for m in ms]) for k in ms[0]}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    corpus, out = Path(args.corpus), Path(args.output)
    rows = corpus_rows(corpus)
    try:
        bundle = load_bundle(args.model)
    except JukeboxError as err:
        sys.exit(f"error: {err}")
    rate = bundle.sample_rate
    genres = args.genres.split(",") if args.genres else sorted({r["genre"] for r in rows})
    results: dict = {"settings": {**vars(args), "genres": genres}, "top": {}}
    results["settings"]["output"] = str(out)

    print("real clips ...", flush=True)
    clips = real_clips(bundle, corpus, [r for r in rows if r["genre"] in genres], args.durations[0],
                       args.clips_per_song)  # fmt: skip
    real_features = np.stack([genre_features(c[2], rate) for c in clips])
    codec_features = np.stack([genre_features(c[3], rate) for c in clips])
    labels, songs = [c[0] for c in clips], [c[1] for c in clips]
    real_model = CentroidClassifier.fit(real_features, labels)
    codec_model = CentroidClassifier.fit(codec_features, labels)
    results["classifier"] = {
        "features": "20 MFCC means and deviations, mean chroma, spectral flatness and median level",
        "real_accuracy": round(leave_one_group_out_accuracy(real_features, labels, songs), 3),
        "codec_accuracy": round(leave_one_group_out_accuracy(codec_features, labels, songs), 3),
        "chance": round(1 / len(set(labels)), 3),
    }
    results["real"] = {
        "subset": f"{args.clips_per_song} clips of {args.durations[0]:g} s per song, {len(clips)} in all",
        "genres": summarise_measures([(c[0], audio_measures(c[2], rate)) for c in clips]),
        "genres_codec": summarise_measures([(c[0], audio_measures(c[3], rate)) for c in clips]),
    }

    top_audio_measures, first_runs = [], {}
    for duration in args.durations:
        key = f"{duration:g}"
        codes, collapsed, per_genre, right = {}, {}, {}, 0
        for genre in genres:
            print(f"top level: {genre}, {duration:g} s ...", flush=True)
            run = out / "runs" / f"top-{key}s-{genre}"
            codes[genre], audio = sample_top(bundle, args, genre, duration, run)
            checks = [check_collapse(c, a) for c, a in zip(codes[genre], audio, strict=True)]
            collapsed[genre] = [c.collapsed for c in checks]
            predicted = codec_model.predict(np.stack([genre_features(a, rate) for a in audio]))
            right += sum(p == genre for p in predicted)
            # Silence looks like any quiet genre to the classifier: count the takes that did not collapse too.
            alive = [p == genre for p, c in zip(predicted, collapsed[genre], strict=True) if not c]
            per_genre[genre] = {
                "takes": len(checks),
                "collapsed": sum(collapsed[genre]),
                "median_level_db": mean_sd([c.median_level_db for c in checks]),
                "dominant_share": mean_sd([c.dominant_share for c in checks]),
                "dominant_codes": [c.dominant_code for c in checks],
                "classified_right": f"{sum(p == genre for p in predicted)}/{len(predicted)}",
                "classified_right_not_collapsed": f"{sum(alive)}/{len(alive)}",
                "predicted": predicted,
                "checks": [c.to_dict() for c in checks],
            }
            if duration == args.durations[0]:
                first_runs[genre] = run
                top_audio_measures += [(genre, audio_measures(a, rate)) for a in audio]
        takes = sum(g["takes"] for g in per_genre.values())
        results["top"][key] = {
            "genres": per_genre,
            "takes": takes,
            "collapsed": sum(g["collapsed"] for g in per_genre.values()),
            "collapsed_share": round(sum(g["collapsed"] for g in per_genre.values()) / takes, 3),
            "classified_right": f"{right}/{takes}",
            "agreement": agreement_table(codes, collapsed),
        }
    results["top_audio"] = {"genres": summarise_measures(top_audio_measures)}

    level0, right, total = [], 0, 0
    for genre, run in first_runs.items():
        if not args.level0_seeds:
            break
        print(f"level 0: {genre}, {args.level0_seeds} take(s) ...", flush=True)
        audio = upsample_takes(bundle, run, args.level0_seeds, run.with_name(run.name + "-level0"))
        predicted = real_model.predict(np.stack([genre_features(a, rate) for a in audio]))
        right, total = right + sum(p == genre for p in predicted), total + len(audio)
        level0 += [(genre, audio_measures(a, rate)) for a in audio]
    results["level0"] = {
        "subset": f"takes 0..{args.level0_seeds - 1} of each genre at {args.durations[0]:g} s, upsampled "
        f"at temperature 0.99",
        "genres": summarise_measures(level0) if level0 else {},
    }
    if total:
        results["classifier"]["level0_right"] = f"{right}/{total}"

    if not args.skip_heldout:
        print("VQ-VAE held-out metrics ...", flush=True)
        results["heldout_spectral_convergence"] = heldout_convergence(bundle, corpus)
    results["wall_seconds"] = time.time() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(markdown(results))
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
