"""The GPU check's in-process steps, each run by bench/gpu_check.py in its own process under a timeout.

    python bench/gpu_check_steps.py correctness --device cuda --json out.json
    python bench/gpu_check_steps.py generate --checkpoint RUN/checkpoints --device cuda --json out.json

correctness (model: GPT-2 base's width, 12 heads of 64, T 1024, vocab 50,000 padded to 50,048, but 2
layers so it compiles in seconds; `--tiny`: the tiny preset; fresh random weights and tokens per check):
- loss_bf16_compiled: the engine's GPU loss (bf16 autocast + torch.compile, full CE; each compile scope,
  per block and whole model, `--tiny`: the default one) vs fp32 eager (TF32 off) on the same batch and
  weights, dropout off: relative error of the loss <= 1e-2 (bf16
  operands land between 1e-3 and 1e-2) and of the whole gradient <= 5e-2 (bf16 rounding of every
  activation gradient; reported, the loss is the gate);
- ce_chunked_vs_full: the chunked cross-entropy (several chunks) vs the full one, fp32 eager: loss
  and gradients agree to <= 1e-4 relative (same math, another summation order); the same under
  bf16 autocast (compiled full vs eager chunked, what `ours` and `ours_chunked` train with) <= 2e-2;
- sdpa_backend: the attention kernels the compiled bf16 training step (dropout 0.1) actually runs,
  read from the profiler's op and kernel names: flash expected on CUDA (cuDNN's fused attention
  passes too, named in the table; the math fallback fails). On a CPU, inductor inlines attention,
  so a compiled CPU run may show no SDPA op at all (reported, not gated);
- adamw_fused: 3 steps of fused AdamW vs the single-tensor (eager) one from the same state with
  the engine's decay groups: parameter updates agree to <= 1e-5 relative (both fp32).
profile: the engine's train_step (GPT-2 base, micro-batch 32, compiled, bf16) under torch.profiler for 3
steps after warm-up: device time by kernel group (matmul, attention, triton-fused, optimizer, ...) and the
top 25 kernels, for deciding what to try first when the throughput target is missed.
generate: loads the checkpoint the real run wrote (torch engine, on the device), decodes greedily 128
new tokens with the kv cache and without it, checks they are the same (or part only where the two
top logits tie to 1e-5 of the largest: fp32 sums in another order) and times the cached decoding
(tokens/s, batch 1, host sync per token as `pretrain.generate` does).
env: versions, the device, and the project modules the steps need, imported once (a missing package shows
here first). Imports torch and the project only (no mxnet, horovod, boto3, zstandard, kiwipiepy).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pretrain.engines.torch.model import GPT2, GPT2Shape  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (NaN when either holds a NaN)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def grad_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().float().flatten() for p in model.parameters() if p.grad is not None])


def shape_for(tiny: bool, dropout: float) -> tuple[GPT2Shape, int, int]:
    """(model shape, batch, seq_len) of the correctness model."""
    if tiny:
        return GPT2Shape(vocab_size=500, num_layers=2, units=64, num_heads=4, max_length=64, dropout=dropout,
                         pad_vocab_multiple=64), 2, 64
    return GPT2Shape(vocab_size=50_000, num_layers=2, units=768, num_heads=12, max_length=1024, dropout=dropout,
                     pad_vocab_multiple=64), 4, 1024


def fresh_model(shape: GPT2Shape, device: torch.device, seed: int) -> GPT2:
    torch.manual_seed(seed)
    return GPT2(shape).to(device)


def batch(shape: GPT2Shape, b: int, t: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, shape.vocab_size, (b, t + 1), generator=g).to(device)
    return x[:, :-1], x[:, 1:]


def loss_and_grad(model: GPT2, fn: Callable, x, y, amp: bool, device: torch.device, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = fn(x, y, **kw)
    loss.backward()
    return loss.detach().float(), grad_vector(model)


def engine_scopes(args) -> list[str]:
    """The compile scopes to check: the trainer's default first (train.compile_scope), then the other."""
    try:
        from common.schema import TrainConfig
        default = str(getattr(TrainConfig(), "compile_scope", "model"))
    except Exception:
        default = "model"
    scopes = [default] + [s for s in ("block", "model") if s != default]
    return scopes[:1] if args.tiny else scopes


