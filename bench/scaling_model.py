"""A scaling model on paper: GPT-2 base data-parallel step time and efficiency at 8, 64 and 512 GPUs.

    python bench/scaling_model.py                          # p5 (H100) and p4d (A100), base.yaml's batch
    python bench/scaling_model.py --tokens-per-s 610000 --overlap 0.8 --instances p5
    python bench/scaling_model.py --inter-gbps 3200 --inter-alpha-us 8 --instances p5

Inputs (each has a default, each is overridable):
- single-GPU speed: tokens/s of one GPU training GPT-2 base (`--tokens-per-s`); default the `ours` row of
  bench/results/torch_throughput_cuda.json when it was measured on the instance's GPU, else an assumed
  50% MFU (580k tokens/s on an H100, 312/989 of that on an A100);
- the per-step work that does not shrink with the per-GPU batch (AdamW over every parameter, clipping):
  its bytes over the GPU's memory bandwidth (`--fixed-ms` overrides);
- gradient bytes: GPT-2 base's parameters (tied wte counted once) x 4 bytes, x 2 with fp16 compression;
- GPUs per node, NVLink and EFA bandwidth per direction and per-hop latencies (`--intra-*`, `--inter-*`),
  times `--link-efficiency` (what NCCL reaches of the nominal figure);
- Horovod's fusion threshold (`--fusion-mb`, launch/multi_node.sh's 128 MB): one allreduce per buffer;
- overlap fraction f: share of the last micro-batch's backward still to run when the first allreduce
  starts (0 = all allreduces after the backward, as with today's whole-model torch.compile; 1 = from
  its first instant). `--overlap F`, else bench/results/overlap.json (bench/overlap.py) when present,
  else an assumed 0.5 (issue 15's target: the first allreduce before the backward's midpoint).

The model (alpha-beta, ring), for S bytes over p GPUs on n = p/g nodes of g GPUs:
- flat ring: NCCL's rings run one per NIC, so every ring crosses every node boundary and the node's
  EFA bandwidth B_e is the bottleneck; a chunk's 2(p-1) hops include 2(n-1) across nodes:
  T = k(2(n-1) a_e + (2(p-1) - 2(n-1)) a_nv) + 2(p-1)/p S / B_e (all NVLink when n = 1);
- hierarchical (HOROVOD_HIERARCHICAL_ALLREDUCE): reduce-scatter in the node, g parallel allreduces of
  S/g across nodes sharing B_e, allgather in the node:
  T = k(2(g-1) a_nv + 2(n-1) a_e) + 2(g-1)/g S / B_nv + 2(n-1)/n S / B_e;
  k = number of fusion buffers (each allreduce pays the per-hop latency again).
- exposed communication: without overlap all of T; with overlap max(T - f t_bwd, T_tail), t_bwd the
  last micro-batch's backward (2/3 of its compute; with accumulation only the last one overlaps, since
  Horovod's backward_passes_per_step starts the allreduces there) and T_tail the allreduce of the
  gradient that is complete only when the backward ends: the tied wte (31% of the bytes) gets the
  input embedding's contribution last.
- fp16 compression halves S and costs a cast each way (12 bytes per parameter of memory traffic).
- step(p) = compute(tokens per GPU) + fixed + exposed communication; efficiency = the single-GPU step
  time for the same global batch / (p x step(p)) ("strong", base.yaml's 512 x 1024 tokens), and for a
  constant per-GPU batch of train.micro_batch sequences ("weak", as the Horovod paper measured).
Not modelled: NCCL's tree algorithm (log-p latency, better than the ring at 512), contention between
NCCL kernels and compute, stragglers, and the lower single-GPU speed at 1 sequence per GPU (base.yaml's
batch on 512 GPUs). bench/allreduce_gloo.py checks the alpha-beta form on this machine (Gloo, 2 ranks).

Prints a table per instance type and writes bench/results/scaling_model.json. Standard library + PyYAML.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

GPU_COUNTS = (8, 64, 512)
H100_TARGET_TOKENS_PER_S = 580_000       # 50% MFU of GPT-2 base on one H100 (issue 13)
ASSUMED_OVERLAP = 0.5                    # issue 15's target for the compiled engine
HOROVOD_ANCHOR = {"paper": "Sergeev & Del Balso 2018, Horovod (arXiv:1802.05799)", "gpus": 512,
                  "efficiency": {"ResNet-101": 0.90, "Inception V3": 0.90, "VGG-16": 0.68},
                  "note": "weak scaling (fixed per-GPU batch), Pascal GPUs, 25 Gbit/s RoCE/TCP"}


@dataclass
class Instance:
    """One node type. Bandwidths are nominal per direction (GB/s = 1e9 bytes/s); latencies per ring hop,
    of the order NCCL's own tuning model uses for its ring with the Simple protocol (a few us over NVLink,
    ~14 us over the network): assumed, not measured here."""

    name: str
    gpu: str
    gpus_per_node: int
    intra_gbs: float            # NVLink/NVSwitch per GPU, one direction
    inter_gbs: float            # EFA per node, one direction
    intra_alpha_us: float
    inter_alpha_us: float
    hbm_tbs: float              # GPU memory bandwidth (TB/s): the optimizer's fixed cost
    peak_tflops: float          # dense bf16


INSTANCES = {
    # p5.48xlarge: 8 x H100 SXM, NVLink 4 (900 GB/s both directions), EFA v2 3,200 Gbit/s per node
    "p5": Instance("p5.48xlarge", "H100", 8, 450.0, 400.0, 3.4, 14.0, 3.35, 989.0),
    # p4d.24xlarge: 8 x A100 40 GB, NVLink 3 (600 GB/s both directions), EFA 4 x 100 Gbit/s per node
    "p4d": Instance("p4d.24xlarge", "A100", 8, 300.0, 50.0, 3.4, 14.0, 1.555, 312.0),
}


def gpt2_params(layers: int, units: int, hidden: int, vocab: int, ctx: int) -> dict[str, int]:
    """Parameter counts of our GPT-2 (biases, LayerNorms, tied output layer) by group."""
    d = units
    per_layer = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    groups = {"wte": vocab * d, "wpe": ctx * d, "blocks": layers * per_layer, "ln_f": 2 * d}
    groups["total"] = sum(groups.values())
    return groups


def ring_allreduce_s(nbytes: float, p: int, g: int, inst: Instance, eff: float, hierarchical: bool,
                     buffers: int = 1) -> float:
    """Seconds to allreduce `nbytes` over p GPUs (g per node) in `buffers` fused allreduces."""
    if p <= 1:
        return 0.0
    b_nv, b_e = inst.intra_gbs * 1e9 * eff, inst.inter_gbs * 1e9 * eff
    a_nv, a_e = inst.intra_alpha_us * 1e-6, inst.inter_alpha_us * 1e-6
    n = math.ceil(p / g)
    if n == 1:                                       # one node: a ring over NVLink, both algorithms alike
        return buffers * 2 * (p - 1) * a_nv + 2 * (p - 1) / p * nbytes / b_nv
    if not hierarchical:      # a chunk's path: 2(n-1) of its 2(p-1) hops cross nodes (NCCL's tuning model)
        hops_e = 2 * (n - 1)
        return buffers * (hops_e * a_e + (2 * (p - 1) - hops_e) * a_nv) + 2 * (p - 1) / p * nbytes / b_e
    return (buffers * (2 * (g - 1) * a_nv + 2 * (n - 1) * a_e)
            + 2 * (g - 1) / g * nbytes / b_nv + 2 * (n - 1) / n * nbytes / b_e)


@dataclass
class Workload:
    """GPT-2 base at base.yaml's batch; bytes and tokens are per step."""

    params: int
    wte_params: int
    seq_len: int
    global_batch: int           # sequences per step
    micro_batch: int            # sequences per micro-batch (base.yaml)
    fusion_bytes: float


