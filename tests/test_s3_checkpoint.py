"""S3 checkpoints against a real S3 API over HTTP on loopback: moto's server mode, started here.

Nothing in boto3 is mocked: the code under test talks HTTP to `python -m moto.server`, directly or
through a small forwarding proxy (tests/s3_fault_proxy.py, its own process) that injects real HTTP
faults: 503 SlowDown answers, uploads held still, or a dead endpoint when the proxy process is
SIGKILLed mid-upload (killing moto itself would also lose its in-memory bucket, and with it the
checkpoints to resume from).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_fault_proxy import Proxy, new_bucket, set_fake_aws_env, start_moto  # noqa: E402  (tests/s3_fault_proxy.py)
from s3_fault_proxy import stop as _stop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECRET = "sEcReT/doNotLog+0123456789abcdefghijklmn"   # fake; asserted never to reach logs or objects

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def moto_port():
    proc, port = start_moto()
    try:
        yield port
    finally:
        _stop(proc)


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials in the environment (the standard chain); no shared files, no IMDS."""
    set_fake_aws_env(monkeypatch, tmp_path, "AKIATESTINGONLY00000", SECRET)


@pytest.fixture
def s3(moto_port, aws_env):
    """A fresh bucket on the moto server: (boto3 client talking straight to moto, bucket name)."""
    return new_bucket(moto_port, "ckpt")


def _cfg(root: str, endpoint: str, tmp: Path, **s3kw):
    from common.schema import CheckpointConfig, S3Config

    s3kw = {"max_attempts": 3, "retry_mode": "standard", "multipart_chunk_mb": 5, "max_concurrency": 2,
            **s3kw}
    return CheckpointConfig(root=root, staging_dir=str(tmp / "staging"), s3=S3Config(endpoint_url=endpoint, **s3kw))


def _manager(root, endpoint, tmp, is_writer=True, **s3kw):
    from pretrain.checkpoint import CheckpointManager

    return CheckpointManager(_cfg(root, endpoint, tmp, **s3kw), str(tmp / "run"), is_writer=is_writer)


def _tensors(seed: int, n: int = 64) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    w = {"wte.weight": rng.standard_normal((n, 16), dtype=np.float32),
         "ln_f.bias": rng.standard_normal(16, dtype=np.float32)}
    o = {f"{k}.{name}": rng.standard_normal(v.shape, dtype=np.float32)
         for name, v in w.items() for k in ("exp_avg", "exp_avg_sq")}
    return w, o


def _state(step: int) -> dict:
    return {"step": step, "tokens_seen": step * 10, "sample_cursor": step, "rng": {"counter": step}}


@pytest.fixture
def tok_dir(tmp_path) -> str:
    d = tmp_path / "tok"
    d.mkdir()
    (d / "spm.model").write_bytes(b"spm-bytes")
    (d / "tokenizer.json").write_text('{"format": "kogpt-tokenizer-v1"}')
    return str(d)


def _latest(client, bucket, prefix="run") -> str:
    return client.get_object(Bucket=bucket, Key=f"{prefix}/latest")["Body"].read().decode().strip()