def compile_loss(model: GPT2, scope: str) -> Callable:
    """The engine's compiled loss for `scope` (pretrain/engines/torch/compile.py), or the whole-loss
    torch.compile where that module does not exist (older trees)."""
    try:
        from pretrain.engines.torch.compile import compiled_loss
    except ImportError:
        return torch.compile(model.loss, dynamic=False)
    return compiled_loss(model, scope)


def check_loss_bf16(args, device) -> dict:
    shape, b, t = shape_for(args.tiny, 0.0)
    model = fresh_model(shape, device, 1)
    x, y = batch(shape, b, t, device, 2)
    ref_loss, ref_grad = loss_and_grad(model, model.loss, x, y, False, device)
    out: dict[str, Any] = {"compiled": bool(args.compile), "loss_fp32": float(ref_loss), "tolerance_loss": 1e-2,
                           "tolerance_grad": 5e-2, "scopes": {}}
    from torch._dynamo.utils import counters
    for scope in engine_scopes(args) if args.compile else ["eager"]:
        counters.clear()
        fn = compile_loss(model, scope) if args.compile else model.loss
        t0 = time.perf_counter()
        loss, grad = loss_and_grad(model, fn, x, y, True, device)
        e_loss, e_grad = abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)), rel(grad, ref_grad)
        # graphs dynamo captured: per block it should be 2 (one block graph shared by all blocks + the head);
        # one per block would mean recompiling, and past torch's cache limit (8) blocks run eager
        out["scopes"][scope] = {"first_call_s": time.perf_counter() - t0, "loss_bf16": float(loss),
                                "rel_err_loss": e_loss, "rel_err_grad": e_grad,
                                "graphs": int(counters["stats"].get("unique_graphs", 0))}
    worst = lambda k: max(v[k] for v in out["scopes"].values())          # noqa: E731  (NaN fails below)
    out["rel_err_loss"], out["rel_err_grad"] = worst("rel_err_loss"), worst("rel_err_grad")
    out["pass"] = out["rel_err_loss"] <= 1e-2 and out["rel_err_grad"] <= 5e-2
    return out


def check_chunked(args, device) -> dict:
    shape, b, t = shape_for(args.tiny, 0.0)
    model = fresh_model(shape, device, 3)
    x, y = batch(shape, b, t, device, 4)
    rows = max(1, (b * t) // 3 + 1)                                        # 3 chunks, the last one short
    full_l, full_g = loss_and_grad(model, model.loss, x, y, False, device, chunk_rows=0)
    ch_l, ch_g = loss_and_grad(model, model.loss, x, y, False, device, chunk_rows=rows)
    fp32 = {"rel_err_loss": abs(float(ch_l) - float(full_l)) / abs(float(full_l)), "rel_err_grad": rel(ch_g, full_g)}
    compiled = compile_loss(model, engine_scopes(args)[0]) if args.compile else model.loss
    bf_full_l, bf_full_g = loss_and_grad(model, compiled, x, y, True, device, chunk_rows=0)
    bf_ch_l, bf_ch_g = loss_and_grad(model, model.loss, x, y, True, device, chunk_rows=rows)
    bf16 = {"rel_err_loss": abs(float(bf_ch_l) - float(bf_full_l)) / abs(float(bf_full_l)),
            "rel_err_grad": rel(bf_ch_g, bf_full_g)}
    ok = max(fp32.values()) <= 1e-4 and max(bf16.values()) <= 2e-2
    return {"chunk_rows": rows, "rows": b * t, "fp32_eager": fp32, "bf16_compiled_full_vs_eager_chunked": bf16,
            "tolerance_fp32": 1e-4, "tolerance_bf16": 2e-2, "pass": ok}


SDPA_KINDS = [("cudnn", ("cudnn_attention", "cudnn")), ("flash", ("flash",)),
              ("efficient", ("efficient_attention", "mem_eff", "fmha", "cutlass")),
              ("math", ("_scaled_dot_product_attention_math",))]


def classify_sdpa(names: list[str]) -> list[str]:
    """SDPA backends seen among profiler event names (ops like aten::_scaled_dot_product_flash_attention
    and kernels like flash_fwd_kernel); 'math' when attention ran but through none of the fused ones."""
    low = [n.lower() for n in names]
    seen = [kind for kind, keys in SDPA_KINDS if any(k in n for n in low for k in keys)]
    if not seen and any("scaled_dot_product" in n for n in low):
        seen = ["math"]
    return seen


def check_sdpa(args, device) -> dict:
    shape, b, t = shape_for(args.tiny, 0.1)                                # training: attention dropout on
    model = fresh_model(shape, device, 5).train()
    x, y = batch(shape, b, t, device, 6)
    fn = compile_loss(model, engine_scopes(args)[0]) if args.compile else model.loss
    loss_and_grad(model, fn, x, y, True, device)                           # compile outside the profile
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        loss_and_grad(model, fn, x, y, True, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events()})
    attn = [n for n in names if any(k in n.lower() for k in ("attention", "flash", "fmha", "sdpa", "scaled_dot"))]
    seen = classify_sdpa(attn)
    want = "flash" if device.type == "cuda" else None
    # The gate is a fused kernel: the math fallback materialises (B, H, T, T) scores, which is what costs.
    # cuDNN's fused attention (newer torch may prefer it on Hopper) passes too, and the table names it.
    fused = any(k in seen for k in ("flash", "cudnn")) and "math" not in seen
    return {"backends": seen, "expected": want, "attention_events": attn[:20],
            "pass": fused if want else None}


