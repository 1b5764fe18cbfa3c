#!/usr/bin/env bash
# Train the bundled `demo` model from scratch on the dev corpus, with jukebox-cli's own `jukebox train`,
# then package it into jukebox_cli/data/models/demo/ with its model card.
#
#   bash scripts/train_demo.sh                 # every stage (about 3.5 h on 2 CPU cores, see below)
#   bash scripts/train_demo.sh priors package  # only some stages: corpus vqvae priors finetune package
#   RUNS=runs/repro bash scripts/train_demo.sh vqvae priors finetune verify  # retrain elsewhere, compare with shipped
#   RUNS=/tmp/smoke DEST=/tmp/smoke/model STEPS_SCALE=0.002 SAMPLE_SECONDS=2 EVAL_ARGS="--seeds 1 \
#       --durations 2 --clips-per-song 1 --level0-seeds 1" bash scripts/train_demo.sh vqvae priors finetune package
#                                              # a smoke run that leaves the package alone
#
# Stages (wall times on the 2-core development machine):
#   corpus   build data/dev-corpus (20 songs, 54 min) and data/dev-corpus-more (the same plus 26 songs, 2.5 h in
#            all: --more) with scripts/make_dev_corpus.sh (Debian music packages; needs apt); runs again
#            (converting every track) when the script changed since the corpus was built
#   vqvae    the 3-level VQ-VAE (preset small: 22.05 kHz, hops 8/32/128, 512 codes), 2 threads (~20 min)
#   priors   the top prior and both upsamplers on that VQ-VAE's codes, as three 1-thread processes at once
#            (upsamplers ~55 min each; the top prior, twice the steps of the first demo, ~110 min: it has a
#            core to itself once the upsamplers are done; about 1.1 s of CPU per step, half of it encoding)
#   finetune the top prior again, from the priors stage's, on the larger corpus (1,200 steps, 2 threads, ~55 min
#            on a busy machine): with 4 to 6 songs a genre, a few seconds of audio give the song away and the
#            label teaches nothing; more songs per genre make the prior less of a per-position average, so
#            takes of different genres drift apart sooner (docs/demo-model-diagnosis.md)
#   package  copy the weights into the package, held-out metrics, one sample per genre, then
#            scripts/evaluate_demo.py on the packaged model (~20 min; its report goes into the model card)
#   verify   (not in the default list) compare the runs in $RUNS with the shipped files, byte for byte, and
#            record the result in the model card; exits 1 when a file differs
#
# The settings answer docs/demo-model-diagnosis.md: chunks quieter than -35 dBFS are redrawn (--min-level-db)
# for every part, the VQ-VAE restarts top-level codes used less than 0.1 times per step (not 1.0, which at 256
# codes per step restarted most of them every step), the priors see the `unknown` artist on 20 % and the
# `unknown` genre on 10 % of their chunks (so that those rows are trained), and the top prior (it was
# under-fitted) trains 4,800 steps instead of 2,400 with 8 layers instead of 6 (the demo-top preset).
# TOP_PRESET picks another preset for it.
# STEPS_SCALE multiplies every step count (at least 2 steps each), for smoke runs.
#
# Every stage resumes where it stopped (re-run the same command after an interruption). Each process has a
# fixed number of threads, so a run on the same kind of CPU reproduces the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."

CORPUS=${CORPUS:-data/dev-corpus}
CORPUS_MORE=${CORPUS_MORE:-data/dev-corpus-more}
RUNS=${RUNS:-runs/demo}
MAKE_CORPUS=${MAKE_CORPUS:-scripts/make_dev_corpus.sh}
STAGES=${*:-corpus vqvae priors finetune package}
STEPS_SCALE=${STEPS_SCALE:-1}
DEST=${DEST:-}                  # package into this folder instead of jukebox_cli/data/models/demo
SAMPLE_SECONDS=${SAMPLE_SECONDS:-}  # length of the card's samples (default 10)
EVAL_ARGS=${EVAL_ARGS:-}        # more options of scripts/evaluate_demo.py, e.g. "--seeds 1 --durations 2"
TOP_PRESET=${TOP_PRESET:-demo-top}
QUIET_DB=-35  # training chunks with a lower median level are redrawn
DROPOUT=(--label-dropout 0.1 --artist-dropout 0.2)
mkdir -p "$RUNS"

