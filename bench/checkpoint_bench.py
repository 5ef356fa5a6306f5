"""Checkpoint cost: time the training loop is blocked per save, and S3 upload/download MB/s.

    python bench/checkpoint_bench.py                       # GPT-2 base (124M params + AdamW: ~1.5 GB)
    python bench/checkpoint_bench.py --preset small --saves 2   # quick run

For each root (a local directory, and `s3://` on a moto server started here on 127.0.0.1) it runs
`--saves` CheckpointManager.save() calls with the model's tensor names and shapes (fp32 weights and
exp_avg/exp_avg_sq), and reports:
  blocked_s   time save() took to return (what the training loop loses per checkpoint)
  total_s     save() start until the write/upload, MANIFEST.json, `latest` and pruning finished
Then S3Storage put_file/get_file of the model and optimizer files for upload/download MB/s.
Prints a table and writes bench/results/checkpoint_bench.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results_io import write_result  # noqa: E402

from common.log import setup_logging  # noqa: E402
from common.schema import MODEL_PRESETS, CheckpointConfig, S3Config, cpu_count  # noqa: E402
from pretrain.checkpoint import CheckpointManager  # noqa: E402
from pretrain.engines.base import tensor_shapes  # noqa: E402
from pretrain.checkpoint.storage import S3Storage  # noqa: E402


def model_shapes(preset: str, vocab: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for a GPT-2 preset (names from docs/CONTRACTS.md)."""
    p = MODEL_PRESETS[preset]
    return tensor_shapes(p["units"], p["num_layers"], p["max_length"], vocab)


def make_tensors(shapes: dict[str, tuple[int, ...]]) -> tuple[dict, dict]:
    """Touched (non-zero) fp32 arrays, so copies and writes cost what real ones do."""
    w = {}
    for k, s in shapes.items():
        a = np.empty(s, np.float32)
        a.fill(0.02)
        w[k] = a
    o = {}
    for k, s in shapes.items():
        for pre in ("exp_avg", "exp_avg_sq"):
            a = np.empty(s, np.float32)
            a.fill(1e-4)
            o[f"{pre}.{k}"] = a
    return w, o


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    import http.client

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            c.getresponse().read()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def bench_saves(root: str, staging: str, s3cfg: S3Config, w: dict, o: dict, saves: int) -> list[dict]:
    cfg = CheckpointConfig(root=root, keep_last=1, staging_dir=staging, s3=s3cfg)
    m = CheckpointManager(cfg, staging, is_writer=True)
    rows = []
    try:
        for i in range(saves):
            w["ln_f.bias"][0] = i    # the loop mutates its arrays between checkpoints
            t0 = time.perf_counter()
            m.save(1000 * (i + 1), w, o, {"step": 1000 * (i + 1)}, None)
            blocked = time.perf_counter() - t0
            m.wait()
            rows.append({"save": i + 1, "blocked_s": blocked, "total_s": time.perf_counter() - t0})
    finally:
        m.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="base", choices=list(MODEL_PRESETS))
    ap.add_argument("--vocab", type=int, default=51200, help="vocabulary size (KoGPT2: 51200)")
    ap.add_argument("--saves", type=int, default=3, help="saves per root (the first allocates buffers)")
    ap.add_argument("--chunk-mb", type=int, default=64, help="checkpoint.s3.multipart_chunk_mb")
    ap.add_argument("--concurrency", type=int, default=8, help="checkpoint.s3.max_concurrency")
    ap.add_argument("--no-s3", action="store_true", help="local root only")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "checkpoint_bench.json"))
    args = ap.parse_args()
    setup_logging()

    shapes = model_shapes(args.preset, args.vocab)
    params = sum(int(np.prod(s)) for s in shapes.values())
    w, o = make_tensors(shapes)
    nbytes = sum(a.nbytes for a in w.values()) + sum(a.nbytes for a in o.values())
    print(f"{args.preset}: {params / 1e6:.1f}M params, weights + AdamW state = {nbytes / 1e9:.2f} GB")

    tmp = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=os.environ.get("TMPDIR")))
    results: dict = {"machine": f"{platform.machine()}, {cpu_count()} cores, {platform.platform()}",
                     "preset": args.preset, "params": params, "bytes": nbytes, "saves": {}, "s3": {}}
    moto = None
    try:
        results["saves"]["local"] = bench_saves(str(tmp / "ckpt"), str(tmp / "staging"), S3Config(),
                                                w, o, args.saves)
        if not args.no_s3:
            moto, ep = start_moto()
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")       # moto accepts any credentials
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            s3cfg = S3Config(endpoint_url=ep, multipart_chunk_mb=args.chunk_mb,
                             max_concurrency=args.concurrency)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            import boto3

            boto3.client("s3", endpoint_url=ep).create_bucket(Bucket=bucket)
            results["saves"]["s3"] = bench_saves(f"s3://{bucket}/run", str(tmp / "staging"), s3cfg,
                                                 w, o, args.saves)
            # raw transfer rates of the two big files
            local_ckpt = tmp / "ckpt" / f"step_{1000 * args.saves:08d}"
            st = S3Storage(f"s3://{bucket}/raw", s3cfg)
            for name in ("model.safetensors", "optimizer.safetensors"):
                size = (local_ckpt / name).stat().st_size
                t0 = time.perf_counter()
                st.put_file(str(local_ckpt / name), name)
                up = time.perf_counter() - t0
                t0 = time.perf_counter()
                st.get_file(name, str(tmp / f"dl-{name}"))
                down = time.perf_counter() - t0
                os.unlink(tmp / f"dl-{name}")
                st.delete(name)
                results["s3"][name] = {"bytes": size, "upload_s": up, "download_s": down,
                                       "upload_MBps": size / 1e6 / up, "download_MBps": size / 1e6 / down}
            st.close()
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'root':6} {'save':>4} {'blocked_s':>10} {'total_s':>9} {'MB/s total':>10}")
    for root, rows in results["saves"].items():
        for r in rows:
            print(f"{root:6} {r['save']:>4} {r['blocked_s']:>10.3f} {r['total_s']:>9.2f} "
                  f"{nbytes / 1e6 / r['total_s']:>10.1f}")
    if results["s3"]:
        print(f"\n{'file (moto on loopback)':24} {'MB':>8} {'up MB/s':>8} {'down MB/s':>9}")
        for name, r in results["s3"].items():
            print(f"{name:24} {r['bytes'] / 1e6:>8.1f} {r['upload_MBps']:>8.1f} {r['download_MBps']:>9.1f}")
    write_result(args.out, results)


if __name__ == "__main__":
    main()