def predict(w: Workload, inst: Instance, p: int, tokens_per_s: float, fixed_s: float, overlap: float,
            eff: float, hierarchical: bool, fp16: bool, use_overlap: bool, per_gpu_seqs: Optional[int] = None
            ) -> dict[str, Any]:
    """Step time (s) and parts for p GPUs. per_gpu_seqs None: strong scaling at w.global_batch."""
    seqs = per_gpu_seqs if per_gpu_seqs is not None else w.global_batch / p
    if seqs < 1:
        raise ValueError(f"{p} GPUs with a global batch of {w.global_batch} sequences: less than one each")
    micro = min(w.micro_batch, seqs)
    compute = seqs * w.seq_len / tokens_per_s
    bwd_last = (2 / 3) * micro * w.seq_len / tokens_per_s          # backward of the last micro-batch
    bpp = 2 if fp16 else 4
    grad_bytes = w.params * bpp
    buffers = max(1, math.ceil(grad_bytes / w.fusion_bytes))
    t_ar = ring_allreduce_s(grad_bytes, p, inst.gpus_per_node, inst, eff, hierarchical, buffers)
    t_tail = ring_allreduce_s(w.wte_params * bpp, p, inst.gpus_per_node, inst, eff, hierarchical, 1)
    cast = (12 * w.params / (inst.hbm_tbs * 1e12)) if (fp16 and p > 1) else 0.0
    exposed = (max(t_ar - overlap * bwd_last, t_tail) if use_overlap else t_ar) + cast
    step = compute + fixed_s + exposed
    return {"gpus": p, "nodes": math.ceil(p / inst.gpus_per_node), "seqs_per_gpu": seqs,
            "accumulation": max(1, round(seqs / micro)), "compute_ms": 1e3 * compute, "fixed_ms": 1e3 * fixed_s,
            "allreduce_ms": 1e3 * t_ar, "fusion_buffers": buffers, "tail_allreduce_ms": 1e3 * t_tail,
            "cast_ms": 1e3 * cast, "exposed_comm_ms": 1e3 * exposed, "step_ms": 1e3 * step}


