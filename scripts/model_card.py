"""The text of the demo model's MODEL_CARD.md, from the numbers package_demo.py measured (card.json)."""

from __future__ import annotations

import textwrap
from pathlib import Path

LEVEL_NAMES = {2: "top prior (level 2)", 1: "upsampler (level 1)", 0: "upsampler (level 0)"}
RUN_OF_LEVEL = {2: "top-more", 1: "up1", 0: "up0"}
RUN_NAMES = {"vqvae": "VQ-VAE", "top": "top prior (level 2), first stage", "top-more": "top prior, second stage",
             "up1": "upsampler (level 1)", "up0": "upsampler (level 0)"}  # fmt: skip


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.0f} min"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _parts(card: dict) -> str:
    m = card["metrics"]
    rows = [["VQ-VAE", "3 levels, 22.05 kHz, hops 8 / 32 / 128, 512 codes", f"{m['vqvae']['parameters']:,}",
             f"{card['files']['vqvae.safetensors']['bytes'] / 1e6:.1f} MB"]]  # fmt: skip
    for level in (2, 1, 0):
        p = m["priors"][str(level)]
        shape = (f"width {p['width']}, {p['depth']} layers, {p['heads']} heads, {p['n_ctx']} codes "
                 f"({p['window_seconds']:.2f} s)")  # fmt: skip
        size = card["files"][f"prior_level_{level}.safetensors"]["bytes"] / 1e6
        rows.append([LEVEL_NAMES[level], shape, f"{p['parameters']:,}", f"{size:.1f} MB"])
    return _table(["part", "shape", "parameters", "file"], rows)


def _reproduced(card: dict) -> str:
    """What a retraining from scratch (`train_demo.sh ... verify`) showed, if one was checked."""
    r = card.get("reproduced")
    if r is None:
        return "Whether a rerun gives these weights bit for bit has not been checked yet (`RUNS=runs/repro bash scripts/train_demo.sh vqvae priors finetune verify` checks it)."
    same = [name for name, state in r["files"].items() if state == "identical"]
    other = {name: state for name, state in r["files"].items() if state != "identical"}
    minutes = r.get("wall_minutes", {})
    text = (f"Checked on {r['date']} (torch {r['torch']}): `RUNS=runs/repro bash scripts/train_demo.sh vqvae priors "
            f"finetune verify` retrained the model from scratch in a fresh run folder on the development machine and gave "
            f"{len(same)} of the {len(r['files'])} files with every tensor equal bit for bit and the same metadata "
            "(their sha256 can still differ: safetensors writes its metadata keys in a random order)")  # fmt: skip
    if other:
        text += "; " + ", ".join(f"`{name}` {state}" for name, state in other.items())
    if {"vqvae", "top", "up1", "up0"} <= minutes.keys():
        text += (f". Wall time: VQ-VAE {minutes['vqvae']:.0f} min, then the top prior and the upsamplers "
                 f"together {minutes['top']:.0f}, {minutes['up1']:.0f} and {minutes['up0']:.0f} min")  # fmt: skip
    return textwrap.fill(text + ".", width=108, break_on_hyphens=False, break_long_words=False)


OPTION_NAMES = {"min_level_db": "quiet chunks below {:g} dBFS redrawn", "revival_threshold": "code restart below {:g}",
                "label_dropout": "no genre {:.0%}", "artist_dropout": "no artist {:.0%}"}  # fmt: skip


def _training(card: dict) -> str:
    t = card["training"]
    rows = []
    for name, what in RUN_NAMES.items():
        if name not in t:
            continue
        s, options = t[name]["settings"], t[name].get("options", {})
        shown = "; ".join(OPTION_NAMES[k].format(v) for k, v in options.items() if v is not None) or "-"
        rows.append([what, f"{t[name]['steps']:,}", s["batch_size"], f"{s['lr']:g}", s["warmup"],
                     f"{s['ema']:g}", shown, t[name].get("threads") or "-", _minutes(t[name]["wall_seconds"])])  # fmt: skip
    return _table(["part", "steps", "batch", "peak lr", "warmup", "EMA", "data and labels", "threads", "wall time"],
                  rows)  # fmt: skip


