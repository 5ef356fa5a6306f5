"""Issue 13's GPU check: correctness, a real training run with a resume, generation, throughput, in one go.

    bash bench/gpu_check.sh "$OUT"                                   # on the GPU machine (bench/GPU.md)
    bash bench/gpu_check.sh /tmp/gc --device cpu --tiny --block-missing   # the same steps on a CPU, tiny sizes

Every step runs in its own process under a timeout, in order of importance, so the whole check ends
within --budget-s (default 450 s) and a step that fails, hangs or runs out of time costs only itself:
  env          torch/CUDA/device facts; the project imports without mxnet/horovod/boto3/zstandard/kiwipiepy
  correctness  bench/gpu_check_steps.py correctness (bf16 + compile vs fp32, chunked vs full CE, SDPA
               backend, fused AdamW): each check's pass/fail and numbers
  tp_*         bench/torch_throughput.py --preset base --device cuda, one variant and micro-batch a process:
               ours and hf at micro-batch 32 first
  train_run    python -m pretrain.train (engine torch, bench/configs/gpu_check.yaml, shards from
               bench/gpu_prep.sh): 200 steps, checkpoints at 100 and 200
  train_resume the same command resumed from run 1's step-100 checkpoint into another folder: its losses at
               steps 101-200 must follow run 1's within the tolerance below
  generate     bench/gpu_check_steps.py generate: kv-cache decoding from run 1's checkpoint, tokens/s
  tp_*         ours_chunked and ours_nopad at 32
  profile      bench/gpu_check_steps.py profile: where ours' step time goes (kernel groups, top kernels)
  tp_*         micro-batch 64 and 16, while the budget lasts
Results, written after every step to OUT (at most 7 files: the device tool brings back 8):
  gpu_check.json              every step's status, seconds and numbers, with the pass/fail summary
  torch_throughput_cuda.json  the throughput rows of all micro-batches merged (torch_throughput's format,
                              `results` = the micro-batch-32 rows, `by_micro_batch` = all); `_cpu` on a CPU
  gpu_check.log               every step's full output
  train_run_metrics.jsonl, train_resume_metrics.jsonl   the two runs' metrics
  gpu_check_table.txt         the table printed last
  gpu_profile.txt             the profile step's table
Resume tolerance: on a GPU, per-step |loss difference| <= 0.05 nats at most and <= 0.02 on average over
the resumed steps (the data, the dropout masks and the checkpointed state are the same, but bf16 kernels
with atomic adds (embedding and attention backward) are not bit-reproducible, and the difference then
grows slowly); on a CPU <= 1e-4 (the run is deterministic there: 0 expected).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import portable  # noqa: E402  (standard library only: safe in this parent)

MISSING_ON_GPU = ("mxnet", "gluonnlp", "horovod", "boto3", "botocore", "s3transfer", "zstandard", "kiwipiepy")
RESUME_FROM = 100                       # run 1 checkpoints here (checkpoint.every_steps in gpu_check.yaml)


# --- import blocking (proves the GPU machine's missing packages are not needed) ----------------------
def blocked_modules() -> list[str]:
    """Top-level modules of this Python whose distribution the GPU image lacks (bench/gpu_machine_packages.txt),
    plus MISSING_ON_GPU; the project's own packages stay importable."""
    from importlib.metadata import packages_distributions
    norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()      # noqa: E731
    have = {norm(line.strip()) for line in (REPO / "bench" / "gpu_machine_packages.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    own = {p.name for p in REPO.iterdir() if p.is_dir()}
    block = set(MISSING_ON_GPU)
    for mod, dists in packages_distributions().items():
        if mod in own or mod.startswith("_") or not mod.isidentifier():
            continue
        if not any(norm(d) in have for d in dists):
            block.add(mod)
    return sorted(block)


BLOCKER = '''"""Written by bench/gpu_check.py --block-missing: these modules look absent, as on the GPU machine."""
import importlib.abc, importlib.util, sys
BLOCKED = frozenset({names!r})
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by bench/gpu_check.py --block-missing: "
                                      "the GPU machine does not have it)", name=name)
        return None
sys.meta_path.insert(0, _Block())
_find_spec = importlib.util.find_spec
def _absent_find_spec(name, package=None):   # probes (find_spec(x) is None) see an absent module too
    if name.partition(".")[0] in BLOCKED:
        return None
    return _find_spec(name, package)
importlib.util.find_spec = _absent_find_spec
'''


# --- running one step ---------------------------------------------------------------------------------
class Runner:
    """Runs the steps as subprocesses under a shared deadline; records status and output."""

    def __init__(self, args, work: Path, out: Path, env: dict):
        self.args, self.work, self.out, self.env = args, work, out, env
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.budget_s
        self.log = open(out / "gpu_check.log", "w", encoding="utf-8")
        self.report: dict[str, Any] = {"bench": "gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                       "device_kind": args.device, "tiny": args.tiny, "budget_s": args.budget_s,
                                       "blocked_imports": env.get("GPU_CHECK_BLOCKED", "").split(",") if args.block_missing else [],
                                       "steps": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """gpu_check.json, atomically, after every step (quietly: the table comes last)."""
        self.report["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        write_quiet(self.out / "gpu_check.json", self.report)

    def run(self, name: str, cmd: list[str], cap_s: float, min_s: float = 20.0) -> dict:
        """Run `cmd` for at most min(cap_s, time left); returns {status, rc, seconds, log}."""
        timeout = min(cap_s, self.left() - 3)
        rec: dict[str, Any] = {"command": " ".join(cmd)}
        if timeout < min_s:
            rec.update(status="skipped", reason=f"out of time ({max(0, self.left()):.0f} s left of the budget)")
            print(f"[{name}] skipped: {rec['reason']}", flush=True)
            self.report["steps"][name] = rec
            self.save()
            return rec
        logf = self.work / f"{name}.log"
        print(f"[{name}] {rec['command']}  (timeout {timeout:.0f} s)", flush=True)
        t = time.monotonic()
        with open(logf, "w", encoding="utf-8") as f:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc: Optional[int] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
                for sig in (signal.SIGTERM, signal.SIGKILL):         # the step's whole process group
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=10)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        rec["seconds"] = round(time.monotonic() - t, 1)
        rec["rc"] = rc
        rec["status"] = "timeout" if rc is None else ("ok" if rc == 0 else "failed")
        text = logf.read_text(encoding="utf-8", errors="replace")
        self.log.write(f"\n===== {name}: {rec['status']} (rc {rc}, {rec['seconds']} s): {rec['command']}\n{text}")
        self.log.flush()
        tail = text.strip().splitlines()[-6:] if rec["status"] != "ok" else []
        if tail:
            rec["error_tail"] = tail[-1][:300]
        print(f"[{name}] {rec['status']} in {rec['seconds']} s" + "".join(f"\n    {ln[:200]}" for ln in tail), flush=True)
        self.report["steps"][name] = rec
        self.save()
        return rec


def write_quiet(path: Path, obj: dict) -> None:
    """Like bench.results_io.write_result (portable paths, temporary name then rename), without the print."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(portable(obj), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- the steps ------------------------------------------------------------------------------------------
def step_env(r: Runner) -> None:
    js = r.work / "env.json"
    rec = r.run("env", [r.args.python, "bench/gpu_check_steps.py", "env", "--device", r.args.device, "--json", str(js)], 90, 10)
    rec.update(read_json(js) or {})


def step_correctness(r: Runner) -> None:
    js = r.work / "correctness.json"
    cmd = [r.args.python, "bench/gpu_check_steps.py", "correctness", "--device", r.args.device, "--json", str(js)]
    cmd += (["--tiny"] if r.args.tiny else []) + ([] if r.args.compile else ["--no-compile"])
    rec = r.run("correctness", cmd, 150 if not r.args.tiny else 240)
    rec["checks"] = read_json(js) or {}


def train_cmd(r: Runner, run_dir: Path, extra: list[str]) -> list[str]:
    data = Path(r.args.data)
    sets = [f"tokenizer.dir={data / 'tokenizer'}", f"train.shards={data / 'shards'}", f"train.out_dir={run_dir}",
            f"checkpoint.root={run_dir / 'checkpoints'}", f"train.device={'gpu' if r.args.device == 'cuda' else 'cpu'}",
            "train.engine=torch"]
    if r.args.tiny:     # the same run at CPU size: 20 steps of the tiny preset, a checkpoint at 10
        sets += ["model.preset=tiny", "train.seq_len=32", "train.micro_batch=4", "train.global_batch=4",
                 "train.max_steps=20", "checkpoint.every_steps=10", "train.eval_every=10", "train.eval_batches=2",
                 "optim.warmup_steps=2", "optim.lr=3e-3"]
    if not r.args.compile:
        sets.append("train.compile=false")
    elif r.args.device == "cpu":     # rehearse the GPU recipe on the CPU: compiled, bf16 autocast, fused AdamW
        sets += ["train.compile=true", "train.precision=bf16", "optim.fused=true"]
    cmd = [r.args.python, "-m", "pretrain.train", "--config", "bench/configs/gpu_check.yaml"]
    for s in sets + extra:
        cmd += ["--set", s]
    return cmd


def train_losses(path: Path) -> dict[int, dict]:
    out = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            out.setdefault(rec.get("kind"), {})[int(rec["step"])] = rec
    except (OSError, ValueError, KeyError):
        pass
    return out


def step_train(r: Runner) -> None:
    resume_at = 10 if r.args.tiny else RESUME_FROM
    run_a, run_b = r.work / "train_run", r.work / "train_resume"
    rec_a = r.run("train_run", train_cmd(r, run_a, []), 240, 30)
    ma = train_losses(run_a / "metrics.jsonl")
    if (run_a / "metrics.jsonl").is_file():
        shutil.copy(run_a / "metrics.jsonl", r.out / "train_run_metrics.jsonl")
    train_a = ma.get("train", {})
    if train_a:
        steps = sorted(train_a)
        loss = [train_a[s]["loss"] for s in steps]
        k = max(1, min(10, len(loss) // 4))
        first, last = statistics.fmean(loss[:k]), statistics.fmean(loss[-k:])
        tps = [train_a[s]["tokens_per_s"] for s in steps[k:] if s % resume_at not in (0, 1)]   # not eval/save steps
        need = 1.0 if len(steps) >= 100 else 0.05     # nats: ln(8000) = 9.0 falls to ~6 in 200 steps on a GPU
        rec_a.update(steps=len(steps), loss_first=first, loss_last=last, loss_drop=first - last, loss_drop_needed=need,
                     tokens_per_s_median=statistics.median(tps) if tps else None,
                     mfu_median=statistics.median([train_a[s]["mfu"] for s in steps[k:] if train_a[s].get("mfu")] or [0]) or None,
                     memory_gib=max(train_a[s].get("memory_bytes", 0) for s in steps) / 2 ** 30,
                     valid_loss={s: v["valid_loss"] for s, v in ma.get("eval", {}).items()})
        rec_a["pass"] = rec_a["status"] == "ok" and first - last >= need
    step_dir = run_a / "checkpoints" / f"step_{resume_at:08d}"
    if not step_dir.is_dir():
        r.report["steps"]["train_resume"] = {"status": "skipped", "reason": f"run 1 wrote no {step_dir.name}"}
        r.save()
        return
    rec_b = r.run("train_resume", train_cmd(r, run_b, [f"checkpoint.resume={step_dir}"]), 180, 25)
    if (run_b / "metrics.jsonl").is_file():
        shutil.copy(run_b / "metrics.jsonl", r.out / "train_resume_metrics.jsonl")
    train_b = train_losses(run_b / "metrics.jsonl").get("train", {})
    common = sorted(set(train_a) & set(train_b))
    tol_max, tol_mean = (0.05, 0.02) if r.args.device == "cuda" else (1e-4, 1e-4)
    if common:
        diffs = [abs(train_a[s]["loss"] - train_b[s]["loss"]) for s in common]
        rec_b.update(first_step=min(train_b), steps_compared=len(common), max_abs_diff=max(diffs),
                     mean_abs_diff=statistics.fmean(diffs), tolerance_max=tol_max, tolerance_mean=tol_mean)
        rec_b["pass"] = (rec_b["status"] == "ok" and min(train_b) == resume_at + 1 and max(diffs) <= tol_max
                         and statistics.fmean(diffs) <= tol_mean)
    else:
        rec_b["pass"] = False
    r.save()


def step_generate(r: Runner) -> None:
    ck = r.work / "train_run" / "checkpoints"
    if not ck.is_dir():
        r.report["steps"]["generate"] = {"status": "skipped", "reason": "no checkpoint from train_run"}
        return
    js = r.work / "generate.json"
    cmd = [r.args.python, "bench/gpu_check_steps.py", "generate", "--device", r.args.device, "--checkpoint", str(ck),
           "--json", str(js), "--new-tokens", "16" if r.args.tiny else "128"]
    rec = r.run("generate", cmd, 90, 15)
    rec.update(read_json(js) or {})


def tp_plan(args) -> list[tuple[str, int]]:
    """(variants, micro-batch) per process, most important first."""
    if args.tiny:
        return [("ours,hf", 2), ("ours_chunked,ours_nopad", 2), ("ours", 4)]
    return [("ours", 32), ("hf", 32), ("ours_chunked", 32), ("ours_nopad", 32),
            ("ours", 64), ("ours", 16), ("hf", 64), ("hf", 16)]


def step_throughput(r: Runner, only_first: Optional[int] = None, skip_first: int = 0) -> None:
    plan = tp_plan(r.args)
    if r.args.tiny:           # three processes at tiny size: one per step of the plan
        skip_first, only_first = {0: (0, 1), 2: (1, 1), 4: (2, None)}[skip_first]
    plan = plan[skip_first:] if only_first is None else plan[skip_first:skip_first + only_first]
    for variants, mb in plan:
        name = f"tp_{variants.replace(',', '+')}_{mb}" if r.args.tiny else f"tp_{variants}_{mb}"
        js = r.work / f"{name}.json"
        cmd = [r.args.python, "bench/torch_throughput.py", "--device", r.args.device, "--micro-batch", str(mb),
               "--variants", variants, "--out", str(js)]
        if r.args.tiny:
            cmd += ["--preset", "tiny", "--vocab", "2000", "--steps", "2", "--warmup", "1"]
        else:
            cmd += ["--preset", "base"]
        if not r.args.compile or r.args.device == "cpu":
            cmd.append("--no-compile")      # inductor on a CPU takes a minute per variant: the CPU run checks the plumbing
        rec = r.run(name, cmd, 100 if r.args.tiny else 150, 25 if r.args.tiny else 45)
        data = read_json(js)
        if data:
            rec["results"] = data.get("results", [])
            r.tp_files.append(data)
        merge_throughput(r)


def merge_throughput(r: Runner) -> None:
    """All throughput rows into one torch_throughput_<device>.json (torch_throughput.py's format)."""
    if not r.tp_files:
        return
    by_mb: dict[str, list] = {}
    for d in r.tp_files:
        # a file merged before (by_micro_batch) or one torch_throughput.py wrote (results at one micro-batch);
        # a later row of the same variant and micro-batch replaces an earlier one
        parts = d.get("by_micro_batch") or {str(d.get("micro_batch")): d.get("results", [])}
        for mb, mb_rows in parts.items():
            for row in mb_rows:
                keep = [x for x in by_mb.get(mb, []) if x.get("name") != row.get("name")]
                by_mb[mb] = keep + [{**row, "micro_batch": int(mb)}]
    primary = "2" if r.args.tiny else "32"
    rows = by_mb.get(primary) or next(iter(by_mb.values()))
    best = {}
    for mb_rows in by_mb.values():
        for row in mb_rows:
            if row.get("tokens_per_s") and row["tokens_per_s"] > best.get(row["name"], {}).get("tokens_per_s", 0):
                best[row["name"]] = row
    get = lambda rows_, n: next((x for x in rows_ if x.get("name") == n and x.get("tokens_per_s")), None)  # noqa: E731
    ours, hf = get(rows, "ours"), get(rows, "hf")
    head = {k: v for k, v in r.tp_files[0].items()
            if k not in ("results", "micro_batch", "ratio_ours_over_hf", "command", "commands", "by_micro_batch",
                         "best", "ratio_best_ours_over_best_hf", "by")}
    merged = {**head, "micro_batch": int(primary), "results": rows,
              "ratio_ours_over_hf": ours["tokens_per_s"] / hf["tokens_per_s"] if ours and hf else None,
              "by_micro_batch": by_mb,
              "best": {n: {"micro_batch": x["micro_batch"], "tokens_per_s": x["tokens_per_s"], "mfu": x.get("mfu")}
                       for n, x in best.items()},
              "ratio_best_ours_over_best_hf": (best["ours"]["tokens_per_s"] / best["hf"]["tokens_per_s"]
                                               if "ours" in best and "hf" in best else None),
              "commands": [c for d in r.tp_files for c in (d.get("commands") or [d.get("command")])],
              "by": "bench/gpu_check.py"}
    r.report["throughput"] = {k: merged[k] for k in ("ratio_ours_over_hf", "best", "ratio_best_ours_over_best_hf")}
    write_quiet(r.out / f"torch_throughput_{r.args.device}.json", merged)


# --- the summary table ----------------------------------------------------------------------------------
def summary(r: Runner) -> str:
    s, lines = r.report["steps"], []
    env = s.get("env", {})
    lines.append(f"GPU check on {env.get('device', '?')} (torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}), "
                 f"{r.report['elapsed_s']:.0f} s of a {r.args.budget_s:.0f} s budget")
    lines.append("| check | result | status |")
    lines.append("|---|---|---|")
    mark = lambda ok: {True: "PASS", False: "FAIL", None: "-"}[ok]     # noqa: E731
    c = s.get("correctness", {}).get("checks", {})
    scopes = lambda d: "; ".join(f"{k}: {v['first_call_s']:.0f} s, {v.get('graphs', '?')} graphs"   # noqa: E731
                                 for k, v in d.get("scopes", {}).items())
    for key, fmt in (("loss_bf16_compiled", lambda d: f"rel err loss {d['rel_err_loss']:.1e} (<= {d['tolerance_loss']:g}), "
                      f"grad {d['rel_err_grad']:.1e}; {scopes(d)}"),
                     ("ce_chunked_vs_full", lambda d: f"fp32 {max(d['fp32_eager'].values()):.1e}, bf16 {max(d['bf16_compiled_full_vs_eager_chunked'].values()):.1e}"),
                     ("sdpa_backend", lambda d: f"{', '.join(d['backends']) or 'none seen'} (expected {d['expected'] or 'any'})"),
                     ("adamw_fused", lambda d: f"rel err update {d['rel_err_update']:.1e} (<= {d['tolerance']:g})")):
        d = c.get(key)
        if not d:
            lines.append(f"| {key} | {s.get('correctness', {}).get('error_tail', 'not run')[:100]} | "
                         f"{s.get('correctness', {}).get('status', 'not run')} |")
            continue
        try:
            text = fmt(d)
        except (KeyError, TypeError, ValueError):
            text = d.get("error", "?")[:100]
        lines.append(f"| {key} | {text} | {mark(d.get('pass'))} |")
    a, b, g = s.get("train_run", {}), s.get("train_resume", {}), s.get("generate", {})
    if "loss_first" in a:
        tps = f", {a['tokens_per_s_median']:,.0f} tokens/s" if a.get("tokens_per_s_median") else ""
        lines.append(f"| train_run | {a['steps']} steps, loss {a['loss_first']:.2f} -> {a['loss_last']:.2f}{tps} | {mark(a.get('pass'))} |")
    else:
        lines.append(f"| train_run | {a.get('reason') or a.get('error_tail', '')} | {a.get('status', 'not run')} |")
    if "max_abs_diff" in b:
        lines.append(f"| train_resume | from step {b['first_step'] - 1}: max |dloss| {b['max_abs_diff']:.2e}, mean "
                     f"{b['mean_abs_diff']:.2e} (<= {b['tolerance_max']:g} / {b['tolerance_mean']:g}) | {mark(b.get('pass'))} |")
    else:
        lines.append(f"| train_resume | {b.get('reason') or b.get('error_tail', '')} | {b.get('status', 'not run')} |")
    if "cached_tokens_per_s" in g:
        lines.append(f"| generate | {g['new_tokens']} tokens, {g['cached_tokens_per_s']:,.0f} tokens/s cached, "
                     f"{g['uncached_tokens_per_s']:,.0f} uncached, same tokens {g['same_tokens']}/{g['new_tokens']} | {mark(g.get('pass'))} |")
    else:
        lines.append(f"| generate | {g.get('reason') or g.get('error_tail', '')} | {g.get('status', 'not run')} |")
    pr = s.get("profile", {})
    if pr.get("groups_pct"):
        groups = ", ".join(f"{k} {v}%" for k, v in list(pr["groups_pct"].items())[:5])
        lines.append(f"| profile | {pr['step_wall_ms']:.1f} ms/step at micro-batch {pr['micro_batch']}: {groups} "
                     f"(gpu_profile.txt) | - |")
    elif pr:
        lines.append(f"| profile | {pr.get('reason') or pr.get('error_tail', '')} | {pr.get('status')} |")
    lines.append("")
    lines.append("| throughput | micro-batch | tokens/s | MFU | step ms | peak GiB | status |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for name, rec in s.items():
        if not name.startswith("tp_"):
            continue
        rows = rec.get("results") or [{"name": name, "error": rec.get("reason") or rec.get("error_tail") or rec.get("status")}]
        mb = name.rsplit("_", 1)[-1]
        for row in rows:
            if "tokens_per_s" in row:
                mfu = f"{100 * row['mfu']:.1f}%" if row.get("mfu") else "n/a"
                mem = f"{row['peak_mem_gib']:.1f}" if row.get("peak_mem_gib") else "n/a"
                lines.append(f"| {row['name']} | {mb} | {row['tokens_per_s']:,.0f} | {mfu} | {row['step_ms']:.1f} | {mem} | ok |")
            else:
                lines.append(f"| {row.get('name')} | {mb} | - | - | - | - | {str(row.get('error'))[:60]} |")
    t = r.report.get("throughput", {})
    if t.get("ratio_ours_over_hf"):
        lines.append(f"ours / HF at the same micro-batch: {t['ratio_ours_over_hf']:.2f}x (target >= 1.8x); best ours "
                     f"{t['best']['ours']['tokens_per_s']:,.0f} tokens/s at micro-batch {t['best']['ours']['micro_batch']} "
                     f"(target >= 580,000 on an H100)")
    return "\n".join(lines)


def step_profile(r: Runner) -> None:
    js, txt = r.work / "profile.json", r.out / "gpu_profile.txt"
    cmd = [r.args.python, "bench/gpu_check_steps.py", "profile", "--device", r.args.device, "--json", str(js),
           "--text", str(txt), "--micro-batch", "4" if r.args.tiny else "32", "--warmup", "1" if r.args.tiny else "5"]
    cmd += (["--tiny"] if r.args.tiny else []) + ([] if r.args.compile and r.args.device == "cuda" else ["--no-compile"])
    rec = r.run("profile", cmd, 120, 40 if not r.args.tiny else 15)
    data = read_json(js) or {}
    rec.update({k: v for k, v in data.items() if k != "table"})


STEPS: dict[str, Callable[[Runner], None]] = {
    "env": step_env,
    "correctness": step_correctness,
    "tp_main": lambda r: step_throughput(r, only_first=2),          # ours and hf at micro-batch 32
    "train": step_train,
    "generate": step_generate,
    "tp_variants": lambda r: step_throughput(r, skip_first=2, only_first=2),   # ours_chunked, ours_nopad at 32
    "profile": step_profile,
    "tp_batches": lambda r: step_throughput(r, skip_first=4),       # micro-batch 64 and 16
}
ALIASES = {"tp_rest": ["tp_variants", "tp_batches"], "tp": ["tp_main", "tp_variants", "tp_batches"]}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default=os.environ.get("OUT", ""), help="results folder (default $OUT)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU rehearsal)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="the whole check's time; steps past it are skipped")
    ap.add_argument("--data", default=str(REPO / "work" / "gpu_check"), help="tokenizer/ and shards/ (bench/gpu_prep.sh)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="eager everywhere (fast CPU runs)")
    ap.add_argument("--block-missing", action="store_true",
                    help="make the imports the GPU machine lacks fail (bench/gpu_machine_packages.txt)")
    ap.add_argument("--only", default="", help=f"comma list of steps to run, from {', '.join(STEPS)} "
                    f"({', '.join(f'{k} = {chr(43).join(v)}' for k, v in ALIASES.items())})")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs the steps")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (runs, checkpoints)")
    ap.add_argument("--work", default="", help="work folder (kept), e.g. to rerun --only generate after train")
    ap.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                    help="only merge these throughput files (torch_throughput.py's or this check's, e.g. of two "
                         "device calls) into OUT/torch_throughput_<device>.json; runs nothing")
    args = ap.parse_args(argv)
    if not args.out:
        ap.error("give the results folder as the argument, or set OUT")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        files = [read_json(Path(f)) for f in args.merge]
        if any(f is None for f in files):
            ap.error(f"--merge: unreadable JSON among {', '.join(args.merge)}")
        args.device = "cuda" if any(f.get("device_kind") == "cuda" for f in files) else "cpu"
        stub = type("Merge", (), {"args": args, "out": out, "report": {}, "tp_files": files})
        merge_throughput(stub)
        print(f"merged {len(files)} files into {out / f'torch_throughput_{args.device}.json'}: "
              f"{json.dumps(stub.report.get('throughput'))}")
        return 0
    only = [x for s in args.only.split(",") if s.strip() for x in ALIASES.get(s.strip(), [s.strip()])] or list(STEPS)
    unknown = [s for s in only if s not in STEPS]
    if unknown:
        ap.error(f"--only {','.join(unknown)}: steps are {', '.join(STEPS)}")
    need_data = any(s in only for s in ("train", "generate"))
    if need_data and not (Path(args.data) / "shards" / "manifest.json").is_file():
        print(f"warning: {args.data} has no shards/manifest.json: run bash bench/gpu_prep.sh first (and carry "
              "work/gpu_check to the GPU machine); the training steps will fail", flush=True)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    args.keep_work = args.keep_work or bool(args.work)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    path = [str(REPO)]
    if args.block_missing:
        names = blocked_modules()
        (work / "blocker").mkdir(exist_ok=True)
        (work / "blocker" / "sitecustomize.py").write_text(BLOCKER.format(names=names), encoding="utf-8")
        path.insert(0, str(work / "blocker"))
        env["GPU_CHECK_BLOCKED"] = ",".join(names)
        print(f"blocking {len(names)} modules the GPU machine lacks: {', '.join(names[:30])}"
              f"{' ...' if len(names) > 30 else ''}", flush=True)
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = Runner(args, work, out, env)
    r.tp_files = []
    try:
        for name in only:
            STEPS[name](r)
    finally:
        r.save()
        table = summary(r)
        (out / "gpu_check_table.txt").write_text(table + "\n", encoding="utf-8")
        r.log.close()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    print("\n" + table, flush=True)
    failed = [n for n, s in r.report["steps"].items() if s.get("status") != "ok" or s.get("pass") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
