#!/usr/bin/env bash
# Train on one machine: N processes (one per GPU, or N CPU workers) started by horovodrun.
#
#   launch/single_node.sh --np 8 --config configs/base.yaml [--set train.max_steps=1000 ...] [--gloo|--mpi] [--dry-run]
#
# Runs:  horovodrun -np N -H localhost:N [--gloo|--mpi] <venv>/bin/python -m pretrain.train --config C --set ...
# --np defaults to the GPUs `nvidia-smi -L` lists. With --np 1 and no Horovod installed (HOROVOD=0 install)
# it runs `python -m pretrain.train` directly. Before starting anything it checks the config file, the
# config itself and that train.global_batch splits over N workers. --dry-run prints the command and exits.
# Exit status: the trainer's (0 done, 2 config/data problem, 3 diverged, 4 stopped by a signal after a
# checkpoint, 5 checkpoint write failed; under horovodrun the first failed worker's), or 2 for a bad argument here.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

np="" config="" controller="" dry_run=0
sets=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --np) [[ $# -ge 2 ]] || die "--np needs a number"; np=$2; shift 2 ;;
        --np=*) np=${1#*=}; shift ;;
        --config) [[ $# -ge 2 ]] || die "--config needs a file"; config=$2; shift 2 ;;
        --config=*) config=${1#*=}; shift ;;
        --set) [[ $# -ge 2 ]] || die "--set needs KEY=VALUE"; sets+=("$2"); shift 2 ;;
        --set=*) sets+=("${1#*=}"); shift ;;
        --gloo) controller=--gloo; shift ;;
        --mpi) controller=--mpi; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

find_python
gpus=$(gpu_count)
if [[ -z $np ]]; then
    [[ $gpus -gt 0 ]] || die "--np N is required on a machine without GPUs (N CPU worker processes)"
    np=$gpus
fi
is_posint "$np" || die "--np must be a positive integer, got '$np'"
if [[ $gpus -gt 0 && $np -gt $gpus ]]; then
    die "--np $np is more than the $gpus GPUs of this machine (nvidia-smi -L): use --np $gpus, or launch/multi_node.sh for more"
fi
set_args=()
for s in ${sets[@]+"${sets[@]}"}; do
    [[ $s == *=* ]] || die "--set '$s' is not KEY=VALUE (e.g. --set train.max_steps=100)"
    set_args+=(--set "$s")
done
check_config "$config" "$np" ${sets[@]+"${sets[@]}"}

train=("$PY" -m pretrain.train --config "$config" ${set_args[@]+"${set_args[@]}"})
if [[ $np -eq 1 && -z $controller && ! -x $VENV/bin/horovodrun ]] && ! command -v horovodrun >/dev/null 2>&1; then
    cmd=("${train[@]}")        # one process needs no launcher (an install with HOROVOD=0)
else
    find_horovodrun
    cmd=("$HOROVODRUN" -np "$np" -H "localhost:$np")
    [[ -n $controller ]] && cmd+=("$controller")
    cmd+=("${train[@]}")
fi

# CPU workers: one OpenMP/MXNet thread pool per process sized to its share of the cores, or N
# processes each spinning up all-core pools oversubscribe the machine (measured: 20x slower on 2 cores).
if [[ $gpus -eq 0 && -z ${OMP_NUM_THREADS:-} ]]; then
    cores=$(nproc)
    export OMP_NUM_THREADS=$(( cores / np > 0 ? cores / np : 1 ))
    export MXNET_CPU_WORKER_NTHREADS=$OMP_NUM_THREADS
fi

if [[ $dry_run -eq 1 ]]; then
    print_cmd "${cmd[@]}"
    exit 0
fi
note "running: $(print_cmd "${cmd[@]}")"
if [[ ${cmd[0]} == "$PY" ]]; then
    exec "${cmd[@]}"
fi
run_horovodrun "${cmd[@]}"
