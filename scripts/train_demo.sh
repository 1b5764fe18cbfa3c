#!/usr/bin/env bash
# Train the bundled `demo` model from scratch on the dev corpus, with jukebox-cli's own `jukebox train`,
# then package it into jukebox_cli/data/models/demo/ with its model card.
#
#   bash scripts/train_demo.sh                 # every stage (about 1.5 h on 2 CPU cores)
#   bash scripts/train_demo.sh priors package  # only some stages: corpus vqvae priors package
#   RUNS=runs/repro bash scripts/train_demo.sh vqvae priors verify   # retrain elsewhere, compare with shipped
#
# Stages:
#   corpus   build data/dev-corpus with scripts/make_dev_corpus.sh (Debian music packages; needs apt)
#   vqvae    the 3-level VQ-VAE (preset small: 22.05 kHz, hops 8/32/128, 512 codes), 2 threads
#   priors   the top prior and both upsamplers on that VQ-VAE's codes, as three 1-thread processes at once
#   package  held-out metrics, sample quality, model card, and the files copied into the package
#   verify   (not in the default list) compare the runs in $RUNS with the shipped files, byte for byte, and
#            record the result in the model card; exits 1 when a file differs
#
# Every stage resumes where it stopped (re-run the same command after an interruption). Each process has a
# fixed number of threads, so a run on the same kind of CPU reproduces the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."

CORPUS=${CORPUS:-data/dev-corpus}
RUNS=${RUNS:-runs/demo}
MAKE_CORPUS=${MAKE_CORPUS:-scripts/make_dev_corpus.sh}
STAGES=${*:-corpus vqvae priors package}
mkdir -p "$RUNS"

stamp() {  # stamp NAME start|end: wall-clock times for the model card
    python - "$RUNS/timings.json" "$1" "$2" <<'EOF'
import json, sys, time
from pathlib import Path
path, name, edge = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
data = json.loads(path.read_text()) if path.exists() else {}
data.setdefault(name, {})[edge] = time.time()
path.write_text(json.dumps(data, indent=1))
EOF
}

train() {  # train NAME THREADS jukebox-train-arguments...
    local name=$1 threads=$2 resume=()
    shift 2
    if [ -f "$RUNS/$name/checkpoints/latest.pt" ]; then resume=(--resume); else stamp "$name" start; fi
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads jukebox train "$@" --device cpu --quiet \
        --metadata "$CORPUS/metadata.csv" "${resume[@]}" -o "$RUNS/$name" >> "$RUNS/$name.log" 2>&1
    stamp "$name" end
}

for stage in $STAGES; do
    case $stage in
    corpus)
        [ -f "$CORPUS/metadata.csv" ] || bash "$MAKE_CORPUS" "$CORPUS" --jobs 1
        ;;
    vqvae)
        train vqvae 2 vqvae "$CORPUS" --preset small --batch-size 4 --lr 1e-3 --warmup 50 --steps 1200 \
            --save-every 100 --eval-every 400
        ;;
    priors)
        common=(--vqvae "$RUNS/vqvae" --lr 6e-4 --warmup 100 --save-every 250 --eval-every 1000)
        pids=()
        train top 1 prior "$CORPUS" --preset demo-top --batch-size 8 --steps 2400 "${common[@]}" & pids+=($!)
        train up1 1 upsampler "$CORPUS" --level 1 --preset demo-up --batch-size 16 --steps 6000 "${common[@]}" & pids+=($!)
        train up0 1 upsampler "$CORPUS" --level 0 --preset demo-up --batch-size 16 --steps 6000 "${common[@]}" & pids+=($!)
        for pid in "${pids[@]}"; do
            wait "$pid" || { kill "${pids[@]}" 2>/dev/null; echo "a prior failed; see $RUNS/*.log" >&2; exit 1; }
        done
        ;;
    package)
        python scripts/package_demo.py --corpus "$CORPUS" --runs "$RUNS"
        ;;
    verify)
        python scripts/package_demo.py --verify --runs "$RUNS"
        ;;
    *)
        echo "unknown stage: $stage (corpus, vqvae, priors, package, verify)" >&2
        exit 2
        ;;
    esac
done