def _keys(client, bucket) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _wait_for_multipart(client, bucket, timeout=120) -> None:
    """Poll the server (directly) until a multipart upload is in progress."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            return
        time.sleep(0.01)
    raise AssertionError("no multipart upload started")


# ----------------------------------------------------------------------------------------------------
# tests


def test_s3_round_trip_prune_and_no_secrets(s3, moto_port, tmp_path, tok_dir, caplog):
    from pretrain.checkpoint import load_checkpoint

    client, bucket = s3
    ep = f"http://127.0.0.1:{moto_port}"
    root = f"s3://{bucket}/run"
    caplog.set_level(logging.DEBUG, logger="pretrain")
    m = _manager(root, ep, tmp_path, max_attempts=5, retry_mode="adaptive")
    m.cfg.keep_last = 2
    big_w, big_o = _tensors(0, n=200_000)    # 12.8 MB weights, 25.6 MB optimizer: multipart (5 MiB parts)
    m.save(1, big_w, big_o, _state(1), tok_dir)
    for s in (2, 3):
        m.save(s, *_tensors(s), _state(s), tok_dir)
    m.close()
    assert _latest(client, bucket) == "step_00000003"
    keys = _keys(client, bucket)
    assert {k.split("/")[1] for k in keys} == {"latest", "step_00000002", "step_00000003"}
    assert "run/step_00000003/MANIFEST.json" in keys and "run/step_00000003/tokenizer/spm.model" in keys
    for k in keys:   # credentials never end up in checkpoints
        assert SECRET.encode() not in client.get_object(Bucket=bucket, Key=k)["Body"].read()

    reader = _manager(root, ep, tmp_path / "rank1", is_writer=False)   # any rank can read
    loc = reader.resolve_resume("auto")
    assert loc == f"{root}/step_00000003"
    ck = reader.load(loc)
    reader.close()
    w3, o3 = _tensors(3)
    for k in w3:
        np.testing.assert_array_equal(ck.weights[k], w3[k])
    for k in o3:
        np.testing.assert_array_equal(ck.optimizer[k], o3[k])
    assert ck.state["rng"] == {"counter": 3}
    assert not list((tmp_path / "rank1" / "staging").rglob("*.safetensors")), "download cache not cleaned"

    # a big (multipart) checkpoint round-trips through the standalone helpers
    from common.schema import S3Config
    from pretrain.checkpoint import write_checkpoint

    s3cfg = S3Config(endpoint_url=ep, multipart_chunk_mb=5, max_concurrency=4)
    write_checkpoint(f"s3://{bucket}/big/step_00000007", big_w, big_o, _state(7), tok_dir, s3cfg)
    ck = load_checkpoint(f"s3://{bucket}/big", s3cfg)
    assert ck.step == 7
    np.testing.assert_array_equal(ck.weights["wte.weight"], big_w["wte.weight"])
    np.testing.assert_array_equal(ck.optimizer["exp_avg_sq.wte.weight"], big_o["exp_avg_sq.wte.weight"])
    assert SECRET not in caplog.text and "AKIATESTINGONLY" not in caplog.text


def test_server_stops_mid_upload(s3, moto_port, tmp_path, tok_dir):
    from pretrain.checkpoint import CheckpointError

    client, bucket = s3
    proxy = Proxy(moto_port, tmp_path).start()
    root = f"s3://{bucket}/run"
    try:
        m = _manager(root, proxy.endpoint, tmp_path, max_attempts=2)
        m.save(1, *_tensors(1), _state(1), tok_dir)
        m.wait()
        m.save(2, *_tensors(2, n=400_000), _state(2), tok_dir)   # ~77 MB in 5 MiB parts
        _wait_for_multipart(client, bucket)
        proxy.kill()                                           # the endpoint dies mid-upload
        with pytest.raises(CheckpointError, match="step_00000002"):
            m.wait()
        m.close()
        assert _latest(client, bucket) == "step_00000001"
        assert "run/step_00000002/MANIFEST.json" not in _keys(client, bucket)

        proxy.start()                                          # the endpoint comes back
        m = _manager(root, proxy.endpoint, tmp_path)
        loc = m.resolve_resume("auto")
        assert loc == f"{root}/step_00000001"
        assert m.load(loc).step == 1
        m.save(2, *_tensors(2), _state(2), tok_dir)
        m.close()
        assert _latest(client, bucket) == "step_00000002"
        assert m.resolve_resume("auto") == f"{root}/step_00000002"
    finally:
        _stop(proxy.proc)


def test_throttling_503_slowdown_then_recovery(s3, moto_port, tmp_path, tok_dir, caplog):
    client, bucket = s3
    proxy = Proxy(moto_port, tmp_path, fail_first=3).start()
    root = f"s3://{bucket}/run"
    try:
        m = _manager(root, proxy.endpoint, tmp_path, max_attempts=6)
        with caplog.at_level(logging.INFO):
            m.save(5, *_tensors(5), _state(5), tok_dir)
            m.close()                       # raises if the retries did not absorb the throttling
        assert proxy.throttled == 3
        assert _latest(client, bucket) == "step_00000005"
        m = _manager(root, proxy.endpoint, tmp_path)
        loc = m.resolve_resume("auto")
        assert loc == f"{root}/step_00000005"
        np.testing.assert_array_equal(m.load(loc).weights["wte.weight"], _tensors(5)[0]["wte.weight"])
        m.close()
    finally:
        _stop(proxy.proc)


def test_throttling_beyond_retries_fails_loudly(s3, moto_port, tmp_path):
    from pretrain.checkpoint import CheckpointError

    client, bucket = s3
    proxy = Proxy(moto_port, tmp_path, fail_first=10_000).start()
    try:
        m = _manager(f"s3://{bucket}/run", proxy.endpoint, tmp_path, max_attempts=2)
        m.save(1, *_tensors(1), _state(1), None)
        with pytest.raises(CheckpointError, match="SlowDown|503"):
            m.close()
        assert _keys(client, bucket) == []
    finally:
        _stop(proxy.proc)


@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_object_damaged_after_upload(s3, moto_port, tmp_path, tok_dir, caplog, damage):
    from pretrain.checkpoint import CheckpointError

    client, bucket = s3
    ep = f"http://127.0.0.1:{moto_port}"
    root = f"s3://{bucket}/run"
    m = _manager(root, ep, tmp_path)
    m.save(1, *_tensors(1), _state(1), tok_dir)
    m.save(2, *_tensors(2), _state(2), tok_dir)
    m.close()
    key = "run/step_00000002/model.safetensors"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-5] ^= 0x01     # same size, one bit: only the sha256 can tell
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    m = _manager(root, ep, tmp_path)
    with caplog.at_level(logging.WARNING):
        loc = m.resolve_resume("auto")
    assert loc == f"{root}/step_00000001"
    assert "step_00000002" in caplog.text and ("bytes" in caplog.text or "sha256" in caplog.text)
    with pytest.raises(CheckpointError, match="truncated|altered"):
        m.load(f"{root}/step_00000002")
    ck = m.load(loc)
    damaged = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix="run/step_00000002/")["Contents"]}
    m.save(2, ck.weights, ck.optimizer, _state(2), tok_dir)   # the resumed run reaches step 2 again
    m.close()
    assert _latest(client, bucket) == "step_00000002"
    assert m.resolve_resume("auto") == f"{root}/step_00000002"
    # the damaged one was set aside (server-side copies), not overwritten
    aside = {o["Key"].replace("step_00000002.damaged/", "step_00000002/"): o["Size"]
             for o in client.list_objects_v2(Bucket=bucket, Prefix="run/step_00000002.damaged/")["Contents"]}
    assert aside == damaged
    assert client.get_object(Bucket=bucket, Key="run/step_00000002.damaged/model.safetensors")["Body"].read() == data


_KILL_CHILD = r"""
import sys, numpy as np
from common.schema import CheckpointConfig, S3Config
from pretrain.checkpoint import CheckpointManager
root, ep, run = sys.argv[1:4]
cfg = CheckpointConfig(root=root, staging_dir=run + "/staging",
                       s3=S3Config(endpoint_url=ep, multipart_chunk_mb=5, max_concurrency=1))
