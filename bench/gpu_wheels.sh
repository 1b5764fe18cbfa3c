#!/usr/bin/env bash
# Fill .whl/ (git-ignored, at the root of the checkout this runs in) with the wheels the GPU machine lacks,
# for its Python 3.12 on x86-64 Linux, then print what is there and how big it is.
#
#   bash bench/gpu_wheels.sh            # then, on the device, from the repo root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#
# The device image already has torch, torchaudio, numpy, scipy, scikit-learn, numba, llvmlite, joblib,
# lazy-loader, msgpack, typing-extensions, packaging, requests, tqdm, safetensors, huggingface-hub, typer,
# rich, matplotlib, tensorboard and pytest (torch is never carried). What jukebox_cli, the tests and the
# reference (jukebox-infer) import beyond that is below, each dependency named (pip runs with --no-deps),
# one version each: the versions the project's own environment is tested with.
set -euo pipefail

WHEELS=(
  jukebox-infer==0.1.2  # the reference; needs librosa, soundfile, unidecode (+ numpy, torch, tqdm: there)
  librosa==0.11.0       # needs audioread, decorator, pooch, soundfile, soxr (+ numba, scipy, ...: there)
  audioread==3.1.0
  decorator==5.3.1
  pooch==1.9.0          # needs platformdirs (+ packaging, requests: there)
  platformdirs==4.14.9
  soundfile==0.14.0     # bundles libsndfile; needs cffi (+ numpy, typing-extensions: there)
  cffi==2.1.1           # compiled: cp312
  pycparser==3.12
  soxr==1.1.0           # compiled: cp312 abi3
  unidecode==1.4.0
)

root=$(git rev-parse --show-toplevel)
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

dest="$root/.whl"
rm -rf "$dest"
mkdir -p "$dest"
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${WHEELS[@]}"

count=$(find "$dest" -type f -name '*.whl' | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
  echo "expected ${#WHEELS[@]} wheels, got $count" >&2
  exit 1
fi
ls -l "$dest"
echo ".whl: $count wheels, $(du -sh "$dest" | cut -f1)"
echo "what travels (tracked + untracked-not-ignored + .whl) must stay under 64 MiB:"
tracked=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
  awk '{ s += $1 } END { print s + 0 }')
wheels=$(du -sb "$dest" | cut -f1)
echo "  tree $((tracked / 1048576)) MiB + wheels $((wheels / 1048576)) MiB = $(((tracked + wheels) / 1048576)) MiB"
