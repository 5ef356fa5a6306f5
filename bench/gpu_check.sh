#!/usr/bin/env bash
# Issue 13's GPU check in one command (bench/GPU.md says how to run it through the device tool):
#
#   bash bench/gpu_check.sh "$OUT"                                       # on the GPU machine, < 8 minutes
#   bash bench/gpu_check.sh /tmp/gc --device cpu --tiny --block-missing  # the CPU rehearsal (~3 min on 2 cores)
#
# Runs from anywhere (it cds to the repo root). The results folder is the first argument, or $OUT; the rest
# goes to bench/gpu_check.py (--budget-s, --only STEPS, --no-compile, --data DIR, ...). Every step runs under
# its own timeout inside the budget (default 450 s); this wrapper adds an outer one of budget + 25 s, so
# even a wedged driver leaves gpu_check.json / gpu_check_table.txt of the steps that finished.
# PYTHON: the interpreter (default python3; .venv/bin/python when python3 lacks torch and .venv has it).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-}
if [[ $# -gt 0 && $1 != -* ]]; then out=$1; shift; fi
[[ -n $out ]] || { echo "usage: bash bench/gpu_check.sh OUT_DIR [--device cpu --tiny ...] (or set OUT)" >&2; exit 2; }
mkdir -p "$out"
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    if ! python3 -c "import torch" 2>/dev/null && [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
fi
budget=450
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [[ ${args[i]} == --budget-s ]] && budget=${args[i+1]%.*}; done
export PYTHONUNBUFFERED=1
timeout -k 10 $((budget + 25)) "$PYTHON" bench/gpu_check.py "$out" --python "$PYTHON" "$@"
rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "gpu_check: the driver ran past its budget and was stopped (rc $rc); what finished:" >&2
    [[ -f $out/gpu_check_table.txt ]] && cat "$out/gpu_check_table.txt"
    [[ -f $out/gpu_check.json ]] && "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: v.get('status') for k, v in d['steps'].items()})" "$out/gpu_check.json"
fi
exit $rc