m = CheckpointManager(cfg, run, is_writer=True)
m.save(1, {"a": np.ones(4, np.float32)}, {}, {"step": 1}, None)
m.wait()
print("saved1", flush=True)
big = np.random.default_rng(0).standard_normal(20 * 2**20, dtype=np.float32)   # 80 MiB per file
m.save(2, {"a": big}, {"exp_avg.a": big, "exp_avg_sq.a": big}, {"step": 2}, None)
m.close()
print("saved2", flush=True)
"""


def _wait_for_parts(client, bucket, parts: int, timeout=120) -> dict:
    """Poll the server (directly) until a multipart upload has `parts` parts stored; returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            got = client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", [])
            if len(got) >= parts:
                return up
        time.sleep(0.01)
    raise AssertionError(f"no multipart upload reached {parts} parts")


def test_writer_sigkilled_in_the_middle_of_a_multipart_upload(s3, moto_port, tmp_path):
    """80 MiB files go up in 5 MiB parts (checkpoint.s3.multipart_chunk_mb: 5, one part at a time); the
    writer is SIGKILLed from outside once 2 parts of a file are stored. Nothing of that checkpoint is
    visible, `latest` still names the previous one, and the next writer aborts the open upload."""
    client, bucket = s3
    ep = f"http://127.0.0.1:{moto_port}"
    root = f"s3://{bucket}/run"
    p = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, root, ep, str(tmp_path / "run")],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "saved1"
        up = _wait_for_parts(client, bucket, 2)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    assert up["Key"].startswith("run/step_00000002/")
    assert up["Key"] not in _keys(client, bucket), "a partial object became visible"
    assert _latest(client, bucket) == "step_00000001"
    assert "run/step_00000002/MANIFEST.json" not in _keys(client, bucket)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")      # its parts are still stored

    m = _manager(root, ep, tmp_path)        # the next start: the writer aborts what the killed one left
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert m.resolve_resume("auto") == f"{root}/step_00000001"
    assert m.load(f"{root}/step_00000001").step == 1
    m.save(2, *_tensors(2), _state(2), None)
    m.close()
    assert _latest(client, bucket) == "step_00000002"
    assert m.resolve_resume("auto") == f"{root}/step_00000002"


