"""The MXNet/Gluon engine: GPT-2 training steps behind `pretrain.engines.base.Engine`.

One step (`train_step`):
  1. seed MXNet's RNG from (train.seed, step, rank): dropout masks are a pure function of the step,
     so a resumed run draws exactly the masks the uninterrupted run drew;
  2. forward/backward every micro-batch with grad_req='add' (gradient accumulation), the loss of
     each scaled by loss_scale / tokens-on-this-worker-this-step;
  3. `trainer.allreduce_grads()` (Horovod); the global L2 norm of the *averaged, unscaled* gradient is
     norm(g) x trainer._scale / loss_scale: Horovod's DistributedTrainer either averages in C++
     (NCCL >= 2.10, `_scale` = 1) or sums and folds 1/size into `_scale` (Gloo/MPI/old NCCL), and
     `update()` applies `rescale_grad = _scale / batch_size`; both give the average;
  4. non-finite norm: fp16 -> skip the step, halve the loss scale; fp32 -> no update, reported
     (the loop stops the run); else clip by global norm and `trainer.update()` with
     rescale_grad = _scale x clip / loss_scale, so clipping and unscaling cost no extra pass.

fp16 (GPU): the network is cast to float16, the optimizer keeps fp32 master weights and moments
(`multi_precision`), dynamic loss scale x2 every 2000 good steps, /2 on overflow.
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
from typing import Any, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from common.config import ConfigError
from pretrain.engines.base import StepResult
from pretrain.engines.mxnet.gpu import check_mxnet_supports, gpu_info
from pretrain.engines.mxnet.model import GPT2LossBlock, build_model, decays, init_gpt2, param_map

log = logging.getLogger("pretrain.engines.mxnet")

SCALE_WINDOW = 2000       # good fp16 steps before the loss scale doubles
MIN_LOSS_SCALE = 1.0


@mx.optimizer.Optimizer.register
class GPT2AdamW(mx.optimizer.Optimizer):
    """AdamW (Loshchilov & Hutter) with bias correction, as torch.optim.AdamW computes it:

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        w = w (1 - lr wd);      w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Weight decay per parameter via `wd_mult` (0 for biases, LayerNorm, wpe). State per parameter:
    (exp_avg, exp_avg_sq) fp32; with multi_precision and fp16 weights, (fp32 master, (m, v)).
    Registered as "gpt2adamw"."""

    def __init__(self, learning_rate: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create_state(self, index, weight):
        z = lambda: mx.nd.zeros(weight.shape, weight.context, dtype="float32")  # noqa: E731
        return (z(), z())

    def update(self, index, weight, grad, state):
        self._update_count(index)
        t = self._index_update_count[index]
        lr, wd = self._get_lr(index), self._get_wd(index)
        mean, var = state
        g = grad * self.rescale_grad
        mean[:] = self.beta1 * mean + (1.0 - self.beta1) * g
        var[:] = self.beta2 * var + (1.0 - self.beta2) * mx.nd.square(g)
        if wd:
            weight[:] = weight * (1.0 - lr * wd)
        denom = mx.nd.sqrt(var) / math.sqrt(1.0 - self.beta2 ** t) + self.epsilon
        weight[:] = weight - (lr / (1.0 - self.beta1 ** t)) * mean / denom


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0] & 0x7FFFFFFF)


class MXNetEngine:
    """GPT-2 in MXNet/Gluon; see the module docstring for the step. Built by `create_engine`."""

    name = "mxnet"

    def __init__(self, cfg: Any, dist: Any, vocab_size: int):
        self.cfg, self.dist = cfg, dist
        t, m, o = cfg.train, cfg.model, cfg.optim
        self.ctx, self.device_name = self._pick_device(t.device, dist.local_rank)
        on_gpu = self.ctx.device_type == "gpu"
        prec = t.precision if t.precision != "auto" else ("fp16" if on_gpu else "fp32")
        if prec == "bf16":
            raise ConfigError("train.precision=bf16: the MXNet engine trains in fp16 (GPU) or fp32; set "
                              "train.precision: fp16, or train.engine: torch for bf16")
        if prec == "fp16" and not on_gpu:
            raise ConfigError("train.precision=fp16 needs a GPU; on CPU use train.precision: fp32 (or auto)")
        self.precision = prec
        self.seed = t.seed
        self.clip_norm = o.clip_norm
        self.loss_scale = float(t.init_loss_scale) if prec == "fp16" else 1.0
        self._good_steps = 0
        self._calls = 0            # train_step calls so far (skipped ones included): the RNG step

        mx.random.seed(t.seed)     # identical initial weights on every rank (broadcast makes it certain)
        self.model = build_model(m, vocab_size)
        init_gpt2(self.model, ctx=self.ctx)
        self.params = param_map(self.model)
        for name, p in self.params.items():
            p.grad_req = "add"                       # accumulate over micro-batches; zeroed after a step
            p.wd_mult = 1.0 if decays(name) else 0.0
        self.num_params = int(sum(int(np.prod(p.shape)) for p in self.params.values()))
        if dist.hvd is not None:
            dist.hvd.broadcast_parameters(self.model.collect_params(), root_rank=0)
        fp32_init = {n: p.data(self.ctx).asnumpy() for n, p in self.params.items()}
        if prec == "fp16":
            self.model.cast("float16")
        self.loss_block = GPT2LossBlock(self.model)
        self.loss_block.hybridize(static_alloc=True, static_shape=True)

        opt = GPT2AdamW(learning_rate=o.lr, beta1=o.beta1, beta2=o.beta2, epsilon=o.eps, wd=o.weight_decay,
                        multi_precision=(prec == "fp16"), rescale_grad=1.0)
        pdict = self.model.collect_params()
        if dist.hvd is not None:
            # train.grad_compression: fp16 halves the bytes of fp32 gradients (fp16 ones are sent as they are)
            comp = dist.hvd.Compression.fp16 if cfg.train.grad_compression == "fp16" else dist.hvd.Compression.none
            self.trainer = dist.hvd.DistributedTrainer(pdict, opt, compression=comp)
        else:
            self.trainer = gluon.Trainer(pdict, opt, kvstore=None, update_on_kvstore=False)
        self._opt = opt
        index_of = {id(p): i for i, p in enumerate(self.trainer._params)}
        self._index = {name: index_of[id(p)] for name, p in self.params.items()}
        # Create optimizer states now (not lazily at the first update) so checkpoints can fill them
        # and fp16 master weights start from the exact fp32 values.
        self._updater = self.trainer._updaters[0]
        for name, p in self.params.items():
            i = self._index[name]
            self._updater.states[i] = opt.create_state_multi_precision(i, p.data(self.ctx))
            self._updater.states_synced[i] = True
        self.set_weights(fp32_init)
        log.info("mxnet engine: %s, %s, %d parameters (%.1f M), %s", self.device_name, prec, self.num_params,
                 self.num_params / 1e6, "Horovod x%d" % dist.size if dist.hvd is not None else "single process")

    # -- device ---------------------------------------------------------------------------------
    @staticmethod
    def _pick_device(device: str, local_rank: int) -> tuple[Any, str]:
        want_gpu = device == "gpu" or (device == "auto" and gpu_info(local_rank) is not None)
        if not want_gpu:
            return mx.cpu(), "cpu"
        name = check_mxnet_supports(local_rank)   # stops on GPUs newer than MXNet's kernels
        if mx.context.num_gpus() <= local_rank:
            raise ConfigError(f"train.device={device}: no GPU {local_rank} visible to MXNet (is the mxnet "
                              "wheel a CUDA build, e.g. mxnet-cu112?); use train.device: cpu")
        return mx.gpu(local_rank), name or f"gpu{local_rank}"

    # -- training -------------------------------------------------------------------------------
    def _split(self, batch: np.ndarray) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
        b = mx.nd.array(batch, ctx=self.ctx, dtype="int32")
        return b[:, :-1], b[:, 1:]

    def _zero_grads(self) -> None:
        for p in self.params.values():
            p.zero_grad()

    def train_step(self, micro_batches: list[np.ndarray], lr: float) -> StepResult:
        mx.random.seed(_step_seed(self.seed, self._calls, self.dist.rank), ctx=self.ctx)
        self._calls += 1
        self.trainer.set_learning_rate(lr)
        tokens = sum(b.shape[0] * (b.shape[1] - 1) for b in micro_batches)
        scale = self.loss_scale
        nll_total = mx.nd.zeros((1,), ctx=self.ctx)
        for batch in micro_batches:
            x, y = self._split(batch)
            with autograd.record():
                nll = self.loss_block(x, y)                       # (1,) summed nats, fp32
                obj = nll * (scale / tokens)
            obj.backward()
            nll_total += nll
        self.trainer.allreduce_grads()
        grads = [p.grad(self.ctx) for p in self.params.values()]
        sumsq = mx.nd.sum(mx.nd.multi_sum_sq(*grads, num_arrays=len(grads)))
        sums = self.dist.allreduce_sum(np.array([float(nll_total.asscalar()), tokens]))
        loss = float(sums[0] / sums[1])
        grad_norm = math.sqrt(float(sumsq.asscalar())) * self.trainer._scale / scale
        if not math.isfinite(grad_norm):
            self._zero_grads()
            if self.precision == "fp16":
                self.loss_scale = max(MIN_LOSS_SCALE, self.loss_scale / 2)
                self._good_steps = 0
                return StepResult(loss, grad_norm, True, self.loss_scale)
            return StepResult(loss, grad_norm, False, self.loss_scale)   # no update; the loop stops
        clip = min(1.0, self.clip_norm / (grad_norm + 1e-6)) if self.clip_norm > 0 else 1.0
        self.trainer.update(batch_size=scale / clip)               # rescale_grad = _scale * clip / scale
        self._zero_grads()
        if self.precision == "fp16":
            self._good_steps += 1
            if self._good_steps >= SCALE_WINDOW:
                self.loss_scale *= 2.0
                self._good_steps = 0
        return StepResult(loss, grad_norm, False, self.loss_scale)

    def eval_loss(self, batch: np.ndarray) -> tuple[float, int]:
        x, y = self._split(batch)
        nll = self.loss_block(x, y)                                    # not recording: no dropout
        return float(nll.asscalar()), int(y.size)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        out, _ = self.model(mx.nd.array(ids, ctx=self.ctx, dtype="int32"))
        return out.astype("float32").asnumpy()

    # -- state ----------------------------------------------------------------------------------
    def _master(self, name: str):
        """The fp32 array the optimizer updates: the fp16 run's master copy, else the weight itself."""
        if self.precision == "fp16":
            return self._updater.states[self._index[name]][0]
        return self.params[name].data(self.ctx)

    def _moments(self, name: str):
        st = self._updater.states[self._index[name]]
        return st[1] if self.precision == "fp16" else st

    @staticmethod
    def _to_host(arr: "mx.nd.NDArray", out: Optional[dict[str, np.ndarray]], key: str) -> np.ndarray:
        """arr as fp32 numpy, copied into out[key] when that buffer fits (what asnumpy() does, minus
        its fresh allocation, whose page faults cost ~2 s per 1.5 GB checkpoint on the CPU)."""
        buf = None if out is None else out.get(key)
        if buf is None or buf.shape != arr.shape or buf.dtype != np.float32 or arr.dtype != np.float32:
            return arr.asnumpy().astype(np.float32, copy=False)
        mx.base.check_call(mx.base._LIB.MXNDArraySyncCopyToCPU(
            arr.handle, buf.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(buf.size)))
        return buf

    def get_weights(self, out: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
        return {n: self._to_host(self._master(n), out, n) for n in self.params}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        missing = sorted(set(self.params) - set(weights))
        extra = sorted(set(weights) - set(self.params))
        if missing or extra:
            raise ValueError(f"checkpoint weights do not fit this model: missing {missing[:5]}, unexpected "
                             f"{extra[:5]} (is model.preset/num_layers the one the checkpoint was made with?)")
        for n, p in self.params.items():
            w = np.asarray(weights[n], dtype=np.float32)
            if w.shape != p.shape:
                raise ValueError(f"checkpoint tensor {n} has shape {w.shape}, the model {p.shape}: the model "
                                 "config differs from the checkpoint's (see its state.json 'model')")
            p.set_data(mx.nd.array(w, ctx=self.ctx, dtype=p.dtype))
            if self.precision == "fp16":
                self._master(n)[:] = mx.nd.array(w, ctx=self.ctx, dtype="float32")

    def get_optimizer_state(self, out: Optional[dict[str, np.ndarray]] = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensors = {}
        for n in self.params:
            m, v = self._moments(n)
            tensors[f"exp_avg.{n}"] = self._to_host(m, out, f"exp_avg.{n}")
            tensors[f"exp_avg_sq.{n}"] = self._to_host(v, out, f"exp_avg_sq.{n}")
        scalars = {"step": int(self._opt.num_update), "loss_scale": self.loss_scale,
                   "loss_scale_good_steps": self._good_steps}
        return tensors, scalars

    def set_optimizer_state(self, tensors: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        for n, p in self.params.items():
            for key, arr in zip(("exp_avg", "exp_avg_sq"), self._moments(n)):
                t = tensors.get(f"{key}.{n}")
                if t is None or tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"checkpoint optimizer state {key}.{n} is missing or has the wrong shape")
                arr[:] = mx.nd.array(t, ctx=self.ctx, dtype="float32")
        step = int(scalars.get("step", 0))
        # the per-parameter update counts drive bias correction; MXNet keeps one dict per device and
        # re-selects it at every update, so fill the dict of this device in place
        self._opt._set_current_context(self.ctx.device_id)
        self._opt._index_update_count.update({i: step for i in self._index.values()})
        self._opt.num_update = step
        if self.precision == "fp16" and "loss_scale" in scalars:
            self.loss_scale = float(scalars["loss_scale"])
            self._good_steps = int(scalars.get("loss_scale_good_steps", 0))

    def get_rng_state(self) -> dict[str, Any]:
        # The whole RNG state is (seed, calls): every step reseeds from (seed, calls, rank).
        return {"engine": "mxnet", "scheme": "mx.random.seed(SeedSequence([seed, step, rank])) per step",
                "seed": self.seed, "calls": self._calls}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        if state.get("engine") == "mxnet":
            self._calls = int(state["calls"])
        else:   # a checkpoint from another engine: its dropout stream cannot be continued exactly
            self._calls = int(state.get("step", self._opt.num_update))
            log.warning("checkpoint RNG state is not the mxnet engine's: dropout masks restart from step %d",
                        self._calls)

    def synchronize(self) -> None:
        mx.nd.waitall()

    def memory_bytes(self) -> int:
        if self.ctx.device_type == "gpu":
            free, total = mx.context.gpu_memory_info(self.ctx.device_id)
            return int(total - free)
        import psutil
        return int(psutil.Process(os.getpid()).memory_info().rss)