steps() {  # steps N: N scaled by STEPS_SCALE, at least 2
    python -c "import sys; print(max(2, round(int(sys.argv[1]) * float(sys.argv[2]))))" "$1" "$STEPS_SCALE"
}

stamp() {  # stamp NAME start|end [COMMAND]: wall-clock times (and the command, threads) for the model card
    # The three priors start at once: the lock keeps one from reading the file while another writes it.
    flock "$RUNS/.timings.lock" python - "$RUNS/timings.json" "$@" <<'EOF'
import json, os, sys, time
from pathlib import Path
path, name, edge = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
data = json.loads(path.read_text()) if path.exists() else {}
data.setdefault(name, {})[edge] = time.time()
if len(sys.argv) > 4:
    data[name].update(command=sys.argv[4], threads=int(os.environ["THREADS"]))
path.with_suffix(".tmp").write_text(json.dumps(data, indent=1))
path.with_suffix(".tmp").replace(path)
EOF
}

train() {  # train NAME THREADS jukebox-train-arguments... (the corpus: $DATA, default $CORPUS)
    local name=$1 threads=$2 data=${DATA:-$CORPUS} resume=()
    shift 2
    if [ -f "$RUNS/$name/checkpoints/latest.pt" ]; then
        resume=(--resume)
    else
        THREADS=$threads stamp "$name" start "jukebox train $* --metadata $data/metadata.csv -o $RUNS/$name"
    fi
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads jukebox train "$@" --device cpu --quiet \
        --metadata "$data/metadata.csv" "${resume[@]}" -o "$RUNS/$name" >> "$RUNS/$name.log" 2>&1
    stamp "$name" end
}

for stage in $STAGES; do
    case $stage in
    corpus)
        # settings.json records the trim settings the corpus was built with; the script converts again when
        # they changed, and skips what is already there otherwise.
        for pair in "$CORPUS:" "$CORPUS_MORE:--more"; do
            folder=${pair%%:*} more=${pair#*:}
            if [ ! -f "$folder/metadata.csv" ] || [ ! -f "$folder/settings.json" ] \
                || [ "$MAKE_CORPUS" -nt "$folder/settings.json" ]; then
                bash "$MAKE_CORPUS" "$folder" $more --jobs 1
            fi
        done
        ;;
    vqvae)
        train vqvae 2 vqvae "$CORPUS" --preset small --batch-size 4 --lr 1e-3 --warmup 50 --steps "$(steps 1200)" \
            --save-every 100 --eval-every 400 --revival-threshold 0.1 --min-level-db $QUIET_DB
        ;;
    priors)
        common=(--vqvae "$RUNS/vqvae" --lr 6e-4 --warmup 100 --save-every 250 --eval-every 1000
                --min-level-db $QUIET_DB "${DROPOUT[@]}")
        pids=()
        train top 1 prior "$CORPUS" --preset "$TOP_PRESET" --batch-size 8 --steps "$(steps 4800)" "${common[@]}" & pids+=($!)
        train up1 1 upsampler "$CORPUS" --level 1 --preset demo-up --batch-size 16 --steps "$(steps 6000)" "${common[@]}" & pids+=($!)
        train up0 1 upsampler "$CORPUS" --level 0 --preset demo-up --batch-size 16 --steps "$(steps 6000)" "${common[@]}" & pids+=($!)
        for pid in "${pids[@]}"; do
            wait "$pid" || { kill "${pids[@]}" 2>/dev/null; echo "a prior failed; see $RUNS/*.log" >&2; exit 1; }
        done
        ;;
    finetune)
        DATA=$CORPUS_MORE train top-more 2 prior "$CORPUS_MORE" --vqvae "$RUNS/vqvae" --from "$RUNS/top" \
            --batch-size 8 --steps "$(steps 1200)" --lr 3e-4 --warmup 50 --save-every 200 --eval-every 400 \
            --min-level-db $QUIET_DB "${DROPOUT[@]}"
        ;;
    package)
        python scripts/package_demo.py --corpus "$CORPUS" --corpus-more "$CORPUS_MORE" --runs "$RUNS" ${DEST:+--dest "$DEST"} \
            ${SAMPLE_SECONDS:+--seconds "$SAMPLE_SECONDS"} --eval-args="$EVAL_ARGS"
        ;;
    verify)
        python scripts/package_demo.py --verify --runs "$RUNS"
        ;;
    *)
        echo "unknown stage: $stage (corpus, vqvae, priors, finetune, package, verify)" >&2
        exit 2
        ;;
    esac
done