def test_bucket_does_not_exist(s3, moto_port, tmp_path):
    from pretrain.checkpoint import CheckpointError

    client, _ = s3
    ep = f"http://127.0.0.1:{moto_port}"
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    with pytest.raises(CheckpointError, match=f"bucket '{missing}' does not exist.*aws s3 mb"):
        _manager(f"s3://{missing}/run", ep, tmp_path)
    client.create_bucket(Bucket=missing)      # the fix the message names
    m = _manager(f"s3://{missing}/run", ep, tmp_path)
    assert m.resolve_resume("auto") is None
    m.save(1, *_tensors(1), _state(1), None)
    m.close()
    assert m.resolve_resume("auto") == f"s3://{missing}/run/step_00000001"


def test_missing_credentials(s3, moto_port, tmp_path, monkeypatch):
    from pretrain.checkpoint import CheckpointError

    client, bucket = s3
    ep = f"http://127.0.0.1:{moto_port}"
    root = f"s3://{bucket}/run"
    m = _manager(root, ep, tmp_path)
    m.save(1, *_tensors(1), _state(1), None)
    m.close()
    with monkeypatch.context() as mp:
        mp.delenv("AWS_ACCESS_KEY_ID")
        mp.delenv("AWS_SECRET_ACCESS_KEY")
        with pytest.raises(CheckpointError, match="No AWS credentials.*IAM role") as ei:
            _manager(root, ep, tmp_path)
        assert SECRET not in str(ei.value)
    m = _manager(root, ep, tmp_path)          # credentials back: resume from the last checkpoint
    assert m.resolve_resume("auto") == f"{root}/step_00000001"
    assert _latest(client, bucket) == "step_00000001"
    m.close()


