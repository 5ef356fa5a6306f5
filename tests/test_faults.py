"""Faults a user meets, against a real S3 API on loopback (moto's server, with tests/s3_fault_proxy.py
in front when a fault is injected) and a real `horovodrun -np 2` through launch/single_node.sh:

- every rank exits with the failure's status (5 when the S3 endpoint goes away mid-run, 2 when one
  rank cannot read its shards), so the launcher reports it every time;
- a checkpoint root whose checkpoints all fail verification is never trained over (exit 2, nothing
  changed), while a root holding only interrupted saves starts afresh;
- a debug-level run writes no AWS key id or secret anywhere;
- S3 retries are warned about and counted, a stalled write is warned about while it is stalled, and
  metrics.jsonl gets each write's seconds, bytes and retries;
- two identical runs write byte-identical checkpoint files.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from horovod_output import explain  # noqa: E402  (tests/horovod_output.py)
from s3_fault_proxy import Proxy, new_bucket, set_fake_aws_env, start_moto, stop  # noqa: E402  (tests/s3_fault_proxy.py)
from train_fixtures import make_run_inputs  # noqa: E402  (tests/train_fixtures.py)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
HOROVODRUN = REPO / ".venv" / "bin" / "horovodrun"
TINY = "configs/tiny.yaml"
KEY_ID = "AKIAFAULTTESTKEY0001"
SECRET = "fAuLtTeSt/secret+0123456789abcdefghijklm"   # fake; must never reach an output


@pytest.fixture(scope="module")
def moto_port():
    proc, port = start_moto()
    try:
        yield port
    finally:
        stop(proc)


@pytest.fixture
def aws(tmp_path, monkeypatch) -> dict:
    """Fake credentials through the standard chain (environment), here and in every subprocess."""
    return set_fake_aws_env(monkeypatch, tmp_path, KEY_ID, SECRET)


@pytest.fixture
def bucket(moto_port, aws):
    return new_bucket(moto_port, "faults")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_run_inputs(tmp_path_factory.mktemp("faults"), n_docs=200)


def _sets(inputs, out: Path, root, **kv) -> list[str]:
    sets = {"tokenizer.dir": inputs[0], "train.shards": inputs[1], "train.out_dir": out, "checkpoint.root": root,
            "train.eval_every": 0, "log.tensorboard": "false", **{k.replace("__", "."): v for k, v in kv.items()}}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def _train(args: list[str], cwd=REPO, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "pretrain.train", "--config", str(REPO / TINY), *args], cwd=cwd,
                          env=e, capture_output=True, text=True, timeout=300)


def _launch_env(extra=None) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "HOROVOD_"))}
    e.update(extra or {})
    return e


def _worker_statuses(r: subprocess.CompletedProcess) -> dict[int, int]:
    """{rank: exit status} from horovodrun's "Process N exit with status code S." lines (non-zero only)."""
    return {int(a): int(b) for a, b in re.findall(r"^Process (\d+) exit with status code (\d+)\.", r.stdout, re.M)}


def _needs_horovod():
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet (make install)")


# ----------------------------------------------------------------------------------------------------
# every rank exits with the failure's status


