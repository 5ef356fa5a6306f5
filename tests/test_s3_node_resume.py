"""Resume from S3 costs one download per node: `horovodrun -np 2` on this machine (one node, local ranks
0 and 1) against moto's S3 server, through a proxy that counts the GETs of the checkpoint's objects.
Rank 0 verifies the checkpoint while resolving `checkpoint.resume: auto`; that copy becomes the node's,
rank 1 reads it from the node directory: one GET per object. Both ranks resume exactly: the resumed
2-worker run's losses are the uninterrupted 1-process run's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from horovod_output import explain, retry_native_crash                           # noqa: E402
from s3_fault_proxy import _ProxyHandler, free_port                              # noqa: E402
import test_s3_checkpoint as _s3tests                                           # noqa: E402

# the moto server, fake credentials and a fresh bucket, as tests/test_s3_checkpoint.py makes them
moto_port, aws_env, s3 = _s3tests.moto_port, _s3tests.aws_env, _s3tests.s3

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class _CountingHandler(_ProxyHandler):
    """tests/s3_fault_proxy.py's forwarding proxy (no faults), recording the path of every GET."""

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.gets.append(self.path.split("?", 1)[0])
        super().do_GET()


@pytest.fixture
def counting_proxy(moto_port, tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _CountingHandler)
    srv.daemon_threads = True
    srv.target, srv.fail_left, srv.failed, srv.lock, srv.gets = moto_port, 0, 0, threading.Lock(), []
    srv.stats, srv.stall_match, srv.stall_s, srv.stalled = str(tmp_path / "proxy.stats"), "", 0.0, 0
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def _losses(out: Path) -> dict[int, float]:
    got = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "train":
            got[r["step"]] = r["loss"]
    return got


def test_two_ranks_on_one_node_download_the_checkpoint_once(s3, moto_port, counting_proxy, tmp_path):
    pytest.importorskip("mxnet")
    hvdrun = REPO / ".venv" / "bin" / "horovodrun"
    if not hvdrun.exists():
        pytest.skip("horovodrun is not built into .venv yet")
    from tests.train_fixtures import make_run_inputs

    client, bucket = s3
    tok, shards = make_run_inputs(tmp_path / "inputs", n_docs=200)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env = {k: v for k, v in env.items() if not k.startswith(("HOROVOD_", "OMPI_"))}
    root = f"s3://{bucket}/run"

    def cmd(out: Path, ckpt: str, endpoint: int, **kw) -> list[str]:
        sets = {"tokenizer.dir": tok, "train.shards": shards, "train.out_dir": out, "checkpoint.root": ckpt,
                "checkpoint.s3.endpoint_url": f"http://127.0.0.1:{endpoint}", "train.max_steps": 6,
                "checkpoint.every_steps": 2, "train.eval_every": 0, "log.tensorboard": "false",
                "model.dropout": 0.0, **kw}
        return [sys.executable, "-m", "pretrain.train", "--config", "configs/tiny.yaml"] + \
            [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]

    ref = tmp_path / "ref"
    r = subprocess.run(cmd(ref, str(ref / "ck"), moto_port), cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(cmd(tmp_path / "first", root, moto_port, **{"train.stop_after": 4}), cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    node = tmp_path / "node-local"
    resumed = tmp_path / "resumed"
    launch = [str(hvdrun), "-np", "2", "-H", "localhost:2", "--gloo"] + cmd(
        resumed, root, counting_proxy.server_address[1], **{"checkpoint.node_cache_dir": node})
    r = retry_native_crash(lambda: subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True,
                                                  timeout=600))
    assert r.returncode == 0, explain(r)
    out = r.stdout + r.stderr
    assert f"resumed from {root}/step_00000004" in out
    assert "downloaded and verified once for this node" in out

    gets = counting_proxy.gets
    for obj in ("model.safetensors", "optimizer.safetensors", "state.json"):
        n = sum(1 for p in gets if p.endswith(f"/run/step_00000004/{obj}"))
        assert n == 1, (obj, n, [p for p in gets if "step_00000004" in p])
    assert not any(node.rglob("*.safetensors"))                   # the node copy is removed after the resume

    want, got = _losses(ref), _losses(resumed)
    assert sorted(got) == [5, 6]
    for s in got:     # 2 workers vs 1: the same batches, only the allreduce's summation order differs
        assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-6), (s, got[s], want[s])
