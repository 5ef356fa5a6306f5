"""Launch scripts (launch/): the exact commands their dry runs print, input errors, hostfiles, and real
2-process launches on this machine (horovodrun with Gloo, mpirun through multi_node.sh, and
aws/spot_run.sh against an S3 API served by moto on loopback)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
import hostfile as hf  # noqa: E402  (launch/hostfile.py)
from horovod_output import explain, output_dirs, retry_native_crash  # noqa: E402  (tests/horovod_output.py)

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python")
HOROVODRUN = str(REPO / ".venv" / "bin" / "horovodrun")
TINY = "configs/tiny.yaml"


def run(script: str, *args: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    """Run launch/<script> from the repo root; no GPUs are visible (nvidia-smi is left off PATH).
    A launch whose worker crashed in native code runs once more, from the output directories as they were
    (tests/horovod_output.py says why)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "HOROVOD_"))}
    e["PATH"] = os.pathsep.join(p for p in e.get("PATH", "").split(os.pathsep) if not (Path(p) / "nvidia-smi").exists())
    e.update(env or {})
    return retry_native_crash(lambda: subprocess.run(["bash", str(REPO / "launch" / script), *args], cwd=REPO,
                                                     env=e, capture_output=True, text=True, timeout=timeout),
                              output_dirs(args))


def printed(r: subprocess.CompletedProcess) -> list[str]:
    assert r.returncode == 0, r.stderr
    return [shlex.split(line) for line in r.stdout.strip().splitlines()]


def needs_venv():
    if not os.access(PY, os.X_OK):
        pytest.skip(".venv is not installed (make install)")


@pytest.fixture
def hosts8(tmp_path) -> Path:
    p = tmp_path / "hosts.txt"
    p.write_text("# two hosts, four GPUs each\nnode-a slots=4\nnode-b:4\n")
    return p


# ----------------------------------------------------------------------------------------------------
# single node


def test_single_node_dry_run_prints_the_command():
    needs_venv()
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet")
    r = run("single_node.sh", "--np", "2", "--config", TINY, "--set", "train.max_steps=3", "--gloo",
            "--set", "checkpoint.root=work/a b", "--dry-run")
    assert printed(r) == [[HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", PY, "-m", "pretrain.train",
                           "--config", TINY, "--set", "train.max_steps=3", "--set", "checkpoint.root=work/a b"]]
    r = run("single_node.sh", "--np=1", f"--config={TINY}", "--mpi", "--dry-run")
    assert printed(r)[0][:6] == [HOROVODRUN, "-np", "1", "-H", "localhost:1", "--mpi"]


@pytest.mark.parametrize("args,message", [
    (["--np", "2", "--config", "configs/nope.yaml"], "config file not found: configs/nope.yaml"),
    (["--np", "2"], "--config FILE is required"),
    (["--config", TINY], "--np N is required on a machine without GPUs"),
    (["--np", "0", "--config", TINY], "--np must be a positive integer, got '0'"),
    (["--np", "two", "--config", TINY], "--np must be a positive integer"),
    (["--np", "3", "--config", TINY], "train.global_batch=8 is not a multiple of train.micro_batch=2 x 3 workers"),
    (["--np", "2", "--config", TINY, "--set", "train.engine=jax"], "train.engine='jax'"),
    (["--np", "2", "--config", TINY, "--set", "nonsense"], "--set 'nonsense' is not KEY=VALUE"),
    (["--np", "2", "--config", TINY, "--frobnicate"], "unknown argument '--frobnicate'"),
])
def test_single_node_input_errors(args, message):
    needs_venv()
    r = run("single_node.sh", *args, "--dry-run")
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""


def test_missing_tools_say_make_install(tmp_path):
    needs_venv()
    r = run("single_node.sh", "--np", "2", "--config", TINY, "--dry-run", env={"VENV": str(tmp_path)})
    assert r.returncode == 2 and "run `make install`" in r.stderr
    # a venv without Horovod: horovodrun absent from it and from PATH
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(PY)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "horovodrun").exists())
    r = run("single_node.sh", "--np", "2", "--config", TINY, "--dry-run", env={"VENV": str(tmp_path), "PATH": path})
    assert r.returncode == 2 and "horovodrun not found" in r.stderr and "make install" in r.stderr
    # ... but one process needs no launcher
    r = run("single_node.sh", "--np", "1", "--config", TINY, "--dry-run", env={"VENV": str(tmp_path), "PATH": path})
    assert printed(r) == [[str(tmp_path / "bin" / "python"), "-m", "pretrain.train", "--config", TINY]]