def _commands(card: dict) -> str:
    """The commands train_demo.sh ran (recorded in timings.json); the earlier fixed text for older cards."""
    t = card["training"]
    names = [name for name in RUN_NAMES if name in t]
    if all(t[n].get("command") for n in names):
        lines = [textwrap.fill(t[n]["command"], width=104, subsequent_indent="    ", break_on_hyphens=False,
                               break_long_words=False).replace("\n", " \\\n") for n in names]  # fmt: skip
        return "```bash\n" + "\n".join(lines) + "\n```"
    return f"""```bash
jukebox train vqvae data/dev-corpus --preset small --batch-size 4 --lr 1e-3 --warmup 50 --steps 1200 \\
    --save-every 100 --eval-every 400 --metadata data/dev-corpus/metadata.csv -o runs/demo/vqvae
jukebox train prior data/dev-corpus --vqvae runs/demo/vqvae --preset demo-top --batch-size 8 --steps \\
    {t["top"]["settings"]["steps"]} --lr 6e-4 --warmup 100 --save-every 250 --eval-every 1000 --metadata data/dev-corpus/metadata.csv -o runs/demo/top
jukebox train upsampler data/dev-corpus --vqvae runs/demo/vqvae --level 1 --preset demo-up --batch-size 16 \\
    --steps {t["up1"]["settings"]["steps"]} --lr 6e-4 --warmup 100 --save-every 250 --eval-every 1000 --metadata data/dev-corpus/metadata.csv -o runs/demo/up1
jukebox train upsampler data/dev-corpus --vqvae runs/demo/vqvae --level 0 --preset demo-up --batch-size 16 \\
    --steps {t["up0"]["settings"]["steps"]} --lr 6e-4 --warmup 100 --save-every 250 --eval-every 1000 --metadata data/dev-corpus/metadata.csv -o runs/demo/up0
```"""


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"  # None: no pair of takes to compare


def _mean_range(values: dict) -> str:
    """The mean, and the range over takes or clips where the card recorded it (not before min/max were kept)."""
    if values.get("mean") is None:
        return "-"
    if "min" not in values or values["n"] < 2:
        return f"{values['mean']:.2f}"
    return f"{values['mean']:.2f} ({values['min']:.2f}-{values['max']:.2f})"


def _evaluation(card: dict) -> str:
    """scripts/evaluate_demo.py on the packaged model, when packaging ran it."""
    e = card.get("evaluation")
    if not e:
        return "Not measured for this card (it predates `scripts/evaluate_demo.py`)."
    durations = list(e["top"])
    genres = sorted(e["top"][durations[0]]["genres"])
    rows = [[f"{d} s", f"**{e['top'][d]['collapsed']}/{e['top'][d]['takes']}**",
             *(f"{e['top'][d]['genres'][g]['collapsed']}/{e['top'][d]['genres'][g]['takes']}" for g in genres),
             *(_number(e["top"][d]["agreement"].get(k)) for k in ("all", "neither")),
             e["top"][d]["classified_right"]] for d in durations]  # fmt: skip
    collapse = _table(["length", "collapsed", *genres, "genre agreement (all pairs)", "(neither collapsed)",
                       "classified as its genre"], rows)  # fmt: skip
    chroma_rows = []
    for name, table in e["frame_chroma_entropy"].items():
        cells = [_mean_range(table.get(g, {})) for g in genres]
        chroma_rows.append([name, *cells])
    chroma = _table(["audio", *genres], chroma_rows)
    c = e["classifier"]
    sc = e.get("heldout_spectral_convergence") or {}
    sc_text = ", ".join(f"level {k} {v:.3f}" for k, v in sc.items()) if sc else "not measured"
    classifier = textwrap.fill(
        f"A nearest-centroid genre classifier ({c['features']}) gets {c['real_accuracy']} leave-one-song-out on "
        f"real clips and {c['codec_accuracy']} on real clips through the level-2 codec (chance {c['chance']}); "
        f"it puts {c.get('level0_right', '-')} generated level-0 takes in their own genre. The VQ-VAE's held-out "
        f"spectral convergence: {sc_text}.",
        width=108, break_on_hyphens=False, break_long_words=False,
    )  # fmt: skip
    return f"""`{e["command"]}` (artist `{e["artist"]}`, top-level temperature {e["temperature"]}; {e["wall_seconds"] / 60:.0f} min).
Each genre samples the same seeds, so take i of every genre draws the same random numbers. A take
collapsed when its decoded top level has a median frame level below -35 dBFS or one code holds more than
half its tokens. Genre agreement is the share of equal top-level tokens between two genres' takes at equal
seeds (near chance, about 0.002, when the label steers the music; near 1 when it is ignored).

{collapse}

Per-frame chroma entropy in bits (0: one pitch class, 3.58: all twelve alike) of generated audio and of real
clips ({e["real_subset"]}; generated level 0: {e["level0_subset"]}), the mean and, where recorded, the range
over clips or takes:

{chroma}

{classifier}"""


