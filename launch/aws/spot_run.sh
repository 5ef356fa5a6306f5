#!/usr/bin/env bash
# Pretrain on EC2 (spot or on-demand), checkpointing to S3 and resuming after an interruption.
#
#   launch/aws/spot_run.sh --config configs/base.yaml --checkpoint-root s3://BUCKET/kogpt2/run1
#       [--np 8] [--shards-from s3://BUCKET/kogpt2/shards] [--shards-dir work/shards] [--set k=v ...]
#       [--hostfile hosts.txt --network efa --iface ens32] [--max-restarts 20] [--dry-run]
#
# What it does, on every (re)start of an instance:
#  1. checks its inputs, that S3 credentials come from the instance's IAM role (IMDSv2) and that the
#     checkpoint prefix is readable (skipped with --dry-run);
#  2. --shards-from: `aws s3 sync` the token shards to --shards-dir (a fresh instance has none) and trains on
#     them, with the tokenizer copy the shard stage keeps beside them;
#  3. starts launch/single_node.sh (or launch/multi_node.sh with --hostfile) with
#     checkpoint.root=<--checkpoint-root> and checkpoint.resume=auto: the newest complete checkpoint in S3
#     is where training continues (none yet: from scratch, or checkpoint.init_from);
#  4. watches the spot interruption notice (IMDSv2 spot/instance-action, every 5 s). A notice is logged and
#     no restart is attempted after it; the run keeps training until the instance stops, so a checkpoint
#     upload in flight can still complete (a partial one is never used: MANIFEST.json is written last);
#  5. restarts the launcher after a crash or a failed checkpoint write (any exit status but 0, 2 config/data,
#     3 diverged, 4 stopped by a signal) up to --max-restarts times, each resuming from S3.
# The next instance (an Auto Scaling group / EC2 Fleet that keeps one running, whose user data or systemd
# unit runs this script; see launch/aws/README.md) does the same and continues from S3.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

