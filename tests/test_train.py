"""End-to-end training on the tiny preset: one process, Horovod (Gloo, MPI), divergence, exact resume.

The runs are real `python -m pretrain.train` / `horovodrun` subprocesses on tiny fixtures (a
SentencePiece tokenizer and contract-format shards built in a temp dir), a few seconds each.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mxnet")

from tests.horovod_output import explain, output_dirs, retry_native_crash  # noqa: E402
from tests.train_fixtures import make_run_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_run_inputs(tmp_path_factory.mktemp("train_inputs"), n_docs=400)


def _env(extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


def _cmd(inputs, out: Path, np_=1, controller="gloo", **sets):
    tok, shards = inputs
    args = ["--config", "configs/tiny.yaml", "--set", f"tokenizer.dir={tok}", "--set", f"train.shards={shards}",
            "--set", f"train.out_dir={out}", "--set", f"checkpoint.root={out / 'ckpt'}"]
    for k, v in sets.items():
        args += ["--set", f"{k.replace('__', '.')}={v}"]
    py = [sys.executable, "-m", "pretrain.train"] + args
    if np_ == 1:
        return py
    if not HOROVODRUN.exists():
        pytest.skip("horovodrun is not installed in this environment")
    return [str(HOROVODRUN), "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}"] + py


def _run(cmd, env=None, timeout=300):
    """Run to the end; a worker crash in native code gets one more run, from the output directories as
    they were before (tests/horovod_output.py)."""
    return retry_native_crash(lambda: subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True,
                                                     text=True, timeout=timeout), output_dirs(cmd))


def _records(out: Path, kind="train", start_line=0):
    recs = []
    for line in (out / "metrics.jsonl").read_text().splitlines()[start_line:]:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:       # the killed run's half-written last line
            continue
        if r["kind"] == kind:
            recs.append(r)
    return recs


def _losses(out: Path, start_line=0) -> dict:
    return {r["step"]: r["loss"] for r in _records(out, start_line=start_line)}


def test_single_process_tiny_run(inputs, tmp_path):
    out = tmp_path / "run"
    r = _run(_cmd(inputs, out))
    assert r.returncode == 0, r.stderr[-3000:]
    losses = _losses(out)
    assert sorted(losses) == list(range(1, 21))
    assert losses[20] < losses[1] - 0.5                   # it learns (6.0 -> ~4.8 nats on the fixture)
    ev = _records(out, "eval")
    assert [e["step"] for e in ev] == [10, 20]
    assert ev[-1]["valid_ppl"] == pytest.approx(np.exp(ev[-1]["valid_loss"]))
    assert "tok/s" in r.stderr and "MFU n/a" in r.stderr and "valid_ppl" in r.stderr
    ck = out / "ckpt"
    assert (ck / "latest").read_text().strip() == "step_00000020"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_00000010", "step_00000020"]
    st = json.loads((ck / "step_00000020" / "state.json").read_text())
    assert st["sample_cursor"] == 20 * 8 and st["tokens_seen"] == 20 * 8 * 32 and st["world_size"] == 1
    assert st["engine"] == "mxnet" and st["rng"]["calls"] == 20 and st["optimizer"]["step"] == 20
    from corpus.tokenizer import Tokenizer
    assert st["tokenizer_sha256"] == Tokenizer.load(inputs[0]).sha256
    assert (ck / "step_00000020" / "tokenizer" / "spm.model").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "config.yaml").is_file()


def test_divergence_stops_with_clear_message_and_keeps_last_good_checkpoint(inputs, tmp_path):
    out = tmp_path / "run"
    r = _run(_cmd(inputs, out, train__max_steps=3, checkpoint__every_steps=3))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(_cmd(inputs, out, train__max_steps=20, optim__lr="1e30", optim__warmup_steps=0))
    assert r.returncode == 3, r.stderr[-3000:]
    assert "diverged" in r.stderr and "not finite" in r.stderr and "optim.lr" in r.stderr
    assert (out / "ckpt" / "latest").read_text().strip() == "step_00000003"
    from pretrain.checkpoint import load_checkpoint
    ck = load_checkpoint(str(out / "ckpt"))
    assert ck.state["step"] == 3
    assert all(np.isfinite(w).all() for w in ck.weights.values())


def test_config_error_exits_2_with_the_fix(inputs, tmp_path):
    r = _run(_cmd(inputs, tmp_path / "run", train__global_batch=7))
    assert r.returncode == 2
    assert "train.global_batch=7" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_two_workers_match_one_worker(inputs, tmp_path, controller):
    """Without dropout, 2 Horovod workers give the single process's losses and grad norms (the
    global batch, its order and the clipping of the averaged gradient do not depend on workers)."""
    if controller == "mpi" and not shutil.which("mpirun"):
        pytest.skip("no mpirun")
    sets = dict(model__dropout=0, train__max_steps=6, train__eval_every=3)
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run(_cmd(inputs, one, **sets))
    r2 = _run(_cmd(inputs, two, np_=2, controller=controller, **sets))
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert r2.returncode == 0, explain(r2)
    a, b = _records(one), _records(two)
    assert [x["step"] for x in b] == list(range(1, 7))
    np.testing.assert_allclose([x["loss"] for x in b], [x["loss"] for x in a], rtol=1e-6)
    np.testing.assert_allclose([x["grad_norm"] for x in b], [x["grad_norm"] for x in a], rtol=1e-5)
    np.testing.assert_allclose([e["valid_loss"] for e in _records(two, "eval")],
                               [e["valid_loss"] for e in _records(one, "eval")], rtol=1e-6)


def _kill_tagged(token: str) -> int:
    """SIGKILL every process whose environment carries `token` (horovodrun and its workers)."""
    killed = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if token.encode() in (p / "environ").read_bytes():
                os.kill(int(p.name), signal.SIGKILL)
                killed += 1
        except (OSError, PermissionError):
            pass
    return killed


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_losses_bit_for_bit(inputs, tmp_path):
    sets = dict(train__max_steps=30, checkpoint__every_steps=2, checkpoint__keep_last=3, train__eval_every=10)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = _run(_cmd(inputs, ref, np_=2, **sets))
    assert r.returncode == 0, explain(r)
    want = _losses(ref)
    assert sorted(want) == list(range(1, 31))

    token = f"KOGPT_TEST_{uuid.uuid4().hex}"
    proc = subprocess.Popen(_cmd(inputs, cut, np_=2, **sets), cwd=REPO, env=_env({"KOGPT_TEST_TAG": token}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = cut / "ckpt" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() >= "step_00000006":
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    assert _kill_tagged(token) >= 2
    proc.wait(timeout=60)
    assert (cut / "ckpt" / "latest").read_text().strip() < "step_00000030"

    lines_before = len((cut / "metrics.jsonl").read_text().splitlines())
    r = _run(_cmd(inputs, cut, np_=2, **sets))
    assert r.returncode == 0, explain(r)
    assert "resumed from" in r.stdout + r.stderr
    got = _losses(cut, start_line=lines_before)
    k = min(got) - 1
    assert 2 <= k < 30 and sorted(got) == list(range(k + 1, 31))
    assert {s: got[s] for s in got} == {s: want[s] for s in got}        # exact float equality


@pytest.mark.slow
def test_resume_with_another_worker_count_continues_from_the_same_global_sample(inputs, tmp_path):
    sets = dict(model__dropout=0, train__max_steps=8, checkpoint__every_steps=4, checkpoint__keep_last=2)
    two, one = tmp_path / "two", tmp_path / "one"
    r = _run(_cmd(inputs, two, np_=2, **sets))
    assert r.returncode == 0, explain(r)
    r = _run(_cmd(inputs, one, checkpoint__resume=two / "ckpt" / "step_00000004", **sets))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming a 2-worker run on 1 workers" in r.stderr
    recs = _records(one)
    assert [x["step"] for x in recs] == [5, 6, 7, 8]
    assert [x["sample_cursor"] for x in recs] == [32, 40, 48, 56]        # 4 steps x global batch 8
    ref = {x["step"]: x["loss"] for x in _records(two)}
    np.testing.assert_allclose([x["loss"] for x in recs], [ref[s] for s in (5, 6, 7, 8)], rtol=1e-6)


def test_sigterm_saves_a_checkpoint_at_the_step_boundary_and_resume_matches(inputs, tmp_path):
    """A spot interruption or Slurm preemption (SIGTERM/SIGUSR1) costs no work: checkpoint, exit 4."""
    sets = dict(train__max_steps=40, checkpoint__every_steps=100, train__eval_every=0)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = _run(_cmd(inputs, ref, **sets))
    assert r.returncode == 0, r.stderr[-3000:]
    want = _losses(ref)

    proc = subprocess.Popen(_cmd(inputs, cut, **sets), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (cut / "metrics.jsonl").exists() and len(_records(cut)) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-3000:]
    assert "stopped by signal" in err
    latest = (cut / "ckpt" / "latest").read_text().strip()
    stopped = int(latest.split("_")[1])
    assert 3 <= stopped < 40                   # saved where it stopped, not at an every_steps multiple

    lines_before = len((cut / "metrics.jsonl").read_text().splitlines())
    r = _run(_cmd(inputs, cut, **sets))
    assert r.returncode == 0, r.stderr[-3000:]
    got = _losses(cut, start_line=lines_before)
    assert sorted(got) == list(range(stopped + 1, 41))
    assert got == {s: want[s] for s in got}


@pytest.mark.slow
def test_a_run_continues_in_the_other_engine_through_its_checkpoints(inputs, tmp_path):
    """mxnet steps 1-4, torch steps 5-6, mxnet again 7-8, each resuming the other's checkpoint on
    disk with `pretrain.train`: the losses follow an all-mxnet run (no dropout) to fp32 rounding."""
    pytest.importorskip("torch")
    sets = dict(model__dropout=0, checkpoint__every_steps=2, train__eval_every=0, train__compile="false")
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = _run(_cmd(inputs, ref, train__max_steps=8, **sets))
    assert r.returncode == 0, r.stderr[-3000:]
    for engine, steps in (("mxnet", 4), ("torch", 6), ("mxnet", 8)):     # one schedule over 8 steps
        r = _run(_cmd(inputs, run, train__engine=engine, train__max_steps=8, train__stop_after=steps, **sets))
        assert r.returncode == 0, (engine, r.stderr[-3000:])
        assert steps == 4 or f"step_{steps - 2:08d}" in r.stderr       # resumed the other engine's checkpoint
        st = json.loads((run / "ckpt" / f"step_{steps:08d}" / "state.json").read_text())
        assert st["engine"] == engine and st["step"] == steps
    want, got = _losses(ref), _losses(run)
    assert sorted(got) == list(range(1, 9))
    np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)], rtol=2e-4)