def _metrics(card: dict) -> str:
    m = card["metrics"]
    sc = m["vqvae"]["spectral_convergence"]
    vq = _table(["level", "hop", "spectral convergence (held out)"],
                [[lv, hop, f"{sc[str(lv)]:.3f}"] for lv, hop in ((0, 8), (1, 32), (2, 128))])  # fmt: skip
    pr = _table(
        ["prior", "bits per token (held out)", "uniform over 512 codes"],
        [[LEVEL_NAMES[lv], f"{m['priors'][str(lv)]['bits_per_token']:.3f}",
          f"{m['priors'][str(lv)]['uniform_bits_per_token']:.0f}"] for lv in (2, 1, 0)],
    )  # fmt: skip
    return vq + "\n\n" + pr


def _character(card: dict) -> str:
    rows = []
    for name, values in card["character"].items():

        def cell(key: str, values: dict = values) -> str:
            return f"{values[key]['mean']:.3f} ± {values[key]['sd']:.3f}"

        rows.append(
            [name, values["n"], cell("flatness"), cell("chroma_entropy"), cell("frame_chroma_entropy")]
        )
    return _table(["audio", "n", "spectral flatness", "chroma entropy (bits)",
                   "per-frame chroma entropy (bits)"], rows)  # fmt: skip


def _held_out_genres(card: dict) -> str:
    # The metrics' own split: the song list's is the larger corpus', which holds out one song more.
    genres = card["metrics"]["held_out_genres"]
    if len(genres) != 1:
        return ""
    return (f"The split (a hash of each path) happened to hold out {genres[0]} songs only, so these numbers speak "
            f"for that genre.\n")  # fmt: skip


def _reading(card: dict) -> str:
    c = card["character"]
    top, codec, noise = (c[k] for k in ("generated top level (level 2)", "corpus through the level-2 codec",
                                        "white noise"))  # fmt: skip

    def m(values: dict, key: str) -> str:
        return f"{values[key]['mean']:.3f}"

    return (
        f"Reading it: by spectral flatness the generated top level is nothing like noise ({m(top, 'flatness')} "
        f"against {m(noise, 'flatness')}) and as tonal as real music through the same codec "
        f"({m(codec, 'flatness')}). Its pitch classes are spread more evenly than the corpus': per frame "
        f"{m(top, 'frame_chroma_entropy')} bits against {m(codec, 'frame_chroma_entropy')} for the corpus "
        f"through the codec and {m(noise, 'frame_chroma_entropy')} for noise, and over a whole excerpt almost "
        "as evenly as noise: tonal, music-like texture with little sense of key."
    )


def _samples(card: dict) -> str:
    rows = [
        [genre, f"{s['wall_seconds']:.0f} s", f"`{s['command']}`"] for genre, s in card["samples"].items()
    ]
    return _table(["genre", "wall time", "command"], rows)


def _corpus(card: dict) -> str:
    rows = [[r["title"], r["artist"], r["genre"], f"{float(r['duration_s']):.0f} s", r["package"], r["license"],
             r["split"], r.get("used_by", "every part")] for r in card["corpus"]]  # fmt: skip
    return _table(
        ["title", "artist", "genre", "length", "Debian package", "license", "split", "learnt by"], rows
    )


def _stages(card: dict) -> str:
    later = [r for r in card["corpus"] if r.get("used_by", "every part") != "every part"]
    if not later:
        return ""
    first = [r for r in card["corpus"] if r not in later]
    minutes = sum(float(r["duration_s"]) for r in first)
    return (
        f"The VQ-VAE, the upsamplers and the top prior's first stage learnt from {len(first)} of these songs "
        f"({minutes / 60:.0f} min, the selection without `--more`); the top prior's second stage from all of them."
    )


def _sectoid(card: dict) -> str:
    return ", Sectoid (Carlos Viola Iborra, MIT)" if any(r["package"] == "fretsonfire-songs-sectoid"
                                                         for r in card["corpus"]) else ""  # fmt: skip


def _finetune_note(card: dict) -> str:
    return card["training"].get("top-more", {}).get("note", "")


def _codebook_note(card: dict) -> str:
    """The old VQ-VAE restarted most top-level codes every step; say so only for a card trained that way."""
    threshold = card["training"]["vqvae"].get("options", {}).get("revival_threshold")
    if threshold is not None and threshold < 1:
        text = (f"- The VQ-VAE restarts codebook entries used fewer than {threshold:g} times per step; see the "
                "evaluation above for how much of the silence problem that and the quiet-chunk filter solved.")  # fmt: skip
        return textwrap.fill(text, width=108, subsequent_indent="  ", break_on_hyphens=False)
    return """- The VQ-VAE's top level saw 4 x 64 = 256 codes per step for its 512 codebook entries, half a use each,
  below the revival threshold of 1.0: most top-level entries restarted at a random encoder output at every
  step (its logged `usage_l3` stays near 10). The exported codebook still encodes held-out audio with 434
  distinct top-level codes, but a retraining with `--revival-threshold 0.1` (which `train vqvae` now
  suggests for these settings) may well learn a better one; that has not been tried."""


