#!/usr/bin/env bash
# The demo (`make demo`): raw sample text -> clean docs -> tokenizer -> token shards -> GPT-2 trained by
# two Horovod processes on CPU, stopped half way, resumed from its checkpoint -> generated Korean text.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${CONFIG:-configs/demo.yaml}
NP=${NP:-2}
PY=.venv/bin/python
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
get() { $PY -m common.config get "$1" --config "$CONFIG"; }

start=$(date +%s)
step "1/5 corpus: clean, tokenizer, token shards  ($CONFIG)"
make --no-print-directory corpus CONFIG="$CONFIG"

max_steps=$(get train.max_steps)
half=$((max_steps / 2))
step "2/5 train with horovodrun -np $NP until step $half (a checkpoint is written there)"
bash launch/single_node.sh --np "$NP" --config "$CONFIG" --set train.stop_after="$half"

step "3/5 resume from the latest checkpoint and train to step $max_steps"
bash launch/single_node.sh --np "$NP" --config "$CONFIG" --set checkpoint.resume=auto

step "4/5 generate from the prompt '2019년 한해를 보내며,'"
ckpt=$(get checkpoint.root)
$PY -m pretrain.generate --checkpoint "$ckpt" --prompt "2019년 한해를 보내며," \
    --max-length 60 --top-p 0.9 --temperature 0.7 --repetition-penalty 1.3 --seed 3 --num-samples 3

step "5/5 summary"
$PY -m pretrain.train.summary --config "$CONFIG" --elapsed $(( $(date +%s) - start ))
