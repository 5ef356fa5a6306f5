# The Horovod / NCCL / EFA environment of a multi-node run, in one place (sourced, not run), with the
# reason for each value. launch/multi_node.sh passes it to every rank (mpirun -x, or env for horovodrun);
# launch/slurm.sbatch --launcher srun exports it (srun hands the environment to the ranks).
#
#   source launch/horovod_env.sh
#   horovod_env NETWORK IFACE HIERARCHICAL FUSION_MB     # fills the array HOROVOD_ENV with NAME=VALUE
#
# NETWORK: socket | ib | efa | "" (leave NCCL's own detection); IFACE: the hosts' interface ("" = leave NCCL's choice); HIERARCHICAL: 1|0;
# FUSION_MB: Horovod's fusion buffer in MiB. README (launch/README.md) has the same table for users.

# Cycle time: how often Horovod's background thread looks for gradients that are ready and starts
# allreducing them. The torch engine compiles per transformer block so that gradients arrive block
# by block during the backward (bench/overlap.py); a short cycle starts each block's allreduce
# soon after its gradients land (GPT-2 base: ~1-2 ms per block's backward on an H100), while a long
# one would fuse more but leave the first allreduce waiting. 1 ms is a tenth of a base step's
# compute at 64 GPUs (~15 ms, DESIGN.md) and still fuses a whole block (7 MB) per cycle.
HOROVOD_CYCLE_TIME_MS=1

horovod_env() {
    local network=$1 iface=$2 hierarchical=$3 fusion_mb=$4
    HOROVOD_ENV=()
    # NCCL's bootstrap and TCP transport on the hosts' network, not docker0 or lo
    [[ -n $iface ]] && HOROVOD_ENV+=("NCCL_SOCKET_IFNAME=$iface")
    case $network in
        # TCP only: a cluster without RDMA NICs (NCCL would otherwise probe verbs devices)
        socket) HOROVOD_ENV+=(NCCL_IB_DISABLE=1) ;;
        # InfiniBand/RoCE verbs for NCCL
        ib) HOROVOD_ENV+=(NCCL_IB_DISABLE=0) ;;
        # AWS EFA through the aws-ofi-nccl plugin: the efa libfabric provider, GPUDirect RDMA (p4d/p5),
        # and fork safety for verbs memory registrations (Python's subprocesses fork)
        efa) HOROVOD_ENV+=(FI_PROVIDER=efa FI_EFA_USE_DEVICE_RDMA=1 RDMAV_FORK_SAFE=1) ;;
        "") ;;
        *) echo "horovod_env: network '$network': use socket, ib or efa" >&2; return 2 ;;
    esac
    # reduce within a host over NVLink first, then across hosts: n-1 inter-node hops per buffer instead
    # of p-1, and larger inter-node messages (bench/scaling_model.py models both)
    [[ $hierarchical -eq 1 ]] && HOROVOD_ENV+=(HOROVOD_HIERARCHICAL_ALLREDUCE=1)
    # bytes of gradients fused into one allreduce: GPT-2 base's 0.5 GB of fp32 gradients in ~4 buffers,
    # each large enough for EFA's bandwidth (per-message latency amortised), small enough that the
    # first starts while the backward still runs
    HOROVOD_ENV+=("HOROVOD_FUSION_THRESHOLD=$((fusion_mb * 1024 * 1024))")
    HOROVOD_ENV+=("HOROVOD_CYCLE_TIME=$HOROVOD_CYCLE_TIME_MS")
}
