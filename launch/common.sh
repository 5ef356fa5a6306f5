# shellcheck shell=bash
# Shared by the launch scripts (sourced, not run): locating the tools, checking inputs, printing commands.
#
# Environment: VENV (default <repo>/.venv) holds python and horovodrun; KOGPT_PYTHON overrides the
# interpreter the ranks run (the same path must exist on every host of a multi-node job).

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$LAUNCH_DIR/.." && pwd)
VENV=${VENV:-$REPO/.venv}
PROG=$(basename "$0")

die() { echo "$PROG: error: $*" >&2; exit 2; }
note() { echo "$PROG: $*" >&2; }

# The interpreter every rank runs: the venv's, as an absolute path (ranks may start in another cwd).
find_python() {
    PY=${KOGPT_PYTHON:-$VENV/bin/python}
    [[ -x $PY ]] || die "python not found at $PY: run \`make install\` (it creates .venv), or set VENV=/path/to/venv"
}

find_horovodrun() {
    HOROVODRUN=$VENV/bin/horovodrun
    if [[ ! -x $HOROVODRUN ]]; then
        HOROVODRUN=$(command -v horovodrun || true)
        [[ -n $HOROVODRUN ]] || die "horovodrun not found in $VENV/bin or on PATH: run \`make install\` (it builds Horovod into .venv)"
    fi
}

find_mpirun() {
    MPIRUN=$(command -v mpirun || true)
    [[ -n $MPIRUN ]] || die "mpirun not found on PATH: install OpenMPI (\`make install\` does on Debian/Ubuntu as root) or use --launcher horovodrun --gloo"
}

is_posint() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

# check_config CONFIG NP [--set values...]: the file exists, the tree validates, and
# train.global_batch = micro_batch x accumulation x NP workers (so N processes do not all fail later).
check_config() {
    local config=$1 np=$2
    shift 2
    [[ -n $config ]] || die "--config FILE is required (e.g. --config configs/base.yaml)"
    [[ -f $config ]] || die "config file not found: $config (paths are relative to $(pwd); the YAMLs are in $REPO/configs/)"
    "$PY" - "$config" "$np" "$@" <<'EOF' || exit 2
import sys
from common.config import ConfigError, load_config
path, np_, *sets = sys.argv[1:]
try:
    cfg = load_config(path, sets)
    cfg.train.accumulation(int(np_))
except ConfigError as e:
    print(f"config error: {e}", file=sys.stderr)
    sys.exit(2)
EOF
}

# Number of GPUs on this machine (0 without nvidia-smi or GPUs).
gpu_count() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
    else
        echo 0
    fi
}

# print_cmd ARGS...: the command on one line, shell-quoted so it can be pasted.
print_cmd() {
    local out
    printf -v out '%q ' "$@"
    echo "${out% }"
}

# OpenMPI refuses to run as root without these (containers often run as root); harmless otherwise.
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Ranks import the repo's packages whatever their working directory.
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

# run_horovodrun CMD...: run horovodrun and exit with the first failed worker's own status (the
# trainer makes every worker exit with the same one: pretrain/train/status.py).
# horovodrun itself exits 1 whatever the workers said, which would hide the trainer's exit codes
# (2 config/data, 3 diverged, 4 stopped by a signal after a checkpoint, 5 checkpoint write failed)
# from whoever restarts the job (launch/aws/spot_run.sh, a Slurm requeue). Its "Process N exit
# with status code S." lines on stdout give them back (with --mpi, horovodrun's mpirun already
# exits with it). TERM/INT/USR1 sent to this script go to this machine's trainer processes
# themselves, which checkpoint at the step boundary and exit 4; the launcher then reports them.
# (Signalling horovodrun instead loses the job: under MPI it is a shell whose mpirun lives on.)
_trainer_pids() {        # descendants of $1 that run pretrain.train, from /proc (no ps needed)
    local parent=$1 p stat ppid
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        ppid=${stat##*) }; ppid=${ppid#* }; ppid=${ppid%% *}
        [[ $ppid == "$parent" ]] || continue
        # argv[1] "-m", argv[2] "pretrain.train": the python process itself, not a `sh -c "..."`,
        # horovodrun or mpirun whose arguments carry that command
        if tr '\0' '|' < "$p/cmdline" 2>/dev/null | grep -qE '^[^|]*\|-m\|pretrain\.train\|'; then
            echo "${p#/proc/}"
        else
            _trainer_pids "${p#/proc/}"
        fi
    done
}

_signal_trainers() {     # SIGNAL ROOT_PID
    local p
    for p in $(_trainer_pids "$2"); do kill -"$1" "$p" 2>/dev/null || true; done
}

run_horovodrun() {
    local tmp pid fpid rc line
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/kogpt-launch.XXXXXX")
    mkfifo "$tmp/stdout"
    # horovodrun's stdout passes through unchanged; the first non-zero worker status is kept aside
    while IFS= read -r line; do
        printf '%s\n' "$line"
        if [[ ! -s $tmp/status && $line =~ ^Process\ [0-9]+\ exit\ with\ status\ code\ ([0-9]+)\. ]] \
                && [[ ${BASH_REMATCH[1]} != 0 ]]; then
            echo "${BASH_REMATCH[1]}" > "$tmp/status"
        fi
    done < "$tmp/stdout" &
    fpid=$!
    "$@" > "$tmp/stdout" &
    pid=$!
    trap '_signal_trainers TERM "$pid"' TERM INT
    trap '_signal_trainers USR1 "$pid"' USR1
    while true; do
        set +e
        wait "$pid"
        rc=$?
        set -e
        # wait returns early (status > 128) when a trapped signal arrives; go on until horovodrun ends
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT USR1
    wait "$fpid" 2>/dev/null || true      # the filter has passed on every line
    if [[ $rc -ne 0 && -s $tmp/status ]]; then
        rc=$(cat "$tmp/status")
    fi
    rm -rf "$tmp"
    exit "$rc"
}