# ----------------------------------------------------------------------------------------------------
# multi node


def test_multi_node_mpirun_dry_run(hosts8):
    needs_venv()
    if not shutil.which("mpirun"):
        pytest.skip("mpirun (OpenMPI) is not installed")
    r = run("multi_node.sh", "--hostfile", str(hosts8), "--config", TINY, "--iface", "eth1", "--set",
            "train.global_batch=16", "--dry-run", env={"LD_LIBRARY_PATH": "/opt/lib"})
    [cmd] = printed(r)
    assert cmd == [shutil.which("mpirun"), "-np", "8", "-hostfile", str(hosts8), "-bind-to", "none", "-map-by", "slot",
                   "--mca", "pml", "ob1", "--mca", "btl", "^openib", "--mca", "btl_tcp_if_include", "eth1",
                   "--mca", "oob_tcp_if_include", "eth1", "-x", "NCCL_SOCKET_IFNAME=eth1", "-x", "NCCL_IB_DISABLE=1",
                   "-x", "HOROVOD_HIERARCHICAL_ALLREDUCE=1", "-x", "HOROVOD_FUSION_THRESHOLD=134217728",
                   "-x", "HOROVOD_CYCLE_TIME=1",
                   "-x", "PATH", "-x", "LD_LIBRARY_PATH", "-x", "PYTHONPATH",
                   PY, "-m", "pretrain.train", "--config", TINY, "--set", "train.global_batch=16"]
    # EFA: libfabric provider and RDMA for NCCL, MPI kept off the cm PML; no hierarchical allreduce; 4 of 8 slots
    r = run("multi_node.sh", "--hostfile", str(hosts8), "--np", "4", "--config", TINY, "--iface", "ens32",
            "--network", "efa", "--no-hierarchical", "--fusion-mb", "64", "--env", "NCCL_DEBUG=INFO", "--dry-run")
    [cmd] = printed(r)
    s = " ".join(cmd)
    assert cmd[1:3] == ["-np", "4"] and "--mca pml ^cm" in s and "NCCL_IB_DISABLE" not in s
    for v in ("FI_PROVIDER=efa", "FI_EFA_USE_DEVICE_RDMA=1", "RDMAV_FORK_SAFE=1", "NCCL_SOCKET_IFNAME=ens32",
              "HOROVOD_FUSION_THRESHOLD=67108864", "NCCL_DEBUG=INFO"):
        assert f"-x {v}" in s
    assert "HOROVOD_HIERARCHICAL_ALLREDUCE" not in s


def test_multi_node_horovodrun_dry_run(hosts8):
    needs_venv()
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet")
    r = run("multi_node.sh", "--hostfile", str(hosts8), "--config", TINY, "--launcher", "horovodrun", "--gloo",
            "--network", "ib", "--iface", "ib0", "--set", "train.global_batch=16", "--dry-run")
    assert printed(r) == [["env", "NCCL_SOCKET_IFNAME=ib0", "NCCL_IB_DISABLE=0", "HOROVOD_HIERARCHICAL_ALLREDUCE=1",
                           "HOROVOD_FUSION_THRESHOLD=134217728", "HOROVOD_CYCLE_TIME=1", HOROVODRUN, "-np", "8", "-hostfile", str(hosts8),
                           "--network-interface", "ib0", "--gloo", PY, "-m", "pretrain.train", "--config", TINY,
                           "--set", "train.global_batch=16"]]


G16 = ["--set", "train.global_batch=16"]      # splits over 8 workers (tiny.yaml's 8 does not)


@pytest.mark.parametrize("args,message", [
    (["--config", TINY, *G16], "--hostfile FILE is required"),
    (["--hostfile", "/nonexistent/hosts", "--config", TINY, *G16], "hostfile not found: /nonexistent/hosts"),
    (["--hostfile", "HOSTS", "--config", TINY, "--np", "6", *G16], "--np 6 is not a multiple of the 4 slots per host"),
    (["--hostfile", "HOSTS", "--config", TINY, "--np", "12", *G16], "--np 12 is more than the 8 slots"),
    (["--hostfile", "HOSTS", "--config", TINY], "train.global_batch=8 is not a multiple of train.micro_batch=2 x 8"),
    (["--hostfile", "HOSTS", "--config", "configs/missing.yaml"], "config file not found"),
    (["--hostfile", "HOSTS", "--config", TINY, "--network", "tcp", *G16], "--network 'tcp': use socket"),
    (["--hostfile", "HOSTS", "--config", TINY, "--launcher", "ssh", *G16], "--launcher 'ssh'"),
    (["--hostfile", "HOSTS", "--config", TINY, "--gloo", *G16], "--gloo is a horovodrun option"),
    (["--hostfile", "HOSTS", "--config", TINY, "--env", "1BAD=x", *G16], "--env '1BAD=x' is not NAME=VALUE"),
])
def test_multi_node_input_errors(hosts8, args, message):
    needs_venv()
    args = [str(hosts8) if a == "HOSTS" else a for a in args]
    r = run("multi_node.sh", *args, "--iface", "eth0", "--dry-run")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stdout == ""