def test_s3_endpoint_gone_mid_run_every_rank_exits_5(inputs, tmp_path, moto_port, bucket, aws):
    """Twice: 2 workers checkpoint to S3 through the proxy, the proxy is SIGKILLed once `latest` exists;
    rank 0's next write fails after its retries, and every rank, and single_node.sh, exit with 5."""
    _needs_horovod()
    client, name = bucket
    for attempt in range(2):
        proxy = Proxy(moto_port, tmp_path).start()
        root = f"s3://{name}/gone{attempt}"
        out = tmp_path / f"gone{attempt}"
        args = ["--np", "2", "--gloo", "--config", TINY,
                *_sets(inputs, out, root, train__max_steps=1000, checkpoint__every_steps=2,
                       checkpoint__s3__endpoint_url=proxy.endpoint, checkpoint__s3__max_attempts=2)]
        proc = subprocess.Popen(["bash", str(REPO / "launch" / "single_node.sh"), *args], cwd=REPO,
                                env=_launch_env(aws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if client.list_objects_v2(Bucket=name, Prefix=f"gone{attempt}/latest").get("KeyCount"):
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before the endpoint went away"
            proxy.kill()
            so, se = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
            stop(proxy.proc)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, so, se)
        assert r.returncode == 5, explain(r)
        assert _worker_statuses(r) == {0: 5, 1: 5}, explain(r)          # horovodrun's line per worker
        assert "rank 0 failed with exit status 5" in r.stdout + r.stderr      # what rank 1 says
        assert "run the same command again to resume" in r.stdout + r.stderr  # what rank 0 says


def test_one_rank_without_its_shards_stops_every_rank_with_2(inputs, tmp_path):
    """Rank 1 alone cannot read its shards (a host without the data): both ranks exit 2 and say why."""
    _needs_horovod()
    wrapper = tmp_path / "python"
    wrapper.write_text(f"""#!/usr/bin/env bash
# rank 1 gets a train.shards that does not exist; every other process runs unchanged
if [[ ${{HOROVOD_RANK:-}} == 1 ]]; then set -- "${{@/train.shards=*/train.shards={tmp_path / 'no-shards'}}}"; fi
exec {PY} "$@"
""")
    wrapper.chmod(0o755)
    r = subprocess.run(["bash", str(REPO / "launch" / "single_node.sh"), "--np", "2", "--gloo", "--config", TINY,
                        *_sets(inputs, tmp_path / "run", tmp_path / "run" / "ckpt", train__max_steps=4)],
                       cwd=REPO, env=_launch_env({"KOGPT_PYTHON": str(wrapper)}), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, explain(r)
    assert _worker_statuses(r) == {0: 2, 1: 2}, explain(r)
    assert "rank 1 failed with exit status 2" in r.stdout + r.stderr and "no-shards" in r.stdout + r.stderr


def test_divergence_under_two_workers_exits_3_on_both(inputs, tmp_path):
    """The loss is averaged over the workers, so every rank sees the NaN at the same step; both exit 3."""
    _needs_horovod()
    out = tmp_path / "run"
    r = subprocess.run(["bash", str(REPO / "launch" / "single_node.sh"), "--np", "2", "--gloo", "--config", TINY,
                        *_sets(inputs, out, out / "ckpt", train__max_steps=20, optim__lr="1e30",
                               optim__warmup_steps=0)],
                       cwd=REPO, env=_launch_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, explain(r)
    assert _worker_statuses(r) == {0: 3, 1: 3}, explain(r)
    assert "training diverged" in r.stdout + r.stderr


_MIDRUN_HOOK = '''
# sitecustomize for rank 1 only: reading the batch of step 4 (sample cursor 24) fails like a bad disk
import os
if os.environ.get("HOROVOD_RANK") == "1":
    from pretrain.train import data
    _orig = data.WindowDataset.batch_for_step
    def batch_for_step(self, cursor, *args, **kwargs):
        if self.split == "train" and cursor >= 24:
            raise data.DataError("injected on rank 1: shard unreadable at sample 24")
        return _orig(self, cursor, *args, **kwargs)
    data.WindowDataset.batch_for_step = batch_for_step
'''


def test_one_rank_failing_to_read_a_batch_mid_run_stops_every_rank_with_2(inputs, tmp_path):
    """Rank 1 alone cannot read the batch of step 4: the others do not wait for it in the gradient
    allreduce; both stop at the step 3 boundary with exit 2, rank 0 naming rank 1's error."""
    _needs_horovod()
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_MIDRUN_HOOK)
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/usr/bin/env bash\nexport PYTHONPATH={hook}:$PYTHONPATH\nexec {PY} \"$@\"\n")
    wrapper.chmod(0o755)
    out = tmp_path / "run"
    r = subprocess.run(["bash", str(REPO / "launch" / "single_node.sh"), "--np", "2", "--gloo", "--config", TINY,
                        *_sets(inputs, out, out / "ckpt", train__max_steps=10, checkpoint__every_steps=100)],
                       cwd=REPO, env=_launch_env({"KOGPT_PYTHON": str(wrapper)}), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, explain(r)
    assert _worker_statuses(r) == {0: 2, 1: 2}, explain(r)
    assert "rank 1 failed with exit status 2 (DataError: injected on rank 1" in r.stdout + r.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == [1, 2, 3]


# ----------------------------------------------------------------------------------------------------
# a damaged root is never trained over


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_auto_with_every_checkpoint_damaged_stops_with_2_and_changes_nothing(inputs, tmp_path):
    out = tmp_path / "run"
    ckpt = out / "ckpt"
    r = _train(_sets(inputs, out, ckpt, train__max_steps=2, checkpoint__every_steps=1, checkpoint__keep_last=3))
    assert r.returncode == 0, r.stderr[-3000:]
    for step in (1, 2):
        _flip_last_byte(ckpt / f"step_{step:08d}" / "model.safetensors")
    before = _tree(ckpt)
    r = _train(_sets(inputs, out, ckpt, train__max_steps=4, checkpoint__every_steps=1, checkpoint__keep_last=1))
    assert r.returncode == 2, r.stderr[-3000:]
    for step in (1, 2):
        assert f"step_{step:08d}/model.safetensors: sha256" in r.stderr
    assert "checkpoint.resume: none" in r.stderr and "checkpoint.resume: PATH" in r.stderr
    assert _tree(ckpt) == before                     # not pruned, not overwritten, `latest` unmoved

    # only interrupted saves (no MANIFEST.json: never complete checkpoints) under a root: a fresh start
    from common.schema import CheckpointConfig
    from pretrain.checkpoint import CheckpointManager
    bare = tmp_path / "bare"
    (bare / "step_00000002").mkdir(parents=True)
    (bare / "step_00000002" / "model.safetensors").write_bytes(b"half")
    m = CheckpointManager(CheckpointConfig(root=str(bare)), str(tmp_path / "o"), is_writer=True)
    assert m.resolve_resume("auto") is None
    m.close()


# ----------------------------------------------------------------------------------------------------
# no credentials in logs


def test_debug_log_level_writes_no_key_id_or_secret(inputs, tmp_path, moto_port, bucket, aws):
    client, name = bucket
    out = tmp_path / "run"
    r = _train(_sets(inputs, out, f"s3://{name}/dbg", train__max_steps=2, checkpoint__every_steps=1,
                     checkpoint__s3__endpoint_url=f"http://127.0.0.1:{moto_port}", log__level="debug"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r" D pretrain\.checkpoint\.storage: upload ", r.stderr), "the run did not log at debug level"
    outputs = {"stdout": r.stdout.encode(), "stderr": r.stderr.encode()}
    outputs.update({str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    for o in client.list_objects_v2(Bucket=name, Prefix="dbg/")["Contents"]:
        outputs[o["Key"]] = client.get_object(Bucket=name, Key=o["Key"])["Body"].read()
    assert len(outputs) > 10
    for where, data in outputs.items():
        for secret in (KEY_ID, SECRET, SECRET.replace("/", "%2F")):
            assert secret.encode() not in data, f"{secret[:6]}... found in {where}"


# ----------------------------------------------------------------------------------------------------
# S3 trouble is visible


def _manager(root: str, endpoint: str, tmp: Path, **kw):
    from common.schema import CheckpointConfig, S3Config
    from pretrain.checkpoint import CheckpointManager
    cfg = CheckpointConfig(root=root, staging_dir=str(tmp / "staging"), stall_warn_s=kw.pop("stall_warn_s", 60.0),
                           s3=S3Config(endpoint_url=endpoint, retry_mode="standard", multipart_chunk_mb=5,
                                       max_concurrency=2, **kw))
    return CheckpointManager(cfg, str(tmp / "run"), is_writer=True)


def _tensors(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    w = {"wte.weight": rng.standard_normal((64, 16), dtype=np.float32)}
    return w, {f"exp_avg.{k}": v for k, v in w.items()}


def test_retries_are_warned_about_and_counted(moto_port, bucket, tmp_path, caplog):
    client, name = bucket
    proxy = Proxy(moto_port, tmp_path, fail_first=3).start()
    try:
        m = _manager(f"s3://{name}/retry", proxy.endpoint, tmp_path, max_attempts=6)
        with caplog.at_level(logging.WARNING, logger="pretrain"):
            m.save(1, *_tensors(1), {"step": 1}, None)
            m.close()
    finally:
        stop(proxy.proc)
    retried = [r.getMessage() for r in caplog.records if "retry (attempt" in r.getMessage()]
    assert proxy.throttled == 3 and len(retried) == 3, retried
    assert "HTTP 503 SlowDown" in retried[0] and "attempt 2 of 6" in retried[0]
    [done] = m.pop_completed()
    assert done["step"] == 1 and done["retries"] == 3 and done["bytes"] > 0 and done["write_s"] > 0


def test_a_stalled_write_is_warned_about_while_it_is_stalled(moto_port, bucket, tmp_path, caplog):
    """The proxy holds the upload of step 2's files for 4 s; with checkpoint.stall_warn_s 1 the warning
    comes while the write is still in flight (before its "complete" line), naming the checkpoint."""
    client, name = bucket
    proxy = Proxy(moto_port, tmp_path, stall_match="/stall/step_00000002/", stall_s=4).start()
    try:
        m = _manager(f"s3://{name}/stall", proxy.endpoint, tmp_path, stall_warn_s=1.0)
        with caplog.at_level(logging.INFO, logger="pretrain"):
            m.save(2, *_tensors(2), {"step": 2}, None)
            m.close()
    finally:
        stop(proxy.proc)
    msgs = [r.getMessage() for r in caplog.records]
    stalled = [i for i, t in enumerate(msgs) if "step_00000002: stalled" in t]
    complete = [i for i, t in enumerate(msgs) if "step_00000002 complete" in t]
    assert proxy.stalled >= 1 and stalled and complete and stalled[0] < complete[0], msgs
    [done] = m.pop_completed()
    assert done["longest_stall_s"] >= 1.0


def test_metrics_jsonl_gets_each_checkpoint_writes_seconds_and_retries(inputs, tmp_path, moto_port, bucket, aws):
    client, name = bucket
    proxy = Proxy(moto_port, tmp_path, fail_first=2).start()
    out = tmp_path / "run"
    try:
        r = _train(_sets(inputs, out, f"s3://{name}/metrics", train__max_steps=4, checkpoint__every_steps=2,
                         checkpoint__s3__endpoint_url=proxy.endpoint, checkpoint__s3__max_attempts=5))
    finally:
        stop(proxy.proc)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    writes = [x for x in recs if x["kind"] == "checkpoint_write"]
    assert [x["step"] for x in writes] == [2, 4]
    assert all(x["write_s"] >= x["upload_s"] > 0 and x["serialize_s"] > 0 and x["bytes"] > 0 for x in writes)
    assert sum(x["retries"] for x in writes) == 2 == proxy.throttled
    assert "retry (attempt 2 of 5) after HTTP 503 SlowDown" in r.stderr


# ----------------------------------------------------------------------------------------------------
# byte-reproducible checkpoints


def test_two_identical_runs_write_byte_identical_checkpoints(inputs, tmp_path):
    """Same config, run from two directories (relative paths, so even the config saved in state.json
    is the same): every file of every checkpoint, MANIFEST.json and `latest` are byte-identical."""
    trees = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        r = _train(_sets(inputs, Path("run"), "run/ckpt", train__max_steps=2, checkpoint__every_steps=1),
                   cwd=tmp_path / d)
        assert r.returncode == 0, r.stderr[-3000:]
        trees.append(_tree(tmp_path / d / "run" / "ckpt"))
    assert "step_00000002/model.safetensors" in trees[0] and "step_00000002/MANIFEST.json" in trees[0]
    assert trees[0].keys() == trees[1].keys()
    differ = [k for k in trees[0] if trees[0][k] != trees[1][k]]
    assert not differ, differ
