"""Local checkpoints: round trip, manifest verification, fallback, keep-last-K, interrupted saves."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.schema import CheckpointConfig
from pretrain.checkpoint import (CheckpointError, CheckpointManager, load_checkpoint, step_name,
                                 write_checkpoint)

REPO = Path(__file__).resolve().parents[1]


def tensors(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    w = {"wte.weight": rng.standard_normal((50, 8), dtype=np.float32),
         "h.0.ln_1.bias": rng.standard_normal(8, dtype=np.float32)}
    o = {f"{k}.{n}": rng.standard_normal(v.shape, dtype=np.float32)
         for n, v in w.items() for k in ("exp_avg", "exp_avg_sq")}
    return w, o


def state(step: int) -> dict:
    return {"step": step, "tokens_seen": step * 64, "sample_cursor": step * 4, "engine": "torch",
            "world_size": 1, "rng": {"seed": 7, "counter": step}, "loss_scale": 1.0,
            "skipped_steps": 0, "tokenizer_sha256": "ab" * 32, "model": {"units": 8}, "config": {}}


@pytest.fixture
def tok_dir(tmp_path: Path) -> str:
    d = tmp_path / "tok"
    d.mkdir()
    (d / "spm.model").write_bytes(b"\x00sentencepiece-model-bytes")
    (d / "tokenizer.json").write_text(json.dumps({"format": "kogpt-tokenizer-v1", "vocab_size": 50}))
    return str(d)


def manager(tmp_path: Path, **kw) -> CheckpointManager:
    cfg = CheckpointConfig(root=str(tmp_path / "ckpt"), **kw)
    return CheckpointManager(cfg, str(tmp_path / "run"), is_writer=True)


def test_round_trip_snapshot_and_layout(tmp_path, tok_dir):
    m = manager(tmp_path)
    w, o = tensors(1)
    expected_w = {k: v.copy() for k, v in w.items()}
    m.save(10, w, o, state(10), tok_dir)
    for v in w.values():   # the training loop keeps mutating its arrays: the checkpoint must not see it
        v += 100.0
    m.wait()
    root = tmp_path / "ckpt"
    assert (root / "latest").read_text().strip() == "step_00000010"
    d = root / "step_00000010"
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) == [
        "MANIFEST.json", "model.safetensors", "optimizer.safetensors", "state.json",
        "tokenizer/spm.model", "tokenizer/tokenizer.json"]
    loc = m.resolve_resume("auto")
    assert loc == str(d)
    ck = m.load(loc)
    m.close()
    assert ck.step == 10 and ck.state["format"] == "kogpt-ckpt-v1" and ck.state["rng"]["counter"] == 10
    for k in w:
        np.testing.assert_array_equal(ck.weights[k], expected_w[k])
        assert ck.weights[k].dtype == np.float32
    for k in o:
        np.testing.assert_array_equal(ck.optimizer[k], o[k])
    assert set(ck.files) == {"model.safetensors", "optimizer.safetensors", "state.json",
                             "tokenizer/spm.model", "tokenizer/tokenizer.json"}


def test_manifest_sizes_and_hashes(tmp_path, tok_dir):
    import hashlib

    m = manager(tmp_path)
    m.save(5, *tensors(2), state(5), tok_dir)
    m.close()
    d = tmp_path / "ckpt" / "step_00000005"
    man = json.loads((d / "MANIFEST.json").read_text())
    assert man["step"] == 5
    for rel, meta in man["files"].items():
        data = (d / rel).read_bytes()
        assert meta["size"] == len(data)
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_manifest", "delete_file"])
def test_damaged_newest_falls_back_with_warning(tmp_path, tok_dir, caplog, damage):
    m = manager(tmp_path)
    m.save(1, *tensors(1), state(1), tok_dir)
    m.save(2, *tensors(2), state(2), tok_dir)
    m.close()
    d2 = tmp_path / "ckpt" / "step_00000002"
    f = d2 / "optimizer.safetensors"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-7])
    elif damage == "flip_byte":   # same size: only the sha256 catches it
        b = bytearray(f.read_bytes())
        b[-3] ^= 0xFF
        f.write_bytes(bytes(b))
    elif damage == "delete_manifest":
        (d2 / "MANIFEST.json").unlink()
    else:
        (d2 / "tokenizer" / "spm.model").unlink()
    m2 = manager(tmp_path)
    with caplog.at_level(logging.WARNING):
        loc = m2.resolve_resume("auto")
    assert loc == str(tmp_path / "ckpt" / "step_00000001")
    assert "step_00000002" in caplog.text
    assert m2.load(loc).step == 1
    with pytest.raises(CheckpointError, match="step_00000002"):
        m2.resolve_resume(str(d2))   # an explicit path to a damaged checkpoint is an error, no fallback
    with pytest.raises(CheckpointError):
        m2.load(str(d2))
    damaged = {p.relative_to(d2).as_posix(): p.read_bytes() for p in d2.rglob("*") if p.is_file()}
    with caplog.at_level(logging.WARNING):
        m2.save(2, *tensors(3), state(2), tok_dir)   # the resumed run reaches step 2 again
        m2.close()
    if damage == "delete_manifest":   # an unfinished save, not a damaged checkpoint: simply replaced
        assert not (tmp_path / "ckpt" / "step_00000002.damaged").exists()
    else:                             # failed verification: set aside, byte for byte, never overwritten
        aside = tmp_path / "ckpt" / "step_00000002.damaged"
        assert {p.relative_to(aside).as_posix(): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == damaged
        assert "moved its" in caplog.text
        assert manager(tmp_path).resolve_resume("auto") == str(d2)   # the aside copy is never resumed from
    assert m2.load(str(d2)).step == 2


def test_keep_last_k_prunes_after_completion(tmp_path):
    m = manager(tmp_path, keep_last=2)
    for s in (100, 200, 300, 400):
        m.save(s, *tensors(s), state(s), None)
    m.close()
    root = tmp_path / "ckpt"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000300", "step_00000400"]
    assert (root / "latest").read_text().strip() == "step_00000400"


def test_resume_modes(tmp_path, tok_dir):
    m = manager(tmp_path)
    assert m.resolve_resume("auto") is None          # empty root: start fresh
    assert m.resolve_resume("none") is None
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        m.resolve_resume(str(tmp_path / "elsewhere"))
    m.save(3, *tensors(3), state(3), tok_dir)
    m.save(4, *tensors(4), state(4), tok_dir)
    m.wait()
    root = tmp_path / "ckpt"
    assert m.resolve_resume(str(root)) == str(root / "step_00000004")       # a root: its newest
    assert m.resolve_resume(str(root / "step_00000003")) == str(root / "step_00000003")
    assert m.resolve_resume("none") is None
    m.close()
    ck = load_checkpoint(str(root))      # standalone helper, root or step dir
    assert ck.step == 4
    assert load_checkpoint(str(root / "step_00000003")).step == 3


def test_latest_wins_over_newer_leftovers(tmp_path):
    m = manager(tmp_path)
    m.save(1, *tensors(1), state(1), None)
    m.wait()
    # a complete checkpoint newer than `latest` (an abandoned run, or killed between MANIFEST and latest)
    write_checkpoint(str(tmp_path / "ckpt" / step_name(9)), *tensors(9), state(9), None)
    assert m.resolve_resume("auto").endswith("step_00000001")
    m.close()


def test_non_writer_writes_nothing(tmp_path):
    cfg = CheckpointConfig(root=str(tmp_path / "ckpt"))
    m = CheckpointManager(cfg, str(tmp_path / "run"), is_writer=False)
    m.save(1, *tensors(1), state(1), None)
    m.close()
    assert not (tmp_path / "ckpt").exists()


def test_user_errors_are_raised_at_save(tmp_path):
    m = manager(tmp_path)
    bad = state(1)
    bad["rng"] = np.arange(3)   # numpy arrays are not JSON: must be converted by the caller
    with pytest.raises(CheckpointError, match="JSON"):
        m.save(1, *tensors(1), bad, None)
    with pytest.raises(CheckpointError, match="tokenizer directory"):
        m.save(1, *tensors(1), state(1), str(tmp_path / "missing_tok"))
    m.close()


@pytest.mark.parametrize("async_upload", [True, False])
def test_failed_save_keeps_latest_and_surfaces(tmp_path, async_upload):
    m = manager(tmp_path, async_upload=async_upload)
    m.save(1, *tensors(1), state(1), None)
    m.wait()
    w, o = tensors(2)
    w["bad"] = np.zeros(3, dtype=np.complex64)   # safetensors cannot store complex: the write fails
    if async_upload:
        m.save(2, w, o, state(2), None)          # returns; the failure is raised by wait()
        with pytest.raises(CheckpointError, match="step_00000002"):
            m.wait()
    else:
        with pytest.raises(CheckpointError, match="step_00000002"):
            m.save(2, w, o, state(2), None)
    root = tmp_path / "ckpt"
    assert (root / "latest").read_text().strip() == "step_00000001"
    assert not (root / "step_00000002").exists()
    assert m.resolve_resume("auto") == str(root / "step_00000001")
    m.save(3, *tensors(3), state(3), None)       # the manager still works afterwards
    m.close()
    assert (root / "latest").read_text().strip() == "step_00000003"


_KILL_CHILD = r"""
import sys, numpy as np
from common.schema import CheckpointConfig
from pretrain.checkpoint import CheckpointManager
root, run = sys.argv[1], sys.argv[2]
m = CheckpointManager(CheckpointConfig(root=root), run, is_writer=True)
st = lambda s: {"step": s}
m.save(1, {"a": np.ones(4, np.float32)}, {}, st(1), None)
m.wait()
print("saved1", flush=True)
big = np.random.default_rng(0).standard_normal(48 * 2**20, dtype=np.float32)   # 192 MiB
m.save(2, {"a": big}, {"exp_avg.a": big, "exp_avg_sq.a": big}, st(2), None)
m.close()
print("saved2", flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_local_save(tmp_path):
    root = tmp_path / "ckpt"
    p = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(root), str(tmp_path / "run")],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "saved1"
    deadline = time.time() + 60
    while time.time() < deadline and not any(e.name.startswith(".step_00000002.tmp-") for e in root.iterdir()):
        time.sleep(0.002)
    time.sleep(0.2)    # well inside writing ~0.6 GB
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert any(e.name.startswith(".step_00000002.tmp-") for e in root.iterdir()), "killed too late"
    assert (root / "latest").read_text().strip() == "step_00000001"
    assert not (root / "step_00000002").exists()
    m = manager(tmp_path)
    assert m.resolve_resume("auto") == str(root / "step_00000001")
    m.save(2, *tensors(2), state(2), None)       # the next save also clears the dead temp directory
    m.close()
    assert sorted(e.name for e in root.iterdir()) == ["latest", "step_00000001", "step_00000002"]


def test_reused_snapshot_buffers_keep_each_checkpoint_intact(tmp_path):
    m = manager(tmp_path)
    w1, o1 = tensors(1)
    m.reserve({k: v.shape for k, v in {**w1, **o1}.items()})   # pre-touched buffers, reused by every save
    assert {k: v.shape for k, v in m.buffers().items()} == {k: v.shape for k, v in {**w1, **o1}.items()}
    m.save(1, w1, o1, state(1), None)
    w2, o2 = tensors(2)
    m.save(2, w2, o2, state(2), None)      # copies into the same buffers after step 1 is written
    m.close()
    root = tmp_path / "ckpt"
    for step, (w, o) in ((1, (w1, o1)), (2, (w2, o2))):
        ck = load_checkpoint(str(root / step_name(step)))
        for k in w:
            np.testing.assert_array_equal(ck.weights[k], w[k])
        for k in o:
            np.testing.assert_array_equal(ck.optimizer[k], o[k])