# ----------------------------------------------------------------------------------------------------
# hostfiles


def test_expand_slurm_nodelist():
    assert hf.expand_nodelist("gpu-[01-03,07],login1") == ["gpu-01", "gpu-02", "gpu-03", "gpu-07", "login1"]
    assert hf.expand_nodelist("r[1-2]n[8-9]") == ["r1n8", "r1n9", "r2n8", "r2n9"]
    assert hf.expand_nodelist("single") == ["single"]
    for bad in ("gpu-[01-03", "gpu-[3-1]", "gpu-[a-b]"):
        with pytest.raises(hf.HostfileError):
            hf.expand_nodelist(bad)


def test_hostfile_make_and_check(tmp_path, monkeypatch, capsys):
    out = tmp_path / "h.txt"
    assert hf.main(["make", "--hosts", "node[1-3]", "--slots", "8", "-o", str(out)]) == 0
    assert out.read_text() == "node1 slots=8\nnode2 slots=8\nnode3 slots=8\n"
    capsys.readouterr()
    assert hf.main(["check", str(out)]) == 0 and capsys.readouterr().out == "24\n"
    assert hf.main(["check", str(out), "--np", "16"]) == 0 and capsys.readouterr().out == "16\n"
    assert hf.main(["check", str(out), "--np", "12"]) == 2
    assert "not a multiple of the 8 slots per host" in capsys.readouterr().err
    # from a Slurm allocation: hosts from SLURM_JOB_NODELIST, slots from the GPUs Slurm gave each node
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-[07-08]")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    monkeypatch.setenv("PATH", str(tmp_path))           # no scontrol here: expanded by hostfile.py
    assert hf.main(["make", "--slurm"]) == 0
    assert capsys.readouterr().out == "gpu-07 slots=4\ngpu-08 slots=4\n"
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    monkeypatch.setenv("SLURM_GPUS_PER_NODE", "a100:8")
    assert hf.main(["make", "--slurm"]) == 0 and "gpu-08 slots=8" in capsys.readouterr().out
    monkeypatch.delenv("SLURM_GPUS_PER_NODE")
    assert hf.main(["make", "--slurm"]) == 2 and "pass --slots N" in capsys.readouterr().err
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert hf.main(["make", "--slurm", "--slots", "8"]) == 2
    assert "SLURM_JOB_NODELIST is not set" in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [
    ("", "lists no hosts"),
    ("# only a comment\n", "lists no hosts"),
    ("node1 slots=8\nnode1 slots=8\n", ":2: node1 is listed again (first on line 1)"),
    ("node1 slots=0\n", ":1: slots '0' for node1 must be a positive integer"),
    ("node1 slots=eight\n", ":1: slots 'eight'"),
    ("node1 cpus=8\n", ":1: 'node1 cpus=8' is not 'HOST slots=N'"),
])
def test_bad_hostfiles(tmp_path, text, message):
    p = tmp_path / "h.txt"
    p.write_text(text)
    with pytest.raises(hf.HostfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hf.parse_hostfile(str(p))


def test_uneven_hosts_need_every_slot(tmp_path):
    p = tmp_path / "h.txt"
    p.write_text("a slots=8\nb slots=4 max_slots=4\nc\n")
    entries = hf.parse_hostfile(str(p))
    assert entries == [("a", 8), ("b", 4), ("c", 1)]
    assert hf.resolve_np(entries, None, "h") == 13
    with pytest.raises(hf.HostfileError, match="different slot counts"):
        hf.resolve_np(entries, 12, "h")


# ----------------------------------------------------------------------------------------------------
# Slurm and AWS


def test_slurm_dry_run(tmp_path):
    needs_venv()
    if not shutil.which("mpirun"):
        pytest.skip("mpirun (OpenMPI) is not installed")
    env = {"SLURM_JOB_NODELIST": "gpu-[01-02]", "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "4242",
           "SLURM_SUBMIT_DIR": str(REPO), "TMPDIR": str(tmp_path)}
    r = run("slurm.sbatch", "--config", TINY, "--set", "train.global_batch=16", "--iface", "ib0", "--dry-run", env=env)
    [cmd] = printed(r)
    hosts = tmp_path / "kogpt-hosts-4242.txt"
    assert hosts.read_text() == "gpu-01 slots=4\ngpu-02 slots=4\n"
    assert cmd[:5] == [shutil.which("mpirun"), "-np", "8", "-hostfile", str(hosts)]
    assert "NCCL_SOCKET_IFNAME=ib0" in cmd
    assert cmd[-9:] == [PY, "-m", "pretrain.train", "--config", TINY, "--set", "train.global_batch=16", "--set",
                        "checkpoint.resume=auto"]
    r = run("slurm.sbatch", "--config", TINY, "--set", "train.global_batch=16", "--launcher", "srun", "--dry-run",
            env=env)
    assert printed(r) == [["srun", "--mpi=pmi2", "--ntasks=8", "--ntasks-per-node=4", "--kill-on-bad-exit=1",
                           "--cpu-bind=none", PY, "-m", "pretrain.train", "--config", TINY, "--set",
                           "train.global_batch=16", "--set", "checkpoint.resume=auto"]]
    # errors: outside an allocation; no GPU count; a batch that does not split over 8 workers
    r = run("slurm.sbatch", "--config", TINY, "--dry-run", env={"SLURM_SUBMIT_DIR": str(REPO)})
    assert r.returncode == 2 and "SLURM_JOB_NODELIST is not set" in r.stderr
    r = run("slurm.sbatch", "--config", TINY, "--dry-run", env=dict(env, SLURM_GPUS_ON_NODE=""))
    assert r.returncode == 2 and "pass --slots N" in r.stderr
    r = run("slurm.sbatch", "--config", TINY, "--launcher", "srun", "--dry-run", env=env)
    assert r.returncode == 2 and "not a multiple of train.micro_batch=2 x 8 workers" in r.stderr
    assert "#SBATCH --requeue" in (REPO / "launch" / "slurm.sbatch").read_text()


def test_aws_spot_run_dry_run():
    needs_venv()
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet")
    r = run("aws/spot_run.sh", "--config", TINY, "--np", "2", "--checkpoint-root", "s3://my-bucket/kogpt2/run1",
            "--shards-from", "s3://my-bucket/kogpt2/shards", "--shards-dir", "work/s", "--dry-run")
    assert printed(r) == [
        ["aws", "s3", "sync", "--only-show-errors", "s3://my-bucket/kogpt2/shards", "work/s"],
        [HOROVODRUN, "-np", "2", "-H", "localhost:2", PY, "-m", "pretrain.train", "--config", TINY,
         "--set", "checkpoint.root=s3://my-bucket/kogpt2/run1", "--set", "train.shards=work/s",
         "--set", "tokenizer.dir=work/s/tokenizer", "--set", "tokenizer.model=", "--set", "checkpoint.resume=auto"]]
    for args, message in [
        (["--np", "2"], "--checkpoint-root s3://BUCKET/PREFIX is required"),
        (["--np", "2", "--checkpoint-root", "work/ckpt"], "is not s3://BUCKET[/PREFIX]"),
        (["--np", "2", "--checkpoint-root", "s3://b-1/p", "--shards-from", "/data/shards"], "is not an s3:// URL"),
        (["--np", "2", "--checkpoint-root", "s3://b-1/p", "--network", "efa"], "--network applies to multi-node"),
    ]:
        r = run("aws/spot_run.sh", "--config", TINY, *args, "--dry-run")
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)