def check_adamw(args, device) -> dict:
    from pretrain.engines.torch.engine import decays
    shape, _, _ = shape_for(True, 0.0)                                    # small: the update math is per element
    models = [fresh_model(shape, device, 7) for _ in range(2)]
    start = [p.detach().clone() for p in models[0].parameters()]
    opts = []
    for m, fused in zip(models, (True, False)):
        named = list(m.named_parameters())
        groups = [{"params": [p for n, p in named if decays(n)], "weight_decay": 0.1},
                  {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}]
        opts.append(torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=fused, foreach=False if not fused else None))
    g = torch.Generator().manual_seed(8)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g).to(device) for p in models[0].parameters()]
        for m, opt in zip(models, opts):
            for p, gr in zip(m.parameters(), grads):
                p.grad = gr.clone()
            opt.step()
    upd_f = torch.cat([(p.detach() - s).flatten() for p, s in zip(models[0].parameters(), start)])
    upd_e = torch.cat([(p.detach() - s).flatten() for p, s in zip(models[1].parameters(), start)])
    e = rel(upd_f, upd_e)
    return {"steps": 3, "rel_err_update": e, "tolerance": 1e-5, "pass": e <= 1e-5}


def correctness(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False          # the fp32 references are true fp32
        torch.backends.cudnn.allow_tf32 = False
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                           "torch": torch.__version__, "model": "tiny" if args.tiny else "base width, 2 layers"}
    for name, fn in (("loss_bf16_compiled", check_loss_bf16), ("ce_chunked_vs_full", check_chunked),
                     ("sdpa_backend", check_sdpa), ("adamw_fused", check_adamw)):
        t0 = time.perf_counter()
        try:
            out[name] = fn(args, device)
        except Exception as e:             # one failing check must not hide the others
            traceback.print_exc()
            out[name] = {"pass": False, "error": f"{type(e).__name__}: {e}"[:1500]}
        out[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {json.dumps(out[name])[:400]}", flush=True)
        write_json(args.json, out)         # partial results survive a timeout
    return out


def generate(args) -> dict:
    from pretrain.generate import SamplingConfig, generate_ids, load_model
    dev = "gpu" if args.device == "cuda" else "cpu"
    t0 = time.perf_counter()
    lm = load_model(args.checkpoint, engine="torch", device=dev)
    load_s = time.perf_counter() - t0
    tok = lm.tokenizer
    prompt = [tok.bos_id] + tok.encode(args.prompt)
    n = min(args.new_tokens, lm.model_cfg.max_length - len(prompt))
    greedy = SamplingConfig(greedy=True)
    generate_ids(lm, prompt, 8, greedy, stop_at_eos=False)                # warm-up (kernels, allocator)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    cached = generate_ids(lm, prompt, n, greedy, use_cache=True, stop_at_eos=False)
    sync()
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    plain = generate_ids(lm, prompt, n, greedy, use_cache=False, stop_at_eos=False)
    sync()
    dt_plain = time.perf_counter() - t1
    same = sum(a == b for a, b in zip(cached, plain))
    first = next((i for i, (a, b) in enumerate(zip(cached, plain)) if a != b), None)
    tie_gap = None
    if first is not None:     # greedy picks can part only where two logits (nearly) tie: how near?
        logits, _ = lm.step(np.array([prompt + cached[:first]]))
        row = logits[0, -1]
        tie_gap = float(abs(row[cached[first]] - row[plain[first]]) / max(1e-6, float(np.abs(row).max())))
    out = {"checkpoint": str(lm.checkpoint), "step": lm.step_count, "load_s": load_s, "prompt": args.prompt,
           "new_tokens": len(cached), "cached_tokens_per_s": len(cached) / dt,
           "uncached_tokens_per_s": len(plain) / dt_plain, "same_tokens": same, "first_mismatch": first,
           "mismatch_relative_logit_gap": tie_gap, "text": tok.decode(prompt[1:] + cached),
           # identical, or parted at a tie within fp32 rounding of two different kernel orders (1e-5)
           "pass": len(cached) == len(plain) > 0 and (first is None or tie_gap < 1e-5)}
    write_json(args.json, out)
    print(f"generate: {json.dumps(out, ensure_ascii=False)[:600]}", flush=True)
    return out


# First match wins: attention kernels carry cutlass/sm90 in their names too, so they are looked for first.
KERNEL_GROUPS = [("attention", ("flash", "fmha", "attention", "sdpa")),
                 ("optimizer", ("adam", "foreach", "multi_tensor")),
                 ("cross-entropy", ("cross_entropy", "log_softmax", "logsumexp", "nll_loss")),
                 ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_", "addmm", "aten::mm", "bmm")),
                 ("triton (fused elementwise/norm)", ("triton",)),
                 ("copies/casts", ("copy", "memcpy", "memset", "fill"))]


def profile(args) -> dict:
    """Where a training step's device time goes: the engine's train_step (GPT-2 base on CUDA, tiny on a
    CPU) profiled for 3 steps after warm-up; kernels grouped by name, the top ones listed."""
    from common.schema import Config, ModelConfig
    from pretrain.engines.torch.engine import TorchEngine
    from pretrain.train.dist import Dist
    cuda = args.device == "cuda"
    cfg = Config()
    cfg.model = ModelConfig(preset="tiny" if args.tiny else "base", dropout=0.1, vocab_size=2000 if args.tiny else 50_000)
    cfg.train.engine, cfg.train.device = "torch", "gpu" if cuda else "cpu"
    cfg.train.micro_batch = cfg.train.global_batch = args.micro_batch
    cfg.train.seq_len = cfg.model.max_length
    cfg.train.compile = "auto" if args.compile else False
    eng = TorchEngine(cfg, Dist(), cfg.model.vocab_size)
    g = np.random.default_rng(0)
    batches = [g.integers(0, cfg.model.vocab_size, (args.micro_batch, cfg.train.seq_len + 1)) for _ in range(4)]
    t0 = time.perf_counter()
    for i in range(args.warmup):
        eng.train_step([batches[i % 4]], 1e-4)
    warm_s = time.perf_counter() - t0
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    steps = 3
    eng.synchronize()
    t1 = time.perf_counter()
    with torch.profiler.profile(activities=acts) as prof:
        for i in range(steps):
            eng.train_step([batches[i % 4]], 1e-4)
        eng.synchronize()
    wall_ms = 1e3 * (time.perf_counter() - t1) / steps
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    avgs = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in avgs) or 1.0
    if cuda:     # device events only (kernels, copies): their names say what ran on the GPU
        avgs = [e for e in avgs if getattr(e, "device_type", None) != torch.autograd.DeviceType.CPU] or avgs
        total = sum(getattr(e, key) for e in avgs) or 1.0
    groups: dict[str, float] = {}
    for e in avgs:
        name = e.key.lower()
        grp = next((gname for gname, keys in KERNEL_GROUPS if any(k in name for k in keys)), "other")
        groups[grp] = groups.get(grp, 0.0) + getattr(e, key)
    top = sorted(avgs, key=lambda e: -getattr(e, key))[:25]
    out = {"device": eng.device_name, "preset": cfg.model.preset, "micro_batch": args.micro_batch,
           "seq_len": cfg.train.seq_len, "compiled": eng.compiled, "warmup_s": warm_s, "step_wall_ms": wall_ms,
           "profiled_ms_per_step": total / 1e3 / steps, "tokens_per_s": args.micro_batch * cfg.train.seq_len / (wall_ms / 1e3),
           "groups_pct": {k: round(100 * v / total, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
           "top": [{"name": e.key[:120], "ms_per_step": getattr(e, key) / 1e3 / steps, "calls_per_step": e.count / steps,
                    "pct": round(100 * getattr(e, key) / total, 1)} for e in top], "pass": True}
    lines = [f"{out['device']}: GPT-2 {out['preset']}, micro-batch {args.micro_batch} x {cfg.train.seq_len}, "
             f"compiled {eng.compiled}: {wall_ms:.1f} ms/step wall, {out['profiled_ms_per_step']:.1f} ms/step in "
             f"{'kernels' if cuda else 'ops'}, {out['tokens_per_s']:,.0f} tokens/s",
             "groups: " + ", ".join(f"{k} {v}%" for k, v in out["groups_pct"].items()), "",
             f"| {'kernel' if cuda else 'op'} | ms/step | calls/step | % |", "|---|---:|---:|---:|"]
    lines += [f"| {t['name'][:90]} | {t['ms_per_step']:.2f} | {t['calls_per_step']:g} | {t['pct']} |" for t in out["top"]]
    out["table"] = "\n".join(lines)
    if args.text:
        Path(args.text).write_text(out["table"] + "\n", encoding="utf-8")
    write_json(args.json, out)
    print(out["table"], flush=True)
    return out


PROJECT_MODULES = ("pretrain.train.cli", "pretrain.train.trainer", "pretrain.checkpoint.manager",
                   "pretrain.engines.torch.engine", "pretrain.generate", "corpus.tokenizer")


def env(args) -> dict:
    """Versions and device facts; every module the check's steps import, imported here once."""
    import importlib
    import platform
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if args.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2 ** 30, 1),
                   multiprocessors=p.multi_processor_count, device_count=torch.cuda.device_count())
        try:                  # driver, clocks and memory as the card was found (read only)
            import subprocess
            out["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total,"
                 "temperature.gpu,power.draw", "--format=csv"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            out["nvidia_smi"] = f"unavailable: {e}"
    else:
        out["device"] = f"{platform.machine()} CPU, {os.cpu_count()} threads"
    try:
        import transformers
        out["transformers"] = transformers.__version__
    except ImportError as e:
        out["transformers"] = f"missing: {e}"
    failed = {}
    for mod in PROJECT_MODULES:
        try:
            importlib.import_module(mod)
        except Exception as e:     # report every one, not only the first
            failed[mod] = f"{type(e).__name__}: {e}"
    out["project_imports_failed"] = failed
    out["present_of_missing_on_gpu"] = [m for m in ("mxnet", "horovod", "boto3", "zstandard", "kiwipiepy")
                                        if importlib.util.find_spec(m) is not None]
    out["pass"] = not failed
    write_json(args.json, out)
    print(f"env: {json.dumps(out)}", flush=True)
    return out


def write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["env", "correctness", "generate", "profile"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--json", required=True, help="where this step writes its results")
    ap.add_argument("--tiny", action="store_true", help="correctness on the tiny preset (CPU runs)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="eager instead of torch.compile")
    ap.add_argument("--checkpoint", default="", help="generate: a step dir or checkpoint root")
    ap.add_argument("--prompt", default="2019년 한해를 보내며,")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=32, help="profile: sequences per step")
    ap.add_argument("--warmup", type=int, default=5, help="profile: untimed steps first (compilation)")
    ap.add_argument("--text", default="", help="profile: also write the table here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU (use --device cpu)")
    res = {"env": env, "correctness": correctness, "generate": generate, "profile": profile}[args.step](args)
    checks = [v for v in res.values() if isinstance(v, dict)] if args.step == "correctness" else [res]
    return 0 if all(c.get("pass") is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
