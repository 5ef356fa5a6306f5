"""bench/gpu_check.sh, the one command a session with a GPU runs (issue 13), rehearsed on the CPU.

The whole check runs at tiny size, eager, with every module the GPU machine lacks made unimportable
(--block-missing: mxnet, horovod, boto3, zstandard, kiwipiepy and the rest of bench/gpu_machine_packages.txt's
complement), so a missing import on the GPU machine fails here first. Throughput rows are merged from
torch_throughput.py's own JSON; a budget too small for any step still leaves the JSON and the table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_fixtures import make_run_inputs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_check(out: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", "bench/gpu_check.sh", str(out), "--device", "cpu", "--tiny", "--no-compile",
                           "--block-missing", *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu_without_the_missing_packages(tmp_path):
    data = tmp_path / "data"
    make_run_inputs(data)
    out = tmp_path / "out"
    p = run_check(out, "--data", str(data), "--only", "env,correctness,train,generate")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert "mxnet" in rep["blocked_imports"] and "zstandard" in rep["blocked_imports"]
    steps = rep["steps"]
    assert steps["env"]["project_imports_failed"] == {}
    assert steps["env"]["present_of_missing_on_gpu"] == []          # the blocker hid them all
    checks = steps["correctness"]["checks"]
    for name in ("loss_bf16_compiled", "ce_chunked_vs_full", "adamw_fused"):
        assert checks[name]["pass"] is True, checks[name]
    assert checks["sdpa_backend"]["backends"]                       # attention was seen in the profile
    run, resumed = steps["train_run"], steps["train_resume"]
    assert run["status"] == "ok" and run["steps"] == 20 and run["loss_drop"] > 0
    assert resumed["first_step"] == 11 and resumed["steps_compared"] == 10
    assert resumed["max_abs_diff"] <= 1e-4 and resumed["pass"] is True
    assert steps["generate"]["pass"] is True and steps["generate"]["new_tokens"] == 16
    files = sorted(f.name for f in out.iterdir())
    assert len(files) <= 8                                          # what the device tool brings back
    assert {"gpu_check.json", "gpu_check.log", "gpu_check_table.txt", "train_run_metrics.jsonl"} <= set(files)
    table = (out / "gpu_check_table.txt").read_text()
    assert p.stdout.rstrip().endswith(table.rstrip())               # the table is printed last
    assert "| train_resume |" in table and "PASS" in table


def test_gpu_check_out_of_budget_still_writes_results(tmp_path):
    out = tmp_path / "out"
    p = run_check(out, "--budget-s", "5", timeout=60)
    assert p.returncode == 1
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["steps"] and all(s["status"] == "skipped" for s in rep["steps"].values())
    assert "out of time" in rep["steps"]["env"]["reason"]
    assert (out / "gpu_check_table.txt").read_text().startswith("GPU check on")


def test_throughput_rows_merge_by_micro_batch(tmp_path):
    from bench import gpu_check

    class R:                                  # the bits of gpu_check.Runner that merging reads
        args = type("A", (), {"tiny": False, "device": "cuda"})()
        out, report = tmp_path, {}
        tp_files = [
            {"device": "NVIDIA H100", "micro_batch": 32, "command": "a",
             "results": [{"name": "ours", "tokens_per_s": 600e3, "mfu": 0.52}]},
            {"device": "NVIDIA H100", "micro_batch": 32, "command": "b",
             "results": [{"name": "hf", "tokens_per_s": 300e3, "mfu": 0.26}]},
            {"device": "NVIDIA H100", "micro_batch": 64, "command": "c",
             "results": [{"name": "ours", "tokens_per_s": 650e3, "mfu": 0.56}, {"name": "hf", "error": "OOM"}]},
        ]

    gpu_check.merge_throughput(R)
    merged = json.loads((tmp_path / "torch_throughput_cuda.json").read_text())
    assert merged["micro_batch"] == 32 and [r["name"] for r in merged["results"]] == ["ours", "hf"]
    assert merged["ratio_ours_over_hf"] == pytest.approx(2.0)
    assert merged["best"]["ours"] == {"micro_batch": 64, "tokens_per_s": 650e3, "mfu": 0.56}
    assert merged["ratio_best_ours_over_best_hf"] == pytest.approx(650 / 300)
    assert sorted(merged["by_micro_batch"]) == ["32", "64"]


def test_merging_the_files_of_two_device_calls(tmp_path):
    first = {"bench": "torch_throughput", "device": "NVIDIA H100", "device_kind": "cuda", "preset": "base",
             "micro_batch": 32, "commands": ["a"],
             "by_micro_batch": {"32": [{"name": "ours", "tokens_per_s": 600e3}, {"name": "hf", "tokens_per_s": 300e3}]}}
    second = {"bench": "torch_throughput", "device": "NVIDIA H100", "device_kind": "cuda", "preset": "base",
              "micro_batch": 64, "command": "b", "results": [{"name": "ours", "tokens_per_s": 640e3}]}
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(second))
    p = subprocess.run([sys.executable, "bench/gpu_check.py", str(tmp_path / "out"), "--merge", str(tmp_path / "a.json"),
                        str(tmp_path / "b.json")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    merged = json.loads((tmp_path / "out" / "torch_throughput_cuda.json").read_text())
    assert sorted(merged["by_micro_batch"]) == ["32", "64"] and merged["commands"] == ["a", "b"]
    assert merged["ratio_ours_over_hf"] == pytest.approx(2.0)                   # at micro-batch 32
    assert merged["best"]["ours"]["micro_batch"] == 64 and merged["preset"] == "base"
