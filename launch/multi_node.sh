#!/usr/bin/env bash
# Train on several machines listed in a hostfile (`host slots=N`, one slot per GPU; launch/hostfile.py).
#
#   launch/multi_node.sh --hostfile hosts.txt --config configs/base.yaml [--np 64] [--set k=v ...]
#       [--launcher mpirun|horovodrun] [--network socket|ib|efa] [--iface eth0] [--gloo]
#       [--fusion-mb 128] [--no-hierarchical] [--env NAME=VALUE ...] [--dry-run]
#
# mpirun (default): mpirun -np N -hostfile F -bind-to none -map-by slot --mca pml ob1 --mca btl ^openib
#   --mca btl_tcp_if_include IFACE -x NCCL_SOCKET_IFNAME=IFACE -x NCCL_IB_DISABLE=1
#   -x HOROVOD_HIERARCHICAL_ALLREDUCE=1 -x HOROVOD_FUSION_THRESHOLD=... -x HOROVOD_CYCLE_TIME=1
#   -x PATH [-x LD_LIBRARY_PATH] -x PYTHONPATH (the Horovod/NCCL values and why: launch/horovod_env.sh)
#   <venv>/bin/python -m pretrain.train --config C --set ...
# horovodrun: env <the same variables> horovodrun -np N -hostfile F --network-interface IFACE [--gloo] python ...
# --network: socket = TCP only (NCCL_IB_DISABLE=1); ib = InfiniBand/RoCE for NCCL (NCCL_IB_DISABLE=0);
#   efa = AWS Elastic Fabric Adapter through aws-ofi-nccl (FI_PROVIDER=efa, FI_EFA_USE_DEVICE_RDMA=1,
#   RDMAV_FORK_SAFE=1; MPI's own traffic stays on TCP: --mca pml ^cm).
# --iface: the interface the hosts reach each other on (bootstrap + TCP); default the one of the default route.
# --np defaults to every slot and must fill whole hosts. The venv must be at the same path on every host
# (a shared filesystem, or the same `make install` on each); passwordless ssh between hosts (or an
# mpirun inside a Slurm allocation, which starts its daemons through Slurm).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

hostfile="" np="" config="" launcher=mpirun network=socket iface="" controller="" fusion_mb=128
hierarchical=1 dry_run=0
sets=() extra_env=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --hostfile|-hostfile) [[ $# -ge 2 ]] || die "--hostfile needs a file"; hostfile=$2; shift 2 ;;
        --np) [[ $# -ge 2 ]] || die "--np needs a number"; np=$2; shift 2 ;;
        --config) [[ $# -ge 2 ]] || die "--config needs a file"; config=$2; shift 2 ;;
        --set) [[ $# -ge 2 ]] || die "--set needs KEY=VALUE"; sets+=("$2"); shift 2 ;;
        --launcher) [[ $# -ge 2 ]] || die "--launcher needs mpirun or horovodrun"; launcher=$2; shift 2 ;;
        --network) [[ $# -ge 2 ]] || die "--network needs socket, ib or efa"; network=$2; shift 2 ;;
        --iface) [[ $# -ge 2 ]] || die "--iface needs an interface name"; iface=$2; shift 2 ;;
        --fusion-mb) [[ $# -ge 2 ]] || die "--fusion-mb needs a number"; fusion_mb=$2; shift 2 ;;
        --no-hierarchical) hierarchical=0; shift ;;
        --gloo) controller=--gloo; shift ;;
        --mpi) controller=--mpi; shift ;;
        --env) [[ $# -ge 2 ]] || die "--env needs NAME=VALUE"; extra_env+=("$2"); shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

find_python
[[ -n $hostfile ]] || die "--hostfile FILE is required (make one: python launch/hostfile.py make --hosts a,b --slots 8 -o hosts.txt)"
[[ -z $np ]] || is_posint "$np" || die "--np must be a positive integer, got '$np'"
case $launcher in mpirun|horovodrun) ;; *) die "--launcher '$launcher': use mpirun or horovodrun" ;; esac
case $network in socket|ib|efa) ;; *) die "--network '$network': use socket (TCP), ib (InfiniBand/RoCE) or efa (AWS EFA)" ;; esac
is_posint "$fusion_mb" || die "--fusion-mb must be a positive integer (MB), got '$fusion_mb'"
[[ $launcher == mpirun && -n $controller ]] && die "$controller is a horovodrun option: add --launcher horovodrun"
# the hostfile's checks and the process count (every slot unless --np)
np=$("$PY" "$LAUNCH_DIR/hostfile.py" check "$hostfile" ${np:+--np "$np"}) || exit 2
if [[ -z $iface ]]; then
    iface=$(ip -o -4 route show to default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}' || true)
    [[ -n $iface ]] || die "cannot find the network interface of the default route: pass --iface NAME (ip -br addr lists them)"
fi
set_args=()
for s in ${sets[@]+"${sets[@]}"}; do
    [[ $s == *=* ]] || die "--set '$s' is not KEY=VALUE (e.g. --set train.max_steps=100)"
    set_args+=(--set "$s")
done
for e in ${extra_env[@]+"${extra_env[@]}"}; do
    [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || die "--env '$e' is not NAME=VALUE"
done
check_config "$config" "$np" ${sets[@]+"${sets[@]}"}

# The environment every rank needs (values and reasons in launch/horovod_env.sh).
source "$LAUNCH_DIR/horovod_env.sh"
horovod_env "$network" "$iface" "$hierarchical" "$fusion_mb"
env_vars=("${HOROVOD_ENV[@]}" ${extra_env[@]+"${extra_env[@]}"})
train=("$PY" -m pretrain.train --config "$config" ${set_args[@]+"${set_args[@]}"})

if [[ $launcher == mpirun ]]; then
    find_mpirun
    cmd=("$MPIRUN" -np "$np" -hostfile "$hostfile" -bind-to none -map-by slot)
    if [[ $network == efa ]]; then
        cmd+=(--mca pml ^cm)          # MPI over TCP; NCCL carries the gradients over EFA
    else
        cmd+=(--mca pml ob1 --mca btl ^openib)
    fi
    cmd+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
    for v in "${env_vars[@]}"; do cmd+=(-x "$v"); done
    for v in PATH LD_LIBRARY_PATH PYTHONPATH; do [[ -n ${!v:-} ]] && cmd+=(-x "$v"); done   # as set here
    cmd+=("${train[@]}")
else
    find_horovodrun
    # horovodrun forwards its own environment to every rank
    cmd=(env "${env_vars[@]}" "$HOROVODRUN" -np "$np" -hostfile "$hostfile" --network-interface "$iface")
    [[ -n $controller ]] && cmd+=("$controller")
    cmd+=("${train[@]}")
fi

if [[ $dry_run -eq 1 ]]; then
    print_cmd "${cmd[@]}"
    exit 0
fi
note "running: $(print_cmd "${cmd[@]}")"
if [[ $launcher == horovodrun ]]; then
    run_horovodrun "${cmd[@]}"        # exits with the first failed worker's status, like mpirun
fi
exec "${cmd[@]}"