# ----------------------------------------------------------------------------------------------------
# real launches: 2 processes on this machine


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """(tokenizer dir, token shards dir) for configs/tiny.yaml: the trainer tests' shared fixture."""
    from train_fixtures import make_run_inputs   # tests/train_fixtures.py
    return make_run_inputs(tmp_path_factory.mktemp("launch"))


def _train_sets(data: tuple[Path, Path], run_dir: Path, steps: int) -> list[str]:
    sets = [f"tokenizer.dir={data[0]}", f"train.shards={data[1]}", f"train.out_dir={run_dir}",
            f"checkpoint.root={run_dir / 'checkpoints'}", f"train.max_steps={steps}", "checkpoint.every_steps=2",
            "train.eval_every=2", "train.eval_batches=1", "log.tensorboard=false"]
    return [x for s in sets for x in ("--set", s)]


def _check_run(run_dir: Path, steps: int) -> None:
    state = json.loads((run_dir / "checkpoints" / f"step_{steps:08d}" / "state.json").read_text())
    assert state["step"] == steps and state["world_size"] == 2
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{steps:08d}"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("kind", "train") == "train" and "loss" in r][-1] == steps


@pytest.mark.slow
def test_real_two_process_launch_and_resume(tiny_data, tmp_path):
    needs_venv()
    if not (REPO / "pretrain" / "train" / "cli.py").is_file() or not (REPO / TINY).is_file():
        pytest.skip("pretrain/train/ or configs/tiny.yaml has not landed yet")
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet (make install)")
    run_dir = tmp_path / "run"
    r = run("single_node.sh", "--np", "2", "--gloo", "--config", TINY, *_train_sets(tiny_data, run_dir, 4),
            timeout=600)
    assert r.returncode == 0, explain(r)
    assert "running: " + HOROVODRUN + " -np 2 -H localhost:2 --gloo" in r.stderr
    _check_run(run_dir, 4)
    # a second launch continues from the checkpoint (checkpoint.resume: auto in tiny.yaml)
    r = run("single_node.sh", "--np", "2", "--gloo", "--config", TINY, *_train_sets(tiny_data, run_dir, 6),
            timeout=600)
    assert r.returncode == 0, explain(r)
    assert "resumed from" in r.stdout + r.stderr
    _check_run(run_dir, 6)


