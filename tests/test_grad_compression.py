"""`train.grad_compression: fp16` (Horovod's Compression.fp16): 2 workers sending fp16 gradients follow
1 worker with fp32 gradients, in both engines.

Tolerance: fp16 keeps 11 significant bits, so each gradient element is rounded by up to 2^-11 (~5e-4)
relative, and the average of 2 workers is formed in fp16. The loss of a step is computed before its
update, and the gradient norm from the rounded average: both agree to ~1e-3 relative. AdamW divides
each update by the running RMS of its gradient, so a relative error in g moves the weight by about
lr x 5e-4; but an element whose gradient is below fp16's smallest subnormal (6e-8) is sent as 0 and
takes no step where fp32 takes a full lr-sized one: weights therefore agree to 2 x lr per element at
worst (2 steps), and on average to far less (asserted: mean |diff| < 1e-5).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from horovod_output import explain, retry_native_crash          # noqa: E402
from test_torch_engine import V, batches, tiny_cfg              # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LR = 1e-3
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ["torch", "mxnet"])
def test_two_fp16_compressed_workers_follow_one_worker(engine, tmp_path):
    hvdrun = REPO / ".venv/bin/horovodrun"
    if not hvdrun.exists() and importlib.util.find_spec("horovod") is None:
        pytest.skip("horovod is not installed")
    if engine == "mxnet":
        pytest.importorskip("mxnet")
    script = tmp_path / "w.py"
    script.write_text(f"""
import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
import numpy as np
from test_torch_engine import tiny_cfg, batches, V
from pretrain.train.dist import init_dist
from pretrain.engines import create_engine
d = init_dist({engine!r})
cfg = tiny_cfg(micro=2, glob=8, engine={engine!r})
cfg.train.grad_compression = "fp16"
e = create_engine(cfg, d, V)
data = batches(4, seed=5)
res = []
for _ in range(2):
    r = e.train_step(data[2 * d.rank: 2 * d.rank + 2], {LR})
    res.append((r.loss, r.grad_norm))
np.savez({str(tmp_path)!r} + f"/w{{d.rank}}.npz", res=np.array(res), **e.get_weights())
""")
    cmd = [str(hvdrun) if hvdrun.exists() else "horovodrun", "-np", "2", "--gloo", sys.executable, str(script)]
    proc = retry_native_crash(lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                                     env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")))
    assert proc.returncode == 0, explain(proc)
    w0, w1 = dict(np.load(tmp_path / "w0.npz")), dict(np.load(tmp_path / "w1.npz"))

    from pretrain.engines import create_engine
    from pretrain.train.dist import Dist
    single = create_engine(tiny_cfg(micro=2, glob=8, engine=engine), Dist(), V)
    data = batches(4, seed=5)
    want = []
    for _ in range(2):
        r = single.train_step(data, LR)
        want.append((r.loss, r.grad_norm))
    np.testing.assert_allclose(w0["res"], np.array(want), rtol=1e-3)
    w = single.get_weights()
    diffs = np.concatenate([np.abs(w0[k].astype(np.float64) - w[k]).ravel() for k in w])
    assert all(np.array_equal(w0[k], w1[k]) for k in w)                 # ranks agree exactly
    assert diffs.max() <= 2 * LR and diffs.mean() < 1e-5, (diffs.max(), diffs.mean())
    assert diffs.max() > 0                                               # the gradients did travel as fp16