def write_card(card: dict, path: Path) -> None:
    minutes = sum(float(r["duration_s"]) for r in card["corpus"]) / 60
    genres = ", ".join(card["genres"])
    m = card["metrics"]
    parameters = m["vqvae"]["parameters"] + sum(p["parameters"] for p in m["priors"].values())
    text = f"""# The `demo` model

A small Jukebox trained from scratch by jukebox-cli's own `jukebox train` commands on 2 CPU cores, shipped
inside the package so that `jukebox generate --model demo` works offline straight after `pip install`.
It shows the whole cascade (top prior, two upsamplers, three decoders) on real, trained weights. It is
tiny next to the released models (about {parameters / 1e6:.1f} M parameters against 1 to 5 billion) and learnt from
{minutes / 60:.1f} h of game music: expect tonal, music-like textures with little sense of key, not songs.

- Genres (conditioning): {genres}. Artists: the corpus' {len({r["artist"] for r in card["corpus"]})} artists
  (`jukebox labels --artists --model demo`). No lyrics conditioning.
- Files: {card["total_bytes"] / 1e6:.1f} MB of safetensors in float32; their sha256 are in `card.json`.
- Built with jukebox-cli {card["jukebox_cli_version"]}, torch {card["torch"]}.

```bash
jukebox generate --model demo --genre rock --duration 10 -o runs/rock
jukebox continue song.wav --model demo --duration 10 -o runs/more
jukebox reconstruct song.wav --model demo -o out/
```

## Parts

{_parts(card)}

## Training data

The dev corpus: {len(card["corpus"])} recordings ({minutes:.1f} min) from Debian's game-music packages,
built by `scripts/make_dev_corpus.sh --more` (it installs the packages with apt and converts them with ffmpeg
to 44.1 kHz mono WAV; training resamples to 22.05 kHz). {_stages(card)} The held-out split is fixed by a hash
of each file's path (10 %); the metrics below use the held-out songs of the first stage's corpus.

{_corpus(card)}

The packages' copyright files are in `licenses/` beside this card. Whether trained weights are a
derivative work of their training data is an open question; these weights are distributed as if they were,
with this attribution: music by TLK Games (TecnoballZ, GPL-3.0-or-later), the Nexuiz and Battle for Wesnoth
composers (GPL-2.0-or-later), El Senator of Muldjord (CC BY-SA 3.0){_sectoid(card)}. Redistribute them on those
terms.

## Training

`bash scripts/train_demo.sh` reproduces this model from an empty checkout (stages `corpus vqvae priors
finetune package`). The VQ-VAE trains first with 2 threads; then the three priors train at the same time, one
thread each, on the frozen VQ-VAE's codes; then the top prior trains on, with 2 threads, on the larger corpus
(`finetune`). Each process's thread count is fixed, so a rerun with the same torch on
the same kind of CPU is meant to give the same weights. The shipped weights are each run's EMA (`EMA`
below). Every run resumes exactly when interrupted.

{_reproduced(card)}

{_commands(card)}

{_training(card)}

Wall times are on the development machine ({card.get("machine", "2 cores")}), the three priors sharing it.
{_finetune_note(card)}

## Evaluation

{_evaluation(card)}

## Metrics

Held out, on 32 fixed chunks of the held-out songs ({", ".join(card["metrics"]["held_out_songs"])}).
{_held_out_genres(card)}Spectral convergence is ‖|STFT(x)| − |STFT(x̂)|‖ / ‖|STFT(x)|‖ (0 is perfect) of each level's reconstruction:

{_metrics(card)}

## What the samples sound like

One sample per genre, `--seed 0`, made by `scripts/package_demo.py` with the command shown (2 threads):

{_samples(card)}

Spectral flatness (0 tonal, 1 white noise) and chroma entropy (0: one pitch class, 3.58: all twelve
alike), measured with librosa on the generated files, on the middle 10 s of every corpus song (also passed
through the level-2 encoder and decoder alone, the best the top level can sound), and on Gaussian noise:

{_character(card)}

{_reading(card)}

## Limitations

- Far too small and too briefly trained to make songs. The top prior sees {card["metrics"]["priors"]["2"]["window_seconds"]:.2f} s of context, so
  nothing longer is planned, and the top level is decoded by a codec that keeps only broad strokes (its
  spectral convergence above). It demonstrates the pipeline and is a base for your own training runs.
- 22.05 kHz mono. Trained only on the four genres above; other labels are refused.
- Lyrics are not modelled: `--lyrics` is ignored, with a note.
{_codebook_note(card)}
"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
