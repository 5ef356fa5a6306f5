"""The training loop, shared by both engines: data order, schedule, eval, logging, checkpoints.

`run(cfg)` trains to `train.max_steps` and returns; errors a user can fix are raised as exceptions
with the fix in the message (pretrain/train/cli.py turns them into an exit status). Under Horovod every
rank learns of a failure on any rank at the next step boundary and raises with the same status
(pretrain/train/status.py: one small allreduce per step). It never asks which
engine or backend it runs on: it talks to an `Engine` (pretrain/engines/base.py) and a `Dist`.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import asdict
from typing import Any, Optional

import numpy as np

from common.config import ConfigError, save_resolved, to_dict
from pretrain.train.data import DataError, WindowDataset
from pretrain.train.dist import Dist
from pretrain.engines.base import tensor_shapes
from pretrain.train.metrics import MetricsWriter, flops_per_token, fmt_bytes, mfu
from pretrain.train.schedule import lr_at
from pretrain.train.status import (StopRequested, TrainingDiverged, agree, agreed,  # noqa: F401 (re-exported)
                                   mark_agreed)

log = logging.getLogger("pretrain.train")

STATE_FORMAT = "kogpt-ckpt-v1"


class _StopSignal:
    """Remembers SIGTERM/SIGUSR1 instead of dying mid-step; the loop checks it at step boundaries."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._old = {}
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:        # not the main thread (e.g. called from a test harness)
                pass

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """One run. `Trainer(cfg, dist).run()`; attributes hold the live counters (step, cursor, ...)."""

    def __init__(self, cfg: Any, dist: Dist):
        from pretrain.engines import create_engine

        self.cfg, self.dist = cfg, dist
        error: Optional[Exception] = None
        try:
            self._setup_local()
        except Exception as e:      # told to every rank before the engine's first collective
            error = e
        agree(dist, error)
        self.engine = create_engine(cfg, dist, self.vocab_size)
        self.step = 0
        self.cursor = 0
        self.tokens_seen = 0
        self.skipped = 0
        self.resumed_step: Optional[int] = None
        self.fpt = flops_per_token(self.engine.num_params, cfg.model.num_layers, cfg.model.units, self.seq_len)

    def _setup_local(self) -> None:
        """Everything before the first collective: tokenizer, data, checkpoint root, metrics file.
        Any of it may fail on one rank only (a host without the shards, an S3 check that fails)."""
        from corpus.tokenizer import Tokenizer
        from pretrain.checkpoint import CheckpointManager

        cfg, dist = self.cfg, self.dist
        t = cfg.train
        self.seq_len = t.seq_len or cfg.model.max_length
        self.accum = t.accumulation(dist.size)      # validates global = micro x accum x workers
        tok_path = cfg.tokenizer.model or cfg.tokenizer.dir
        self.tokenizer = Tokenizer.load(tok_path)
        vocab = cfg.model.vocab_size or self.tokenizer.vocab_size
        if vocab < self.tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={vocab} is smaller than the tokenizer's {self.tokenizer.vocab_size} "
                              f"({tok_path}); set model.vocab_size: 0 to use the tokenizer's")
        self.vocab_size = vocab
        self.train_data = WindowDataset(t.shards, "train", self.seq_len, t.seed, self.tokenizer.sha256, vocab)
        try:
            self.valid_data: Optional[WindowDataset] = WindowDataset(t.shards, "valid", self.seq_len, t.seed,
                                                                     self.tokenizer.sha256, vocab)
        except DataError as e:
            log.warning("no validation: %s", e)
            self.valid_data = None
        self.tok_dir = os.path.join(t.out_dir, "tokenizer")
        if dist.is_root:                  # copied once so every checkpoint is self-contained
            os.makedirs(t.out_dir, exist_ok=True)
            self.tokenizer.save(self.tok_dir)
            save_resolved(cfg, os.path.join(t.out_dir, "config.yaml"))
        self.cm = CheckpointManager(cfg.checkpoint, t.out_dir, is_writer=dist.is_root)
        self.metrics = MetricsWriter(t.out_dir, dist.is_root, cfg.log.tensorboard)

    # -- resume ---------------------------------------------------------------------------------
    def resume(self) -> None:
        """Resume per `checkpoint.resume` (or initialise from `init_from`). Rank 0 finds the checkpoint,
        every rank loads and verifies it; a failure on any rank stops all of them with its status."""
        ck_cfg = self.cfg.checkpoint
        where, error = None, None
        if self.dist.is_root:
            try:
                where = self.cm.resolve_resume(ck_cfg.resume)
            except Exception as e:
                error = e
        agree(self.dist, error)
        where = self.dist.broadcast_object(where)
        error = None
        try:
            self._load(where)
        except Exception as e:
            error = e
        agree(self.dist, error)

    def _load(self, where: Optional[str]) -> None:
        ck_cfg = self.cfg.checkpoint
        if where is None:
            if ck_cfg.init_from:
                from pretrain.checkpoint import load_checkpoint
                ck = load_checkpoint(ck_cfg.init_from, ck_cfg.s3)
                self._check_tokenizer(ck.state, ck.location, "checkpoint.init_from: ''")
                self.engine.set_weights(ck.weights)
                log.info("initialised weights from %s (fresh optimizer, step 0)", ck.location)
            else:
                log.info("starting from scratch (checkpoint.resume=%s found nothing)", ck_cfg.resume)
            return
        # every rank needs the checkpoint; from S3 only local rank 0 of each node downloads it
        from pretrain.checkpoint.node_local import load_once_per_node
        ck = load_once_per_node(self.cm, where, self.dist, ck_cfg.node_cache_dir)
        st = ck.state
        self._check_tokenizer(st, where, "checkpoint.resume: none")
        self.engine.set_weights(ck.weights)
        self.engine.set_optimizer_state(ck.optimizer, st.get("optimizer", {}))
        self.engine.set_rng_state(st.get("rng", {}))
        self.step, self.cursor = int(st["step"]), int(st["sample_cursor"])
        self.tokens_seen, self.skipped = int(st["tokens_seen"]), int(st.get("skipped_steps", 0))
        self.resumed_step = self.step
        if st.get("world_size") and st.get("world_size") != self.dist.size:
            log.info("resuming a %s-worker run on %d workers: the data continues from global sample %d",
                     st.get("world_size"), self.dist.size, self.cursor)
        log.info("resumed from %s: step %d, %d tokens seen, sample cursor %d", ck.location, self.step,
                 self.tokens_seen, self.cursor)

    def _check_tokenizer(self, state: dict, where: str, alternative: str) -> None:
        """Ids only mean something with the tokenizer that made them: refuse a mismatched checkpoint."""
        theirs = state.get("tokenizer_sha256")
        if theirs != self.tokenizer.sha256:
            raise ConfigError(f"checkpoint {where} was trained with tokenizer sha256 {str(theirs)[:12]}.., the "
                              f"config's tokenizer has {self.tokenizer.sha256[:12]}..: use the checkpoint's "
                              f"tokenizer/ directory (tokenizer.dir or tokenizer.model) or set {alternative}")

    def save(self) -> None:
        """Checkpoint the current step. Only the writer (rank 0) copies the state to host memory, into
        the checkpoint manager's buffers, reused from save to save; the write or upload then runs in
        the background (pretrain/checkpoint/manager.py)."""
        if not self.dist.is_root:
            return
        # The step's own queued work (MXNet runs the optimizer update asynchronously: ~3 s for the base
        # model on the 2-core CPU) is training time, not checkpoint time: finish it before timing.
        self.engine.synchronize()
        t0 = time.perf_counter()
        host = self.cm.buffers()           # after the previous save's files were written from them
        waited = time.perf_counter() - t0
        tensors, scalars = self.engine.get_optimizer_state(out=host)
        weights = self.engine.get_weights(out=host)
        host.update(tensors)               # arrays the engine had to allocate become the buffers
        host.update(weights)
        m = self.cfg.model
        state = {
            "format": STATE_FORMAT, "step": self.step, "tokens_seen": self.tokens_seen,
            "sample_cursor": self.cursor, "engine": self.engine.name, "world_size": self.dist.size,
            "rng": self.engine.get_rng_state(), "loss_scale": float(scalars.get("loss_scale", 1.0)),
            "skipped_steps": self.skipped, "tokenizer_sha256": self.tokenizer.sha256,
            "optimizer": scalars, "seq_len": self.seq_len, "global_batch": self.cfg.train.global_batch,
            "model": dict(asdict(m), vocab_size=self.vocab_size, tie_embeddings=True),
            "config": to_dict(self.cfg),
        }
        self.cm.save(self.step, weights, tensors, state, self.tok_dir, copy=False)
        blocked = time.perf_counter() - t0
        log.info("checkpoint step %d: training blocked %.3f s (%.3f s waiting for the previous checkpoint's "
                 "files, then the state to host memory; files written in the background)", self.step, blocked, waited)
        self.metrics.write("checkpoint", self.step, {"blocked_s": blocked, "waited_for_previous_s": waited})
        self._write_metrics()

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> Optional[float]:
        if self.valid_data is None:
            return None
        t = self.cfg.train
        nll, n = 0.0, 0
        t0 = time.perf_counter()
        for batch in self.valid_data.eval_batches(self.dist.rank, self.dist.size, t.micro_batch, t.eval_batches):
            s, k = self.engine.eval_loss(batch)
            nll, n = nll + s, n + k
        nll, n = self.dist.allreduce_sum(np.array([nll, n]))
        loss = float(nll / max(n, 1))
        ppl = math.exp(loss) if loss < 700 else float("inf")
        log.info("eval step %d | valid_loss %.4f nats/token | valid_ppl %.2f | %d tokens in %.1f s",
                 self.step, loss, ppl, int(n), time.perf_counter() - t0)
        self.metrics.write("eval", self.step, {"valid_loss": loss, "valid_ppl": ppl, "valid_tokens": int(n),
                                               "tokens_seen": self.tokens_seen})
        return loss

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        t, dist = self.cfg.train, self.dist
        g = t.global_batch
        log.info("training %s: %d steps x %d sequences x %d tokens (micro %d x accum %d x %d workers), "
                 "%.1f M params, %.3g FLOPs/token", self.cfg.name, t.max_steps, g, self.seq_len, t.micro_batch,
                 self.accum, dist.size, self.engine.num_params / 1e6, self.fpt)
        # train.stop_after ends this job early (after a checkpoint); the schedule still spans max_steps
        end = min(t.max_steps, t.stop_after) if t.stop_after > 0 else t.max_steps
        if end < t.max_steps:
            log.info("train.stop_after=%d: this job stops at step %d of %d (resume continues)", end, end, t.max_steps)
        if dist.is_root:
            # touch the snapshot buffers in the background now: even the first save then only copies
            m = self.cfg.model
            shapes = tensor_shapes(m.units, m.num_layers, m.max_length, self.vocab_size)
            moments = {f"{k}.{n}": shape for n, shape in shapes.items() for k in ("exp_avg", "exp_avg_sq")}
            self.cm.reserve({**shapes, **moments})
        stop = _StopSignal()
        try:
            self._loop(end, stop)
        finally:
            stop.restore()

    def _fetch(self) -> list:
        t = self.cfg.train
        return self.train_data.batch_for_step(self.cursor, self.dist.rank, self.dist.size, t.micro_batch, self.accum)

    def _check_step(self, res: Any, lr: float, save_due: bool) -> None:
        """What a rank may find after a step: divergence, the previous checkpoint's write failed
        (rank 0; waits for it when this step saves again). Raises; `agree` then tells every rank."""
        if res.skipped:
            self.skipped += 1
            log.warning("step %d skipped: fp16 gradient overflow, loss scale now %g (%d skipped so far)",
                        self.step, res.loss_scale, self.skipped)
        elif not (math.isfinite(res.loss) and math.isfinite(res.grad_norm)):
            last = self.cm.last_saved_step if self.dist.is_root else None
            raise TrainingDiverged(
                f"step {self.step}: loss {res.loss} / grad norm {res.grad_norm} is not finite in "
                f"{self.engine.precision} (lr {lr:.3g}). The run stops; the last good checkpoint "
                f"({'step %d' % last if last is not None else 'none written by this process'}) under "
                f"{self.cfg.checkpoint.root} is intact. Lower optim.lr, raise optim.warmup_steps or check "
                "the data, then resume (checkpoint.resume: auto)")
        if self.dist.is_root:
            self.cm.poll(block=save_due)
            self._write_metrics()

    def _write_metrics(self) -> None:
        """metrics.jsonl records of the checkpoint writes that finished in the background since the last call."""
        for rec in self.cm.pop_completed():
            self.metrics.write("checkpoint_write", rec.pop("step"), rec)

    def _loop(self, end: int, stop: "_StopSignal") -> None:
        t, dist = self.cfg.train, self.dist
        g = t.global_batch
        every = self.cfg.checkpoint.every_steps
        losses: list[float] = []
        t_last, tok_last = time.perf_counter(), self.tokens_seen
        last_eval = -1
        last_ckpt = self.resumed_step if self.resumed_step is not None else -1   # that one exists already
        # The next step's batches are read before the step boundary, so that a rank that cannot read
        # them stops every rank there (agree) instead of leaving them waiting in the gradient allreduce.
        batches, error = None, None
        try:
            batches = self._fetch() if self.step < end else None
        except Exception as e:
            error = e
        stopping = agree(dist, error, stop=stop.received is not None)
        while self.step < end and not stopping:
            lr = lr_at(self.step, self.cfg.optim, t.max_steps)
            cursor_before = self.cursor
            res = self.engine.train_step(batches, lr)
            self.step += 1
            self.cursor += g
            self.tokens_seen += g * self.seq_len
            error = None
            if not res.skipped:
                losses.append(res.loss)        # logged below even when this step diverged (NaN)
            try:
                self._check_step(res, lr, save_due=bool(every and self.step % every == 0) or self.step == end
                                 or stop.received is not None)
                batches = self._fetch() if self.step < end else None
            except Exception as e:
                error = e
            if self.step % t.log_every == 0 or self.step == end:
                now = time.perf_counter()
                tps = (self.tokens_seen - tok_last) / max(now - t_last, 1e-9)
                t_last, tok_last = now, self.tokens_seen
                frac = mfu(tps, self.fpt, self.engine.device_name, dist.size)
                mem = self.engine.memory_bytes()
                loss = float(np.mean(losses)) if losses else float("nan")
                losses = []
                log.info("step %d/%d | loss %.4f | lr %.3e | grad_norm %.3f | %s tok/s | MFU %s | loss_scale %g "
                         "| mem %s | skipped %d", self.step, t.max_steps, loss, lr, res.grad_norm, f"{tps:,.0f}",
                         "n/a" if frac is None else f"{100 * frac:.1f}%", res.loss_scale, fmt_bytes(mem),
                         self.skipped)
                self.metrics.write("train", self.step, {
                    "loss": loss, "lr": lr, "grad_norm": res.grad_norm, "tokens_per_s": tps, "mfu": frac,
                    "loss_scale": res.loss_scale, "memory_bytes": mem, "tokens_seen": self.tokens_seen,
                    "sample_cursor": cursor_before, "skipped_steps": self.skipped})
            # The step boundary (after the step's own log line): one small allreduce tells every rank
            # about signals and failures.
            stopping = agree(dist, error, stop=stop.received is not None)
            if stopping:
                break
            if t.eval_every and self.step % t.eval_every == 0:
                self.evaluate()
                last_eval = self.step
            if every and self.step % every == 0:
                self.save()
                last_ckpt = self.step
        if stopping:
            # Every rank stops at the same step, though a signal may have reached only some.
            if last_ckpt != self.step:
                self.save()
            raise mark_agreed(StopRequested(
                f"stopped by signal at step {self.step} after saving a checkpoint under "
                f"{self.cfg.checkpoint.root}; run again (checkpoint.resume: auto) to continue"))
        if last_eval != self.step:
            self.evaluate()
        if last_ckpt != self.step:
            self.save()

    def finish(self, error: Optional[BaseException]) -> None:
        """The end of every run that is still in step on all ranks: rank 0 waits for its last checkpoint
        write (a failure becomes exit 5), then every rank agrees on the outcome, so all exit alike."""
        if self.dist.is_root:
            try:
                self.cm.wait()
            except Exception as e:
                error = e if error is None or isinstance(error, StopRequested) else error
            self._write_metrics()
        agree(self.dist, error if isinstance(error, Exception) else None)
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.cm.close()
        finally:
            self.metrics.close()


def run(cfg: Any, dist: Dist) -> Trainer:
    """Build, resume and train; the checkpoint manager is closed (last save finished) on the way out.
    Errors leave every rank with the same exception status (pretrain/train/status.py)."""
    tr = Trainer(cfg, dist)
    try:
        error: Optional[BaseException] = None
        try:
            tr.resume()
            tr.run()
        except Exception as e:
            error = e
        if error is None or agreed(error):
            tr.finish(error)       # collectives still line up: one last agreement
        else:
            raise error            # a rank left mid-collective (a bug, a crash): no agreement possible
    finally:
        tr.close()
    return tr
