"""Training throughput of the torch engine vs Hugging Face GPT2LMHeadModel, same process, same loop.

    python bench/torch_throughput.py --preset base --device cuda     # the H100 table (GPT-2 base, ctx 1024)
    python bench/torch_throughput.py --preset tiny --device cpu      # end-to-end check on a CPU (~30 s)

Variants (all with dropout 0.1, AdamW (fused on CUDA), clipping at 1.0, one host sync per step):
- `ours`:         pretrain.engines.torch.TorchEngine.train_step (bf16 autocast, SDPA, torch.compile of
                  model + cross-entropy, fused AdamW on GPU) - exactly what `train.engine: torch` runs;
- `ours_chunked`: the same with the chunked cross-entropy (never holds (B*T, V) logits);
- `ours_nopad`:   `ours` with train.pad_vocab_multiple=0 (output matmul 50,000 wide, not 50,048);
- `hf`:           transformers GPT2LMHeadModel (attn_implementation="sdpa", activation gelu), bf16
                  autocast, torch.compile of model + cross-entropy, fused AdamW, same decay groups.
Random token ids (uniform over the vocabulary); the first `--warmup` steps (compilation) are not timed.
MFU = tokens/s x (6N + 12 L d T) / peak (989e12 for H100/H200 bf16 dense), N counting wte once.
Prints a table and writes bench/results/torch_throughput_<device>.json. Needs torch (and transformers
for `hf`) only: no mxnet, horovod or project data.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

import torch  # noqa: E402

from common.schema import Config, ModelConfig  # noqa: E402
from pretrain.train.dist import Dist  # noqa: E402
from pretrain.engines.torch.engine import TorchEngine  # noqa: E402
from pretrain.train.metrics import flops_per_token, peak_flops  # noqa: E402

TARGET_TOKENS_PER_S = 580_000          # 50% MFU of GPT-2 base (V 50,000, T 1024) on one H100


def make_cfg(args) -> Config:
    cfg = Config()
    cfg.model = ModelConfig(preset=args.preset, dropout=0.1, vocab_size=args.vocab)
    cfg.train.engine = "torch"
    cfg.train.device = "gpu" if args.device == "cuda" else "cpu"
    cfg.train.micro_batch, cfg.train.global_batch = args.micro_batch, args.micro_batch * args.accum
    cfg.train.compile = False if args.no_compile else "auto"   # auto: compiled on CUDA, eager on the CPU
    cfg.train.seq_len = args.seq_len or cfg.model.max_length
    cfg.optim.clip_norm = 1.0
    return cfg


class HFRunner:
    """GPT2LMHeadModel trained by the same loop as the engine (accumulate, clip, AdamW, one sync)."""

    def __init__(self, cfg: Config, device: torch.device, compile_mode):
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel
        m = cfg.model
        conf = GPT2Config(vocab_size=m.vocab_size, n_positions=m.max_length, n_embd=m.units, n_layer=m.num_layers,
                          n_head=m.num_heads, n_inner=m.hidden_size, activation_function="gelu",
                          resid_pdrop=m.dropout, embd_pdrop=m.dropout, attn_pdrop=m.dropout,
                          layer_norm_epsilon=m.layer_norm_eps)
        torch.manual_seed(0)
        try:
            model = GPT2LMHeadModel._from_config(conf, attn_implementation="sdpa")
        except (TypeError, ValueError):
            conf._attn_implementation = "sdpa"
            model = GPT2LMHeadModel(conf)
        self.attn_impl = getattr(model.config, "_attn_implementation", "?")
        self.version = transformers.__version__
        self.model = model.to(device).train()
        self.device = device
        self.amp = device.type == "cuda"
        named = list(self.model.named_parameters())
        groups = [{"params": [p for n, p in named if p.dim() == 2 and "wpe" not in n], "weight_decay": cfg.optim.weight_decay},
                  {"params": [p for n, p in named if not (p.dim() == 2 and "wpe" not in n)], "weight_decay": 0.0}]
        o = cfg.optim
        self.opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=device.type == "cuda")
        self.params = [p for _, p in named]
        self.num_params = sum(p.numel() for p in self.params)      # tied lm_head counted once
        self.clip = o.clip_norm

        def loss_fn(x, y):
            logits = self.model(input_ids=x).logits                # (B, T, V)
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        self.loss = loss_fn
        if cfg.train.compile and device.type == "cuda":
            self.loss = torch.compile(loss_fn, dynamic=False, mode=compile_mode)

    def train_step(self, micro_batches, lr):
        for g in self.opt.param_groups:
            g["lr"] = lr
        total = torch.zeros((), device=self.device)
        for mb in micro_batches:
            x = torch.from_numpy(mb.astype(np.int64))
            x = x.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else x
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.loss(x[:, :-1], x[:, 1:])
            (loss / len(micro_batches)).backward()
            total += loss.detach()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        loss_v, norm_v = torch.stack([total / len(micro_batches), norm.float()]).tolist()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return SimpleNamespace(loss=loss_v, grad_norm=norm_v)


def run_variant(name: str, args, cfg: Config, batches: list[np.ndarray]) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    extra = {}
    if name == "hf":
        runner = HFRunner(cfg, device, args.compile_mode)
        extra = {"transformers": runner.version, "attn_implementation": runner.attn_impl}
        compiled = cfg.train.compile and device.type == "cuda"
    else:
        run_cfg = cfg
        if name == "ours_nopad":
            run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, pad_vocab_multiple=0))
        runner = TorchEngine(run_cfg, Dist(), cfg.model.vocab_size, compile_mode=args.compile_mode,
                             ce_chunk_rows=args.chunk_rows if name == "ours_chunked" else None)
        extra = {"ce_chunk_rows": runner.ce_chunk_rows, "precision": runner.precision,
                 "padded_vocab": runner.model.shape.padded_vocab}
        compiled = runner.compiled
    losses = []
    k = 0

    def step(runner):
        nonlocal k
        mbs = [batches[(k + i) % len(batches)] for i in range(args.accum)]
        k += args.accum
        losses.append(runner.train_step(mbs, 1e-4).loss)

    for _ in range(args.warmup):
        step(runner)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    for _ in range(args.steps):
        step(runner)                                 # each step ends in a host sync (loss, grad norm)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t1
    tokens = args.steps * args.accum * args.micro_batch * cfg.train.seq_len
    res = {"name": name, "tokens_per_s": tokens / dt, "step_ms": 1e3 * dt / args.steps,
           "warmup_s": warm_s, "compiled": bool(compiled), "num_params": int(runner.num_params),
           "loss_first": losses[0], "loss_last": losses[-1], **extra}
    if device.type == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    del runner
    gc.collect()
    torch._dynamo.reset()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base", help="model preset (common/schema.py MODEL_PRESETS)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--seq-len", type=int, default=0, help="0 = the preset's max_length")
    ap.add_argument("--micro-batch", type=int, default=0, help="0 = 32 on cuda, 4 on cpu")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0 = 30 on cuda, 4 on cpu)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps incl. compilation (0 = 5 on cuda, 1 on cpu)")
    ap.add_argument("--variants", default="ours,ours_nopad,ours_chunked,hf")
    ap.add_argument("--chunk-rows", type=int, default=8192, help="rows per chunk for ours_chunked")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default="", help="JSON path (default bench/results/torch_throughput_<device>.json)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU; use --device cpu (e.g. --preset tiny)")
    args.micro_batch = args.micro_batch or (32 if cuda else 4)
    args.steps = args.steps or (30 if cuda else 4)
    args.warmup = args.warmup or (5 if cuda else 1)
    cfg = make_cfg(args)
    m, T = cfg.model, cfg.train.seq_len
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, args.vocab, (args.micro_batch, T + 1)).astype(np.int32) for _ in range(8)]
    dev_name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine()) + " CPU"
    peak = peak_flops(dev_name) if cuda else None

    results = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        print(f"running {name} ...", flush=True)
        try:
            r = run_variant(name, args, cfg, batches)
        except Exception as e:             # one failing variant (e.g. OOM) must not hide the others
            traceback.print_exc()
            r = {"name": name, "error": f"{type(e).__name__}: {e}"[:2000]}
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        if "tokens_per_s" in r:
            fpt = flops_per_token(r["num_params"], m.num_layers, m.units, T)
            r["flops_per_token"] = fpt
            r["mfu"] = r["tokens_per_s"] * fpt / peak if peak else None
        results.append(r)

    by = {r["name"]: r for r in results}
    ratio = (by["ours"]["tokens_per_s"] / by["hf"]["tokens_per_s"]
             if "tokens_per_s" in by.get("ours", {}) and "tokens_per_s" in by.get("hf", {}) else None)
    out = {"bench": "torch_throughput", "device": dev_name, "device_kind": args.device,
           "torch": torch.__version__, "python": platform.python_version(),
           "preset": args.preset, "layers": m.num_layers, "units": m.units, "heads": m.num_heads,
           "vocab": args.vocab, "seq_len": T, "micro_batch": args.micro_batch, "accum": args.accum,
           "steps": args.steps, "warmup": args.warmup, "compile_mode": args.compile_mode,
           "peak_flops": peak, "target_tokens_per_s": TARGET_TOKENS_PER_S if args.preset == "base" and cuda else None,
           "ratio_ours_over_hf": ratio, "results": results,
           "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    path = Path(args.out) if args.out else REPO / "bench" / "results" / f"torch_throughput_{args.device}.json"
    write_result(path, out)

    print(f"\n{dev_name}, torch {torch.__version__}: GPT-2 {args.preset} (L {m.num_layers}, d {m.units}, "
          f"V {args.vocab}, T {T}), micro-batch {args.micro_batch} x accum {args.accum}")
    print(f"| {'variant':<13}| {'tokens/s':>11} | {'MFU':>6} | {'step ms':>8} | {'peak GiB':>8} | compiled | loss first->last |")
    print(f"|{'-' * 14}|{'-' * 13}|{'-' * 8}|{'-' * 10}|{'-' * 10}|----------|------------------|")
    for r in results:
        if "error" in r:
            print(f"| {r['name']:<13}| failed: {r['error'][:80]}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f}" if "peak_mem_gib" in r else "n/a"
        print(f"| {r['name']:<13}| {r['tokens_per_s']:>11,.0f} | {mfu:>6} | {r['step_ms']:>8.1f} | {mem:>8} | "
              f"{'yes' if r['compiled'] else 'no':<8} | {r['loss_first']:.3f} -> {r['loss_last']:.3f}  |")
    if ratio is not None:
        print(f"ours / HF = {ratio:.2f}x", end="")
        if out["target_tokens_per_s"]:
            ok = by["ours"]["tokens_per_s"] >= TARGET_TOKENS_PER_S
            print(f"; target {TARGET_TOKENS_PER_S:,} tokens/s (50% MFU): {'met' if ok else 'NOT met'}", end="")
        print()
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