def test_trainer_killed_then_resumed_from_s3_reproduces_losses(s3, moto_port, tmp_path):
    """The real trainer (tiny preset, CPU) SIGKILLed from outside while it uploads a checkpoint to S3:
    the proxy holds the uploads of step 6 still, the kill lands while one is held; `latest` names
    step 4, and the run resumed from S3 gives the uninterrupted run's losses exactly."""
    pytest.importorskip("mxnet")
    from tests.train_fixtures import make_run_inputs

    client, bucket = s3
    tok, shards = make_run_inputs(tmp_path / "inputs", n_docs=400)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

    def cmd(out: Path, root: str, endpoint: str = f"http://127.0.0.1:{moto_port}") -> list[str]:
        sets = {"tokenizer.dir": tok, "train.shards": shards, "train.out_dir": out, "checkpoint.root": root,
                "checkpoint.s3.endpoint_url": endpoint, "train.max_steps": 24,
                "checkpoint.every_steps": 2, "checkpoint.keep_last": 2, "train.eval_every": 12}
        args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        return [sys.executable, "-m", "pretrain.train", "--config", "configs/tiny.yaml"] + args

    def losses(out: Path, start: int = 0) -> dict:
        got = {}
        for line in (out / "metrics.jsonl").read_text().splitlines()[start:]:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:    # the killed run's half-written last line
                continue
            if r["kind"] == "train":
                got[r["step"]] = r["loss"]
        return got

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = subprocess.run(cmd(ref, str(ref / "ckpt")), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    want = losses(ref)
    assert sorted(want) == list(range(1, 25))

    root = f"s3://{bucket}/run"
    proxy = Proxy(moto_port, tmp_path, stall_match="/run/step_00000006/", stall_s=600).start()
    proc = None
    try:
        proc = subprocess.Popen(cmd(cut, root, proxy.endpoint), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and proxy.stalled == 0:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert proxy.stalled >= 1, "no upload of step 6 reached the proxy"
        proc.send_signal(signal.SIGKILL)            # from outside, while an upload of step 6 is in flight
        proc.wait(60)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        _stop(proxy.proc)
    killed_at = _latest(client, bucket)
    assert killed_at == "step_00000004"
    assert "run/step_00000006/MANIFEST.json" not in _keys(client, bucket)

    lines_before = len((cut / "metrics.jsonl").read_text().splitlines())
    r = subprocess.run(cmd(cut, root), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {root}/step_00000004" in r.stderr
    got = losses(cut, lines_before)
    assert sorted(got) == list(range(5, 25))
    assert got == {s: want[s] for s in got}                     # exact float equality
    assert _latest(client, bucket) == "step_00000024"


def test_trainer_exits_5_when_uploads_keep_failing(s3, moto_port, tmp_path):
    """The real trainer with every S3 write throttled past its retries: the failed checkpoint is
    reported and the run ends with exit 5 (a storage failure that may pass: launchers restart), with
    nothing half-written under the root."""
    pytest.importorskip("mxnet")
    from tests.train_fixtures import make_run_inputs

    client, bucket = s3
    tok, shards = make_run_inputs(tmp_path / "inputs", n_docs=200)
    proxy = Proxy(moto_port, tmp_path, fail_first=10_000).start()
    try:
        sets = {"tokenizer.dir": tok, "train.shards": shards, "train.out_dir": tmp_path / "out",
                "checkpoint.root": f"s3://{bucket}/run5", "checkpoint.s3.endpoint_url": proxy.endpoint,
                "checkpoint.s3.max_attempts": 2, "train.max_steps": 4, "checkpoint.every_steps": 2,
                "train.eval_every": 0, "log.tensorboard": "false"}
        args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
        r = subprocess.run([sys.executable, "-m", "pretrain.train", "--config", "configs/tiny.yaml"] + args,
                           cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 5, r.stderr[-3000:]
        assert "step_00000002" in r.stderr and "run the same command again to resume" in r.stderr
        assert proxy.throttled > 0 and not [k for k in _keys(client, bucket) if k.startswith("run5/")]
    finally:
        _stop(proxy.proc)


