#!/usr/bin/env bash
# CPU-side preparation for bench/gpu_check.sh (issue 13): the tokenizer and token shards its real training
# run reads, made by the project's own stages from ../shared/data/ko_dev_corpus.txt into work/gpu_check/
# (ignored by git; ~10 MB), which the device tool carries with the tree (bench/GPU.md).
#
#   bash bench/gpu_prep.sh            # ~1-2 minutes on 2 cores; a second run returns at once (stages skip done work)
#
# Variables: PYTHON (default .venv/bin/python, else python3), CONFIG (default bench/configs/gpu_check.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
CONFIG=${CONFIG:-bench/configs/gpu_check.yaml}
corpus=../shared/data/ko_dev_corpus.txt
[[ -f $corpus ]] || { echo "gpu_prep: $corpus is missing (the shared data folder beside the checkout)" >&2; exit 2; }

"$PYTHON" -m corpus clean --config "$CONFIG"
"$PYTHON" -m corpus tokenizer --config "$CONFIG"
"$PYTHON" -m corpus shards --config "$CONFIG"

out=work/gpu_check
[[ -f $out/shards/manifest.json && -f $out/tokenizer/spm.model ]] || { echo "gpu_prep: $out is incomplete" >&2; exit 1; }
echo "gpu_prep: $(du -sh "$out" | cut -f1) in $out (tokenizer + shards); carry it: run(carry=[\"$out\"], ...)"