usage() {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

config="" root="" np="" shards_from="" shards_dir=work/shards hostfile="" max_restarts=20 dry_run=0
sets=() pass=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --config) [[ $# -ge 2 ]] || die "--config needs a file"; config=$2; shift 2 ;;
        --checkpoint-root) [[ $# -ge 2 ]] || die "--checkpoint-root needs s3://BUCKET/PREFIX"; root=$2; shift 2 ;;
        --np) [[ $# -ge 2 ]] || die "--np needs a number"; np=$2; shift 2 ;;
        --shards-from) [[ $# -ge 2 ]] || die "--shards-from needs s3://BUCKET/PREFIX"; shards_from=$2; shift 2 ;;
        --shards-dir) [[ $# -ge 2 ]] || die "--shards-dir needs a directory"; shards_dir=$2; shift 2 ;;
        --set) [[ $# -ge 2 ]] || die "--set needs KEY=VALUE"; sets+=("$2"); shift 2 ;;
        --hostfile) [[ $# -ge 2 ]] || die "--hostfile needs a file"; hostfile=$2; shift 2 ;;
        --network|--iface|--fusion-mb) [[ $# -ge 2 ]] || die "$1 needs a value"; pass+=("$1" "$2"); shift 2 ;;
        --max-restarts) [[ $# -ge 2 ]] || die "--max-restarts needs a number"; max_restarts=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n $root ]] || die "--checkpoint-root s3://BUCKET/PREFIX is required: spot instances lose their disks"
[[ $root =~ ^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$ ]] || die "--checkpoint-root '$root' is not s3://BUCKET[/PREFIX] (a local path does not survive the instance)"
[[ -z $shards_from || $shards_from == s3://* ]] || die "--shards-from '$shards_from' is not an s3:// URL"
[[ $max_restarts =~ ^[0-9]+$ ]] || die "--max-restarts must be a non-negative integer, got '$max_restarts'"
[[ -z $np ]] || is_posint "$np" || die "--np must be a positive integer, got '$np'"
[[ -n $config ]] || die "--config FILE is required (e.g. --config configs/base.yaml)"
[[ -f $config ]] || die "config file not found: $config (paths are relative to $(pwd))"
find_python

sets+=("checkpoint.root=$root")
if [[ -n $shards_from ]]; then
    # the shard stage's own copy of the tokenizer (same sha256), also when the config names a .spiece
    # through tokenizer.model that a fresh instance does not have
    sets+=("train.shards=$shards_dir" "tokenizer.dir=$shards_dir/tokenizer" "tokenizer.model=")
fi
sets+=(checkpoint.resume=auto)        # last, so it wins: every start continues from S3
set_args=()
for s in "${sets[@]}"; do set_args+=(--set "$s"); done
if [[ -n $hostfile ]]; then
    launch=(bash "$LAUNCH_DIR/multi_node.sh" --hostfile "$hostfile" ${np:+--np "$np"} --config "$config"
            ${pass[@]+"${pass[@]}"} "${set_args[@]}")
else
    [[ ${#pass[@]} -eq 0 ]] || die "${pass[0]} applies to multi-node runs: add --hostfile"
    launch=(bash "$LAUNCH_DIR/single_node.sh" ${np:+--np "$np"} --config "$config" "${set_args[@]}")
fi
sync=()
if [[ -n $shards_from ]]; then
    sync=(aws s3 sync --only-show-errors "$shards_from" "$shards_dir")
fi

if [[ $dry_run -eq 1 ]]; then
    [[ ${#sync[@]} -eq 0 ]] || print_cmd "${sync[@]}"
    exec "${launch[@]}" --dry-run      # the launcher checks the config and prints the training command
fi

# -- the instance: metadata (IMDSv2), credentials, S3 ----------------------------------------------------
IMDS=http://169.254.169.254/latest
imds_token() { curl -sf -m 2 -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 21600"; }
imds_get() { curl -sf -m 2 -H "X-aws-ec2-metadata-token: $(imds_token)" "$IMDS/meta-data/$1"; }

command -v curl >/dev/null || die "curl is needed to read the instance metadata (apt-get install curl)"
if role=$(imds_get iam/security-credentials/); then
    note "instance $(imds_get instance-id || echo '?') ($(imds_get instance-type || echo '?')), IAM role $role"
else
    note "no IAM instance profile in the instance metadata: S3 credentials must come from the environment or" \
         "~/.aws (attach a role with the policy in launch/aws/README.md)"
fi
"$PY" - "$root" <<'EOF' || exit 2
import sys
import boto3
from botocore.exceptions import BotoCoreError, ClientError
bucket, _, prefix = sys.argv[1][len("s3://"):].partition("/")
try:
    boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/", MaxKeys=1)
except (BotoCoreError, ClientError) as e:
    print(f"spot_run.sh: error: cannot list {sys.argv[1]}: {e}. Give the instance role s3:ListBucket on the bucket "
          "and s3:GetObject/PutObject/DeleteObject on the prefix (launch/aws/README.md)", file=sys.stderr)
    sys.exit(2)
EOF

if [[ ${#sync[@]} -gt 0 ]]; then
    command -v aws >/dev/null || die "--shards-from needs the AWS CLI (pip install awscli, or a Deep Learning AMI)"
    note "syncing shards: $(print_cmd "${sync[@]}")"
    "${sync[@]}"
    [[ -f $shards_dir/manifest.json ]] || die "$shards_from has no manifest.json: upload the whole shards.out_dir written by \`make corpus\`"
fi

# -- the spot interruption notice ------------------------------------------------------------------------
notice_flag=$(mktemp "${TMPDIR:-/tmp}/kogpt-spot-notice.XXXXXX")
rm -f "$notice_flag"
watch_spot() {
    while true; do
        if action=$(imds_get spot/instance-action 2>/dev/null); then
            note "spot interruption notice: $action; training continues until the instance stops; the next" \
                 "instance resumes from the newest complete checkpoint in $root"
            touch "$notice_flag"
            return 0
        fi
        sleep 5
    done
}
watch_spot &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true' EXIT

attempt=0
while true; do
    note "attempt $((attempt + 1)): $(print_cmd "${launch[@]}")"
    set +e
    "${launch[@]}"
    rc=$?
    set -e
    case $rc in
        0) note "training finished; checkpoints in $root"; exit 0 ;;
        2) note "stopping: configuration, data or checkpoint problem (exit 2, see above); a restart would fail the same way"; exit 2 ;;
        3) note "stopping: the loss diverged (exit 3); lower optim.lr or check the data, then start again (resume is auto)"; exit 3 ;;
        4) note "stopped by a signal after a checkpoint (exit 4); run this script again to continue from $root"; exit 4 ;;
    esac
    if [[ -e $notice_flag ]]; then
        note "exit status $rc after the spot interruption notice: not restarting; the next instance resumes from $root"
        exit "$rc"
    fi
    attempt=$((attempt + 1))
    if [[ $attempt -gt $max_restarts ]]; then
        note "exit status $rc; giving up after $max_restarts restarts"
        exit "$rc"
    fi
    note "exit status $rc; restarting in 30 s from the newest checkpoint in $root ($attempt/$max_restarts)"
    sleep 30
done
