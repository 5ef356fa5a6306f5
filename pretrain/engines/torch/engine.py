"""The PyTorch engine (`train.engine: torch`): the GPT-2 of model.py behind `pretrain.engines.base.Engine`.

For Hopper GPUs (MXNet 1.9.1 has no kernels for them) and anywhere torch runs:
- device: CUDA when available and `train.device` allows (`gpu` requires it), else CPU;
- precision: bf16 autocast on GPU (fp32 master weights, no loss scaling needed), fp32 on CPU by
  default; `train.precision: bf16` autocasts on the CPU too (how CI runs the GPU recipe);
- `torch.compile` (`train.compile`: auto = on CUDA only, true = any device, the CPU included) per
  transformer block by default (`train.compile_scope`; pretrain/engines/torch/compile.py says why);
- AdamW, fused (`optim.fused`: auto = on CUDA only, true = any device), decay only on 2-D dense
  weights and wte (CONTRACTS.md);
- Horovod: `hvd.DistributedOptimizer(backward_passes_per_step=accum)` starts each gradient's
  allreduce from its accumulation hook during the last micro-batch's backward. Eager, the hooks
  fire layer by layer, overlapping communication with the rest of the backward; compiled per
  block, they fire block by block; with `compile_scope: model` the one compiled backward hands back
  all gradients at its end, so the allreduces start after it (bench/overlap.py measures all three).
  `train.grad_compression: fp16` sends fp16 gradients (Horovod's Compression.fp16: half the bytes,
  averaged in fp16, cast back to fp32). Clipping runs on the averaged gradient
  (`synchronize()` -> clip -> `step()` under `skip_synchronize()`); rank 0's weights are broadcast.
  Horovod is never imported here: `dist.hvd` (pretrain.dist) is horovod.torch or None.

Dropout RNG: every step reseeds torch's CPU and CUDA generators from (train.seed, step, rank), so
the RNG state is the step counter alone and a resumed run draws exactly the masks it would have.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any, Optional

import numpy as np
import torch

from pretrain.engines.base import StepResult
from pretrain.engines.torch.compile import compiled_loss
from pretrain.engines.torch.model import GPT2, GPT2Shape

log = logging.getLogger("pretrain.engines.torch")

RNG_SCHEME = "torch-reseed-per-step-v1"
DEFAULT_CHUNK_ROWS = 8192      # rows of (rows, V) logits per chunk in eager chunked cross-entropy


def decays(name: str) -> bool:
    """Weight decay applies to the 2-D dense weights and wte; not to biases, LayerNorm, wpe."""
    return name == "wte.weight" or name.endswith(("qkv.weight", "proj.weight", "fc.weight"))


def step_seed(seed: int, step: int, rank: int) -> int:
    """A well-mixed 63-bit seed for (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def pick_device(device: str) -> torch.device:
    """`train.device` (auto | cpu | gpu) -> the torch device; raises when gpu is asked and absent."""
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if device == "gpu":
        raise RuntimeError("train.device=gpu but torch sees no CUDA GPU (torch.cuda.is_available() is "
                           f"False, torch {torch.__version__}): install a CUDA build of torch, check "
                           "CUDA_VISIBLE_DEVICES, or set train.device=auto/cpu")
    return torch.device("cpu")


class TorchEngine:
    """`Engine` over PyTorch.

    ce_chunk_rows: None = auto (full CE fused by the compiler when compiled, chunked in eager mode),
    0 = full (B*T, V) logits, N = chunks of N rows. compile_mode: torch.compile's `mode` (None = default).
    """

    name = "torch"

    def __init__(self, cfg, dist, vocab_size: int, ce_chunk_rows: Optional[int] = None,
                 compile_mode: Optional[str] = None):
        t, o = cfg.train, cfg.optim
        self.cfg, self.dist = cfg, dist
        self.hvd = getattr(dist, "hvd", None)
        self.rank, self.world = int(getattr(dist, "rank", 0)), int(getattr(dist, "size", 1))
        self.seed = int(t.seed)
        self.accum = t.accumulation(self.world)
        self.clip_norm = float(o.clip_norm)

        self.device = pick_device(t.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(int(getattr(dist, "local_rank", 0)) % torch.cuda.device_count())
            self.device = torch.device("cuda", torch.cuda.current_device())
            torch.set_float32_matmul_precision("high")         # TF32 for any fp32 matmul outside autocast
            self.device_name = torch.cuda.get_device_name(self.device)
        else:
            self.device_name = "cpu"
        prec = t.precision
        if prec == "auto":
            prec = "bf16" if self.device.type == "cuda" else "fp32"
        if prec == "fp16":
            raise ValueError("train.precision=fp16 is the mxnet engine's GPU mode; the torch engine "
                             "trains in bf16 on GPU (train.precision: auto or bf16) or fp32")
        self.precision = prec
        self._amp_dtype = torch.bfloat16 if prec == "bf16" else None

        torch.manual_seed(self.seed)                       # same init on every rank (and broadcast)
        self.model = GPT2(GPT2Shape.from_config(cfg.model, vocab_size, t.pad_vocab_multiple)).to(self.device)
        self.vocab_size = vocab_size     # wte may hold more rows (padding); state in and out has V rows
        self.num_params = self.model.num_params()
        self.names = [n for n, _ in self.model.named_parameters()]
        self.params = dict(self.model.named_parameters())

        fused = self.device.type == "cuda" if o.fused == "auto" else bool(o.fused)
        groups = [
            {"params": [p for n, p in self.params.items() if decays(n)], "weight_decay": o.weight_decay},
            {"params": [p for n, p in self.params.items() if not decays(n)], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused)
        if self.hvd is not None:
            compression = self.hvd.Compression.fp16 if t.grad_compression == "fp16" else self.hvd.Compression.none
            opt = self.hvd.DistributedOptimizer(opt, named_parameters=list(self.model.named_parameters()),
                                                backward_passes_per_step=self.accum, op=self.hvd.Average,
                                                compression=compression)
            self.hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        self.opt = opt
        self.adam_steps = 0          # optimizer updates applied (AdamW bias correction)
        self.step = 0                # train_step calls, skipped ones included (the RNG stream)

        compiled = self.device.type == "cuda" if t.compile == "auto" else bool(t.compile)
        self.ce_chunk_rows = (0 if compiled else DEFAULT_CHUNK_ROWS) if ce_chunk_rows is None else ce_chunk_rows
        self._loss = self.model.loss
        if compiled:
            self._loss = compiled_loss(self.model, t.compile_scope, compile_mode)
        self.compiled = compiled
        self.fused = fused
        log.info("torch engine: %s, %s, %d parameters, compile=%s, fused AdamW=%s, CE chunk rows=%d, "
                 "horovod=%s (%d workers, %d micro-batches per step, gradient compression %s)",
                 self.device_name, self.precision, self.num_params,
                 f"per {t.compile_scope}" if compiled else False, fused, self.ce_chunk_rows,
                 self.hvd is not None, self.world, self.accum, t.grad_compression)

    # -- helpers ---------------------------------------------------------------------------------
    def _autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    def _batch(self, batch: np.ndarray) -> torch.Tensor:
        """(B, T+1) int array -> int64 tensor on the device (pinned, asynchronous copy on GPU)."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.int64))
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x

    # -- training --------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[np.ndarray], lr: float) -> StepResult:
        """Accumulate over this worker's micro-batches, average across workers, clip, AdamW(lr)."""
        if not micro_batches:
            raise ValueError("train_step got no micro-batches")
        if self.hvd is not None and len(micro_batches) != self.accum:
            raise ValueError(f"train_step got {len(micro_batches)} micro-batches; Horovod was set up for "
                             f"backward_passes_per_step={self.accum} (train.global_batch / "
                             "(train.micro_batch x workers))")
        torch.manual_seed(step_seed(self.seed, self.step, self.rank))   # CPU + all CUDA generators
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr
        n = len(micro_batches)
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        for mb in micro_batches:
            x = self._batch(mb)
            with self._autocast():
                loss = self._loss(x[:, :-1], x[:, 1:], chunk_rows=self.ce_chunk_rows)   # mean nats
            (loss / n).backward()
            total += loss.detach().float()
        if self.hvd is not None:
            self.opt.synchronize()                          # averaged gradients in p.grad
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        loss_local, grad_norm = torch.stack([total / n, norm.float()]).tolist()   # the one host sync
        skipped = not math.isfinite(grad_norm)
        if skipped:
            log.warning("step %d: non-finite gradient norm %s, update skipped", self.step, grad_norm)
        else:
            if self.clip_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(list(self.params.values()), self.clip_norm, norm)
            if self.hvd is not None:
                with self.opt.skip_synchronize():
                    self.opt.step()
            else:
                self.opt.step()
            self.adam_steps += 1
        self.opt.zero_grad()                                # set_to_none (torch default)
        self.step += 1
        loss = loss_local if self.world == 1 else float(self.dist.allreduce_mean(loss_local))
        return StepResult(loss=loss, grad_norm=grad_norm, skipped=skipped, loss_scale=1.0)

    @torch.no_grad()
    def eval_loss(self, batch: np.ndarray) -> tuple[float, int]:
        """Summed token cross-entropy (nats) and token count of one (B, T+1) batch, dropout off."""
        self.model.eval()
        x = self._batch(batch)
        with self._autocast():
            s = self._loss(x[:, :-1], x[:, 1:], chunk_rows=self.ce_chunk_rows, reduction="sum")
        self.model.train()
        return float(s), int(x.size(0) * (x.size(1) - 1))

    @torch.no_grad()
    def logits(self, ids: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B, T, V) float32 logits, eval mode."""
        self.model.eval()
        with self._autocast():
            out, _ = self.model(self._batch(ids))
        self.model.train()
        return out.float().cpu().numpy()

    # -- state -------------------------------------------------------------------------------------
    @staticmethod
    def _to_host(t: "torch.Tensor", out: Optional[dict[str, np.ndarray]], key: str) -> np.ndarray:
        """t as fp32 numpy, copied into out[key] when that buffer fits (no fresh host allocation)."""
        buf = None if out is None else out.get(key)
        if buf is None or buf.shape != tuple(t.shape) or buf.dtype != np.float32:
            return t.detach().to("cpu", torch.float32, copy=True).numpy()
        torch.from_numpy(buf).copy_(t.detach())
        return buf

    def _real(self, name: str, t: "torch.Tensor") -> "torch.Tensor":
        """The part of a parameter-shaped tensor that exists outside the engine: wte without padding."""
        return t[:self.vocab_size] if name == "wte.weight" else t

    def _shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._real(name, self.params[name]).shape)

    def get_weights(self, out: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
        return {n: self._to_host(self._real(n, p), out, n) for n, p in self.params.items()}

    def _check_names(self, got, expect: list[str], what: str) -> None:
        got, want = set(got), set(expect)
        if got != want:
            raise ValueError(f"{what}: missing {sorted(want - got)[:5]}, unexpected {sorted(got - want)[:5]} "
                             "(is the checkpoint from a model with other sizes? compare model.* in the config "
                             "with the checkpoint's state.json)")

    @torch.no_grad()
    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self._check_names(weights, self.names, "set_weights")
        for n, p in self.params.items():
            w = np.asarray(weights[n])
            if tuple(w.shape) != self._shape(n):
                raise ValueError(f"set_weights: {n} has shape {tuple(w.shape)}, the model needs "
                                 f"{self._shape(n)} (check model.* sizes and the vocab size)")
            p.zero_()                                    # padded rows stay zero
            self._real(n, p).copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))

    def get_optimizer_state(self, out: Optional[dict[str, np.ndarray]] = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensors: dict[str, np.ndarray] = {}
        for n, p in self.params.items():
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                t = st.get(key)
                tensors[f"{key}.{n}"] = (np.zeros(self._shape(n), np.float32) if t is None
                                         else self._to_host(self._real(n, t), out, f"{key}.{n}"))
        return tensors, {"step": int(self.adam_steps)}

    @torch.no_grad()
    def set_optimizer_state(self, tensors: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        want = [f"{k}.{n}" for n in self.names for k in ("exp_avg", "exp_avg_sq")]
        self._check_names(tensors, want, "set_optimizer_state")
        steps = int(scalars.get("step", 0))
        fused = any(g.get("fused") for g in self.opt.param_groups)
        for n, p in self.params.items():
            st: dict[str, torch.Tensor] = {}
            for key in ("exp_avg", "exp_avg_sq"):
                a = np.asarray(tensors[f"{key}.{n}"])
                if tuple(a.shape) != self._shape(n):
                    raise ValueError(f"set_optimizer_state: {key}.{n} has shape {tuple(a.shape)}, "
                                     f"expected {self._shape(n)}")
                st[key] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                self._real(n, st[key]).copy_(torch.from_numpy(np.array(a, dtype=np.float32)))
            # AdamW keeps `step` as a float32 scalar tensor: on the device for fused, on CPU otherwise
            st["step"] = torch.tensor(float(steps), dtype=torch.float32,
                                      device=p.device if fused else "cpu")
            self.opt.state[p] = st
        self.adam_steps = steps

    def get_rng_state(self) -> dict[str, Any]:
        return {"scheme": RNG_SCHEME, "seed": self.seed, "step": int(self.step)}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        if state.get("scheme") == RNG_SCHEME:
            self.seed, self.step = int(state["seed"]), int(state["step"])
        else:   # e.g. a checkpoint of the mxnet engine: masks cannot match across engines anyway
            log.info("RNG state of another engine (%s): continuing the dropout stream at step %d",
                     state.get("scheme", "unknown"), self.adam_steps)
            self.step = int(state.get("step", self.adam_steps))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def memory_bytes(self) -> int:
        """Peak GPU memory allocated by torch since start (bytes), or the process RSS on CPU."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource
            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