def efficiency(row: dict, single_step_s: float, p: int) -> float:
    """Ideal p-GPU step (one GPU's time for the same work / p) over the predicted one."""
    return single_step_s / (p * row["step_ms"] / 1e3)


# --- inputs from other benchmarks ---------------------------------------------------------------------
SAME_COMPUTE = {"H100": ("H100", "H200")}    # an H200 is an H100 with more memory: the same bf16 rate


def measured_tokens_per_s(gpu: str, path: Path) -> Optional[tuple[float, str]]:
    """(tokens/s, source) of the `ours` variant at GPT-2 base from torch_throughput_cuda.json on `gpu`
    (or a GPU of the same compute); the best micro-batch when the file has several."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    device = str(data.get("device", "")).lower()
    if data.get("preset") != "base" or not any(g.lower() in device for g in SAME_COMPUTE.get(gpu, (gpu,))):
        return None
    best = (data.get("best") or {}).get("ours")                   # bench/gpu_check.py's merged file
    if best and best.get("tokens_per_s"):
        return float(best["tokens_per_s"]), (f"measured: {path.name} ({data.get('device')}, micro-batch "
                                              f"{best.get('micro_batch')})")
    for r in data.get("results", []):
        if r.get("name") == "ours" and r.get("tokens_per_s"):
            return float(r["tokens_per_s"]), f"measured: {path.name} ({data.get('device')})"
    return None


def find_overlap(data: Any) -> Optional[tuple[float, str]]:
    """The overlap fraction in bench/overlap.py's JSON: a top-level `overlap_fraction` (number, or a dict by
    variant), or `results: [{name, overlap_fraction}]`; among variants the per-block compile is preferred,
    then the best compiled one, then the best."""
    found: dict[str, float] = {}
    top = data.get("overlap_fraction") if isinstance(data, dict) else None
    if isinstance(top, (int, float)):
        return float(top), "overlap_fraction"
    if isinstance(top, dict):
        found.update({str(k): float(v) for k, v in top.items() if isinstance(v, (int, float))})
    for r in (data.get("results", []) if isinstance(data, dict) else []):
        if isinstance(r, dict) and isinstance(r.get("overlap_fraction"), (int, float)):
            found[str(r.get("name", len(found)))] = float(r["overlap_fraction"])
    if not found:
        return None
    for key in found:
        if "block" in key:
            return found[key], key
    compiled = {k: v for k, v in found.items() if "compile" in k}
    pool = compiled or found
    key = max(pool, key=pool.get)
    return pool[key], key


def load_workload(config: Path, vocab: int, fusion_mb: float) -> tuple[Workload, dict]:
    from common.config import load_config
    cfg = load_config(str(config))
    m, t = cfg.model, cfg.train
    v = m.vocab_size or cfg.tokenizer.vocab_size or vocab
    counts = gpt2_params(m.num_layers, m.units, m.hidden_size, v, m.max_length)
    w = Workload(params=counts["total"], wte_params=counts["wte"], seq_len=t.seq_len or m.max_length,
                 global_batch=t.global_batch, micro_batch=t.micro_batch, fusion_bytes=fusion_mb * 2 ** 20)
    return w, {"config": config.as_posix(), "vocab": v, "layers": m.num_layers, "units": m.units, **counts}


VARIANTS = [(h, c) for h in (False, True) for c in (False, True)]     # (hierarchical, fp16)


def model_instance(w: Workload, inst: Instance, args, tps: float, tps_src: str, overlap: float) -> dict:
    eff = args.link_efficiency
    opt_bytes = 32 * w.params              # fused AdamW: p, g, m, v read; p, m, v written; norm reads g
    fixed = args.fixed_ms / 1e3 if args.fixed_ms is not None else opt_bytes / (inst.hbm_tbs * 1e12)
    rows = []
    for scaling in ("strong", "weak"):
        per_gpu = None if scaling == "strong" else w.micro_batch
        seqs_total = w.global_batch if scaling == "strong" else None
        for p in GPU_COUNTS:
            total = seqs_total if seqs_total is not None else per_gpu * p
            # strong: one GPU doing the whole global batch (accumulating), ideal p-GPU step = that / p;
            # weak: one GPU with the same per-GPU batch, ideal p-GPU step = that
            single = (total * w.seq_len / tps + fixed) if scaling == "strong" else (per_gpu * w.seq_len / tps + fixed) * p
            for hier, fp16 in VARIANTS:
                for ov in (False, True):
                    r = predict(w, inst, p, tps, fixed, overlap, eff, hier, fp16, ov, per_gpu)
                    r.update(scaling=scaling, algorithm="hierarchical" if hier else "flat",
                             compression="fp16" if fp16 else "none", overlap=ov,
                             efficiency=efficiency(r, single, p), tokens_per_s=total * w.seq_len / (r["step_ms"] / 1e3))
                    rows.append(r)
    return {"instance": asdict(inst), "tokens_per_s_one_gpu": tps, "tokens_per_s_source": tps_src,
            "fixed_ms": 1e3 * fixed, "link_efficiency": eff, "rows": rows}


def print_table(res: dict, w: Workload) -> None:
    inst = res["instance"]
    print(f"\n{inst['name']} ({inst['gpus_per_node']} x {inst['gpu']}; NVLink {inst['intra_gbs']:.0f} GB/s, "
          f"EFA {inst['inter_gbs']:.0f} GB/s per node, x{res['link_efficiency']} reached); one GPU "
          f"{res['tokens_per_s_one_gpu']:,.0f} tokens/s ({res['tokens_per_s_source']}), fixed "
          f"{res['fixed_ms']:.2f} ms/step")
    for scaling in ("strong", "weak"):
        what = (f"base.yaml's batch, {w.global_batch} x {w.seq_len} tokens" if scaling == "strong"
                else f"{w.micro_batch} sequences per GPU")
        print(f"{scaling} scaling ({what}): efficiency, step ms in brackets; allreduce = whole-gradient time")
        print(f"| GPUs | seq/GPU | compute ms | {'algorithm':<12} | compr | allreduce ms | no overlap      | overlap         |")
        print("|-----:|--------:|-----------:|--------------|-------|-------------:|-----------------|-----------------|")
        rows = [r for r in res["rows"] if r["scaling"] == scaling]
        for p in GPU_COUNTS:
            for hier, fp16 in VARIANTS:
                pair = [r for r in rows if r["gpus"] == p and (r["algorithm"] == "hierarchical") == hier
                        and (r["compression"] == "fp16") == fp16]
                no, yes = sorted(pair, key=lambda r: r["overlap"])
                cell = lambda r: f"{100 * r['efficiency']:5.1f}% ({r['step_ms']:6.1f})"   # noqa: E731
                print(f"| {p:>4} | {no['seqs_per_gpu']:>7g} | {no['compute_ms']:>10.1f} | "
                      f"{no['algorithm']:<12} | {no['compression']:<5} | {no['allreduce_ms']:>12.1f} | "
                      f"{cell(no):<15} | {cell(yes):<15} |")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "base.yaml"))
    ap.add_argument("--vocab", type=int, default=50_000, help="when neither model nor tokenizer names one")
    ap.add_argument("--instances", default="p5,p4d", help=f"comma list of {', '.join(INSTANCES)}")
    ap.add_argument("--tokens-per-s", type=float, default=None,
                    help="one GPU's GPT-2 base training speed (default: measured on that GPU, else 50%% MFU)")
    ap.add_argument("--fixed-ms", type=float, default=None, help="per-step time independent of the batch")
    ap.add_argument("--overlap", type=float, default=None, help="overlap fraction 0..1 (default: overlap.json, else 0.5)")
    ap.add_argument("--overlap-json", default=str(REPO / "bench" / "results" / "overlap.json"))
    ap.add_argument("--throughput-json", default=str(REPO / "bench" / "results" / "torch_throughput_cuda.json"))
    ap.add_argument("--gpus-per-node", type=int, default=None)
    ap.add_argument("--intra-gbs", type=float, default=None, help="NVLink GB/s per GPU per direction")
    ap.add_argument("--inter-gbps", type=float, default=None, help="EFA Gbit/s per node per direction")
    ap.add_argument("--intra-alpha-us", type=float, default=None)
    ap.add_argument("--inter-alpha-us", type=float, default=None)
    ap.add_argument("--link-efficiency", type=float, default=0.8, help="share of nominal bandwidth NCCL reaches")
    ap.add_argument("--fusion-mb", type=float, default=128.0, help="HOROVOD_FUSION_THRESHOLD in MiB")
    ap.add_argument("--gloo-json", default=str(REPO / "bench" / "results" / "allreduce_gloo.json"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "scaling_model.json"))
    args = ap.parse_args(argv)
    if args.overlap is not None and not 0.0 <= args.overlap <= 1.0:
        ap.error(f"--overlap {args.overlap}: a fraction of the backward, between 0 and 1")
    if not 0.0 < args.link_efficiency <= 1.0:
        ap.error(f"--link-efficiency {args.link_efficiency}: between 0 (exclusive) and 1")

    w, model_info = load_workload(Path(args.config), args.vocab, args.fusion_mb)
    overlap, overlap_src = ASSUMED_OVERLAP, "assumed (issue 15 target: first allreduce before the backward's midpoint)"
    if args.overlap is not None:
        overlap, overlap_src = args.overlap, "--overlap"
    elif Path(args.overlap_json).is_file():
        try:
            got = find_overlap(json.loads(Path(args.overlap_json).read_text()))
        except ValueError:
            got = None
        if got:
            overlap, overlap_src = got[0], f"measured: {Path(args.overlap_json).name} ({got[1]})"
        else:
            print(f"warning: {args.overlap_json} has no overlap_fraction; assuming {ASSUMED_OVERLAP}")

    results = []
    for key in [k.strip() for k in args.instances.split(",") if k.strip()]:
        if key not in INSTANCES:
            ap.error(f"--instances {key}: choose from {', '.join(INSTANCES)}")
        inst = INSTANCES[key]
        over = {"gpus_per_node": args.gpus_per_node, "intra_gbs": args.intra_gbs,
                "inter_gbs": None if args.inter_gbps is None else args.inter_gbps / 8,
                "intra_alpha_us": args.intra_alpha_us, "inter_alpha_us": args.inter_alpha_us}
        inst = replace(inst, **{k: v for k, v in over.items() if v is not None})
        if args.tokens_per_s:
            tps, src = args.tokens_per_s, "--tokens-per-s"
        else:
            got = measured_tokens_per_s(inst.gpu, Path(args.throughput_json))
            tps, src = got or (H100_TARGET_TOKENS_PER_S * inst.peak_tflops / 989.0,
                               "assumed: 50% MFU (issue 13's H100 target, scaled by peak bf16 FLOP/s)")
        results.append(model_instance(w, inst, args, tps, src, overlap))

    gloo = None
    if Path(args.gloo_json).is_file():
        try:
            gloo = json.loads(Path(args.gloo_json).read_text())
        except ValueError:
            gloo = None
    out = {"bench": "scaling_model", "workload": {**asdict(w), **model_info,
                                                  "grad_bytes_fp32": 4 * w.params, "grad_bytes_fp16": 2 * w.params},
           "overlap_fraction": overlap, "overlap_source": overlap_src, "gpu_counts": list(GPU_COUNTS),
           "anchor": HOROVOD_ANCHOR, "instances": results,
           "gloo_check": None if gloo is None else {k: gloo.get(k) for k in ("fit", "check", "machine")},
           "command": " ".join(["bench/scaling_model.py"] + (argv if argv is not None else sys.argv[1:]))}
    print(f"GPT-2 base: {w.params:,} parameters, gradients {4 * w.params / 1e9:.3f} GB fp32 / "
          f"{2 * w.params / 1e9:.3f} GB fp16 (wte {4 * w.wte_params / 1e9:.3f} GB, last ready); "
          f"fusion {args.fusion_mb:g} MiB; overlap f = {overlap:.2f} ({overlap_src})")
    for res in results:
        print_table(res, w)
    if gloo and gloo.get("check"):
        c = gloo["check"]
        print(f"\nmodel check on this machine (Gloo, 2 ranks, {c['bytes'] / 1e9:.3f} GB): predicted "
              f"{c['predicted_s']:.3f} s from the fit, measured {c['measured_s']:.3f} s ({c['error_pct']:+.0f}%)")
    print(f"anchor: Horovod paper, {HOROVOD_ANCHOR['gpus']} GPUs: ResNet-101 {HOROVOD_ANCHOR['efficiency']['ResNet-101']:.0%}, "
          f"VGG-16 {HOROVOD_ANCHOR['efficiency']['VGG-16']:.0%} ({HOROVOD_ANCHOR['note']})")
    write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