@pytest.mark.slow
@pytest.mark.parametrize("controller", ["--gloo", "--mpi"])
def test_launcher_exits_with_the_trainers_status_and_forwards_sigterm(tiny_data, tmp_path, controller):
    """horovodrun itself exits 1 on any failure; single_node.sh gives back the worker's own status
    (2 here: the shards are missing), and a SIGTERM to it reaches the trainers, which checkpoint and
    exit 4 (what spot_run.sh and Slurm requeues act on), under Gloo and under MPI."""
    needs_venv()
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet (make install)")
    if controller == "--mpi" and not shutil.which("mpirun"):
        pytest.skip("mpirun (OpenMPI) is not installed")
    sets = _train_sets(tiny_data, tmp_path / "bad", 4)
    sets[sets.index(f"train.shards={tiny_data[1]}")] = f"train.shards={tmp_path / 'no-shards'}"
    r = run("single_node.sh", "--np", "2", controller, "--config", TINY, *sets, timeout=300)
    assert r.returncode == 2, explain(r)
    assert "no-shards" in r.stderr

    import signal
    import time
    run_dir = tmp_path / "run"
    sets = _train_sets(tiny_data, run_dir, 100_000)
    sets[sets.index("checkpoint.every_steps=2")] = "checkpoint.every_steps=100000"
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "HOROVOD_"))}
    proc = subprocess.Popen(["bash", str(REPO / "launch" / "single_node.sh"), "--np", "2", controller, "--config",
                             TINY, *sets], cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert r.returncode == 4, explain(r)
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest.startswith("step_") and "stopped by signal" in err
    assert not _trainers_running(run_dir), "a trainer outlived its launcher"


def _trainers_running(run_dir: Path) -> list[int]:
    """PIDs of processes whose command line mentions `run_dir` (the trainers of that launch)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and str(run_dir).encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_real_two_process_mpirun_launch(tiny_data, tmp_path):
    needs_venv()
    if not (REPO / "pretrain" / "train" / "cli.py").is_file() or not (REPO / TINY).is_file():
        pytest.skip("pretrain/train/ or configs/tiny.yaml has not landed yet")
    if not shutil.which("mpirun"):
        pytest.skip("mpirun (OpenMPI) is not installed")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("localhost slots=2\n")
    run_dir = tmp_path / "run"
    r = run("multi_node.sh", "--hostfile", str(hosts), "--iface", "lo", "--config", TINY,
            *_train_sets(tiny_data, run_dir, 2), timeout=600)
    assert r.returncode == 0, explain(r)
    _check_run(run_dir, 2)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_s3():
    """A real S3 API over HTTP on loopback (moto's server mode): (endpoint, bucket)."""
    pytest.importorskip("moto")
    import time
    import urllib.request

    import boto3
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="kogpt-spot")
        yield endpoint, "kogpt-spot"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_aws_spot_run_resumes_from_s3_on_a_new_instance(tiny_data, tmp_path, moto_s3, monkeypatch):
    """spot_run.sh end to end against an S3 API: the first "instance" trains to step 4 and checkpoints to
    S3; a second one with an empty local disk resumes from S3 and goes on to step 6."""
    needs_venv()
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet (make install)")
    endpoint, bucket = moto_s3
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    root = f"s3://{bucket}/run1"

    def instance(name: str, steps: int) -> subprocess.CompletedProcess:
        out = tmp_path / name                      # each instance starts with nothing local
        sets = [f"tokenizer.dir={tiny_data[0]}", f"train.shards={tiny_data[1]}", f"train.out_dir={out}",
                f"checkpoint.s3.endpoint_url={endpoint}", f"train.max_steps={steps}", "checkpoint.every_steps=2",
                "train.eval_every=0", "train.eval_batches=1", "log.tensorboard=false"]
        return run("aws/spot_run.sh", "--config", TINY, "--np", "2", "--checkpoint-root", root,
                   *[x for s in sets for x in ("--set", s)], env=env, timeout=600)

    r = instance("instance-1", 4)
    assert r.returncode == 0, explain(r)
    assert "training finished; checkpoints in " + root in r.stderr
    r = instance("instance-2", 6)
    assert r.returncode == 0, explain(r)
    assert f"resumed from {root}/step_00000004" in r.stdout + r.stderr
    from common.schema import S3Config
    from pretrain.checkpoint import load_checkpoint
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ck = load_checkpoint(root, S3Config(endpoint_url=endpoint))
    assert ck.step == 6 and ck.state["world_size"] == 2


@pytest.mark.slow
def test_a_worker_abort_is_reported_with_its_own_output(tmp_path):
    """What the retry in tests/horovod_output.py keys on, from a real horovodrun: rank 0 aborts."""
    needs_venv()
    if not os.access(HOROVODRUN, os.X_OK):
        pytest.skip("horovodrun is not built into .venv yet (make install)")
    from horovod_output import native_crash
    script = tmp_path / "abort.py"
    script.write_text("import os, sys\nif os.environ['HOROVOD_RANK'] == '0':\n"
                      "    print('rank zero gives up', file=sys.stderr, flush=True)\n    os.abort()\n"
                      "import time\ntime.sleep(30)\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "HOROVOD_"))}
    r = subprocess.run([HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", PY, str(script)], env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and native_crash(r), explain(r)
    assert "--- rank 0" in explain(r) and "rank zero gives up" in explain(r).split("--- rank 0")[1]
    ok = subprocess.CompletedProcess(r.args, 1, "Process 0 exit with status code 2.\n", "")
    assert not native_crash(ok)


def test_a_rerun_after_a_native_crash_starts_from_the_same_output_state(tmp_path):
    """The rerun (tests/horovod_output.py) never sees what the crashed launch wrote: directories that
    existed come back as they were, new ones are gone; the crash is listed for pytest's summary."""
    import horovod_output as ho
    before, fresh = tmp_path / "resumed-run", tmp_path / "fresh-run"
    before.mkdir()
    (before / "latest").write_text("step_00000004\n")
    seen = []

    def launch() -> subprocess.CompletedProcess:
        seen.append((sorted(p.name for p in before.iterdir()), (before / "latest").read_text(), fresh.exists()))
        (before / "latest").write_text("step_00000006\n")
        (before / "step_00000006").mkdir(exist_ok=True)
        fresh.mkdir(exist_ok=True)
        code = 134 if len(seen) == 1 else 0
        return subprocess.CompletedProcess(["horovodrun", "-np", "2"], 1 if code else 0,
                                           f"Process 0 exit with status code {code}.\n" if code else "", "")

    n = len(ho.CRASHES)
    with pytest.warns(UserWarning, match="crashed in native code"):
        r = ho.retry_native_crash(launch, ho.output_dirs([f"train.out_dir={fresh}", f"checkpoint.root={before}"]))
    assert r.returncode == 0
    assert seen == [(["latest"], "step_00000004\n", False)] * 2
    assert len(ho.CRASHES) == n + 1 and "horovodrun -np 2" in ho.CRASHES[-1]
    del ho.CRASHES[n:]          # a staged crash: not one to report in the summary
