"""CheckpointManager: what the training loop uses to save (in the background), list, prune and resume.

See pretrain/checkpoint/__init__.py for the layout and the write order that makes checkpoints safe."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from common.log import get_logger
from common.schema import CheckpointConfig
from pretrain.checkpoint.storage import LocalStorage, StorageError

from pretrain.checkpoint.reader import (
    MANIFEST, Checkpoint, CheckpointError, _Reader, parse_step, step_name)

from pretrain.checkpoint.writer import (  # the writing steps the manager runs in its thread
    CheckpointWriteFailed, _publish, _read_tokenizer, _snapshot, _state_bytes)

log = get_logger(__name__)


# ----------------------------------------------------------------------------------------------------
# the manager the training loop uses


class CheckpointManager:
    """Saves in the background (rank 0 only), prunes to `keep_last`, resolves and loads resumes.

    save() blocks only for the copy of the arrays; a background thread writes safetensors to the
    local staging directory (S3) or a temporary directory beside the root (local), hashes every
    file, publishes files -> MANIFEST.json -> latest and prunes. A failure is logged at once and
    raised from the next poll(), save(), wait() or close(). While a write moves no byte for
    `checkpoint.stall_warn_s` a watchdog thread warns; finished writes' seconds, bytes and retried
    requests wait in pop_completed() for metrics.jsonl. The writer aborts multipart uploads that a
    killed writer left open under the root when it starts.
    """

    def __init__(self, cfg: CheckpointConfig, out_dir: str, is_writer: bool):
        self.cfg = cfg
        self.is_writer = bool(is_writer)
        self.staging_dir = cfg.staging_dir or os.path.join(out_dir, "staging")
        self._reader = _Reader(cfg.s3, os.path.join(self.staging_dir, "download"))
        try:
            # Opening checks credentials and the bucket now, not at the first checkpoint.
            self.storage = self._reader.storage(cfg.root)
        except StorageError as e:
            raise CheckpointError(f"checkpoint.root={cfg.root!r}: {e}") from None
        if self.is_writer and isinstance(self.storage, LocalStorage):
            Path(self.storage.root).mkdir(parents=True, exist_ok=True)
        if self.is_writer:
            self._abort_unfinished_uploads()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._pending_step: Optional[int] = None
        self.last_saved_step: Optional[int] = None
        self.last_blocked_s = 0.0
        # Snapshot buffers by tensor name (weights and `exp_avg.*` names never clash), reused from save
        # to save: copying into memory that is already mapped runs at memcpy speed (~0.15 s for 1.5 GB
        # on the 2-core VM), while a fresh allocation pays a page fault per 4 KiB (~3.5 s for 1.5 GB
        # there). Costs one model+optimizer of RAM on the writer.
        self._pool: dict[str, np.ndarray] = {}
        # Checkpoint names under the root that had a MANIFEST.json but failed verification when the
        # resume looked at them: never pruned (they are evidence, and were not ours to delete).
        self._rejected: dict[str, str] = {}
        # What the stall watchdog and metrics.jsonl see of the write in flight, and of finished ones.
        self._progress_lock = threading.Lock()
        self._last_progress = 0.0
        self._moved = 0
        self._completed: list[dict[str, Any]] = []
        self.storage.on_progress = self._on_progress

    def _snapshot(self, arrays: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            a = np.asarray(value)
            if a.dtype == object:
                raise CheckpointError(f"{what}[{name!r}] is not a numeric array ({type(value).__name__})")
            buf = self._pool.get(name)
            if buf is None or buf.shape != a.shape or buf.dtype != a.dtype:
                buf = self._pool[name] = np.empty(a.shape, a.dtype)
            np.copyto(buf, a)
            out[name] = buf
        return out

    def reserve(self, shapes: Mapping[str, tuple[int, ...]], dtype: Any = np.float32) -> None:
        """Optional: allocate and touch the snapshot buffers in the background now, so that even the
        first save() blocks only for a memcopy. `shapes`: tensor name -> shape, weights and optimizer
        state together (pretrain.engines.base.tensor_shapes gives a GPT-2's)."""
        if not self.is_writer:
            return
        self.wait()
        todo = [(name, tuple(shape)) for name, shape in shapes.items()]

        def touch() -> None:
            for name, shape in todo:
                buf = np.empty(shape, dtype)
                buf.fill(0)
                self._pool[name] = buf

        self._thread = threading.Thread(target=touch, name="checkpoint-reserve", daemon=True)
        self._thread.start()

    def buffers(self) -> dict[str, np.ndarray]:
        """The snapshot buffers (tensor name -> array), for an engine to copy its state straight into
        (`get_weights(out=...)`), then save(copy=False) with the arrays it returns. Waits until no
        save or reserve() is using them; raises like wait() if the previous save failed."""
        self.wait()
        return self._pool

    # -- saving ---------------------------------------------------------------------------------

    def save(self, step: int, weights: Mapping[str, Any], optimizer: Mapping[str, Any],
             state: dict, tokenizer_dir: Optional[str], copy: bool = True) -> None:
        """Snapshot and return; the write/upload runs in the background (see class doc).

        weights/optimizer: {name: array} (fp32, shapes as in docs/CONTRACTS.md); `copy=False` when
        the arrays are fresh copies nobody mutates (e.g. from NDArray.asnumpy()), saving a memcopy.
        state: JSON-serializable dict (state.json). Non-writer ranks return at once.
        """
        if not self.is_writer:
            return
        self.wait()
        t0 = time.perf_counter()
        if copy:
            w, o = self._snapshot(weights, "weights"), self._snapshot(optimizer, "optimizer")
        else:
            w, o = _snapshot(weights, False, "weights"), _snapshot(optimizer, False, "optimizer")
        state_bytes = _state_bytes(step, state)
        tok = _read_tokenizer(tokenizer_dir)
        self._pending_step = int(step)
        if self.cfg.async_upload:
            self._thread = threading.Thread(target=self._job, args=(int(step), w, o, state_bytes, tok),
                                            name=f"checkpoint-{step}", daemon=False)
            self._thread.start()
            self.last_blocked_s = time.perf_counter() - t0
            nbytes = sum(a.nbytes for a in w.values()) + sum(a.nbytes for a in o.values())
            log.info("checkpoint step %d: snapshot %.1f MB in %.3f s, writing to %s in the background",
                     step, nbytes / 1e6, self.last_blocked_s, self.storage.url(step_name(step)))
        else:
            self._job(int(step), w, o, state_bytes, tok)
            self.last_blocked_s = time.perf_counter() - t0
            self.wait()

    def _job(self, step: int, w: dict, o: dict, state_bytes: bytes, tok: dict) -> None:
        name = step_name(step)
        retries0 = self.storage.retries
        t0 = time.perf_counter()
        with self._progress_lock:
            self._last_progress, self._moved = t0, 0
        done = threading.Event()
        stalls: list[float] = [0.0]
        watchdog = threading.Thread(target=self._watchdog, args=(name, t0, done, stalls),
                                    name=f"checkpoint-watchdog-{step}", daemon=True)
        watchdog.start()
        try:
            if name in self._rejected:
                self._set_aside(name)
            timings: dict[str, float] = {}
            nbytes = _publish(self.storage, name, step, w, o, state_bytes, tok,
                              self.staging_dir, update_latest=True, timings=timings)
            dt = time.perf_counter() - t0
            retries = self.storage.retries - retries0
            log.info("checkpoint %s complete: %.1f MB in %.2f s (%.1f MB/s)%s", self.storage.url(name),
                     nbytes / 1e6, dt, nbytes / 1e6 / max(dt, 1e-9),
                     f", {retries} request(s) retried" if retries else "")
            self.last_saved_step = step
            self._rejected.pop(name, None)    # replaced by a checkpoint that verifies
            with self._progress_lock:
                self._completed.append({"step": step, "write_s": dt, "serialize_s": timings["serialize_s"],
                                        "upload_s": timings["publish_s"], "bytes": nbytes, "retries": retries,
                                        "longest_stall_s": stalls[0]})
            self._prune(step)
        except BaseException as e:   # kept for the next save()/wait(); logged now so it is never silent
            log.error("checkpoint %s FAILED after %.1f s and %d retried request(s): %s (latest still points "
                      "at the previous checkpoint)", self.storage.url(name), time.perf_counter() - t0,
                      self.storage.retries - retries0, e)
            self._error = e
        finally:
            done.set()

    def _set_aside(self, name: str) -> None:
        """This run reached the step of a checkpoint that failed verification at resume: move it to
        `<name>.damaged[-N]` (never listed, resumed from or pruned) instead of writing over it, so what
        may be the only copy of that training state is left for the user to inspect or repair."""
        aside, k = f"{name}.damaged", 1
        while self.storage.list(aside):
            k += 1
            aside = f"{name}.damaged-{k}"
        n = self.storage.move_prefix(name, aside)
        log.warning("checkpoint %s failed verification at resume (%s); moved its %d file(s) to %s before "
                    "writing this step (delete it when you no longer need it)", self.storage.url(name),
                    self._rejected.pop(name), n, self.storage.url(aside))

    def _on_progress(self, nbytes: int) -> None:
        """Storage callback (upload threads): bytes moved; any call counts as progress."""
        with self._progress_lock:
            self._last_progress = time.perf_counter()
            self._moved += max(0, int(nbytes))

    def _watchdog(self, name: str, t0: float, done: threading.Event, stalls: list[float]) -> None:
        """Warn while a write is stalled: no byte written or uploaded for `checkpoint.stall_warn_s`
        seconds (a hung endpoint, a retry loop, a full disk). Warns again every period it stays so."""
        period = float(self.cfg.stall_warn_s)
        warned_at = 0.0
        while not done.wait(min(1.0, period / 4)):
            now = time.perf_counter()
            with self._progress_lock:
                idle, moved = now - self._last_progress, self._moved
            stalls[0] = max(stalls[0], idle)
            if idle >= period and now - warned_at >= period:
                warned_at = now
                log.warning("checkpoint %s: stalled, nothing written or uploaded for %.0f s (%.1f MB moved "
                            "in %.0f s so far, %d request(s) retried since start); training goes on, the "
                            "next checkpoint waits for this one", self.storage.url(name), idle, moved / 1e6,
                            now - t0, self.storage.retries)

    def _abort_unfinished_uploads(self) -> None:
        try:
            n = self.storage.abort_unfinished_uploads()
        except StorageError as e:   # e.g. no s3:ListBucketMultipartUploads in the policy: not fatal
            log.warning("could not clean unfinished uploads under %s (%s); a lifecycle rule that aborts "
                        "incomplete multipart uploads removes them (docs/S3.md)", self.cfg.root, e)
            return
        if n:
            log.warning("aborted %d unfinished multipart upload(s) under %s left by an interrupted checkpoint "
                        "write (their objects never became visible)", n, self.cfg.root)

    def pop_completed(self) -> list[dict[str, Any]]:
        """Figures of the writes finished since the last call, for metrics.jsonl: {step, write_s (all of
        it), serialize_s (files written and hashed locally), upload_s (uploaded, or renamed into place
        on a local root, through `latest`), bytes, retries (S3 requests retried), longest_stall_s}."""
        with self._progress_lock:
            out, self._completed = self._completed, []
        return out

    def poll(self, block: bool = False) -> None:
        """Raise CheckpointWriteFailed if the write in flight has failed; `block` waits for it first."""
        if block or self._thread is None or not self._thread.is_alive():
            self.wait()

    def _prune(self, new_step: int) -> None:
        """Keep the newest `keep_last` complete checkpoints up to `new_step`; drop older/incomplete."""
        s = self.storage
        keys = s.list()
        dirs: dict[str, bool] = {}
        for k in keys:
            top, _, rest = k.partition("/")
            if parse_step(top) is not None:
                dirs[top] = dirs.get(top, False) or rest == MANIFEST
        older = sorted((n for n in dirs if parse_step(n) < new_step), key=parse_step, reverse=True)
        keep = [n for n in older if dirs[n] and n not in self._rejected][: max(0, self.cfg.keep_last - 1)]
        for n in older:
            if n in keep:
                continue
            if n in self._rejected:   # failed verification: not ours to delete
                continue
            s.delete(f"{n}/{MANIFEST}")   # first, so a half-deleted checkpoint is never "complete"
            removed = s.delete_prefix(n)
            log.info("pruned %s (%d files, %s)", s.url(n), removed, "complete" if dirs[n] else "incomplete")
        if isinstance(s, LocalStorage):   # temporary directories of saves killed before their rename
            for e in os.scandir(s.root):
                if e.is_dir() and e.name.startswith(".step_") and (".tmp-" in e.name or ".old-" in e.name):
                    shutil.rmtree(e.path, ignore_errors=True)

    def wait(self) -> None:
        """Block until the pending save finished; raise CheckpointError if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointWriteFailed(f"checkpoint {step_name(self._pending_step or 0)} under "
                                        f"{self.cfg.root} failed: {err}") from err

    def close(self) -> None:
        """wait() for the last save and release connections; call before the run exits."""
        try:
            self.wait()
        finally:
            self._reader.close()

    # -- resuming -------------------------------------------------------------------------------

    def resolve_resume(self, resume: str) -> Optional[str]:
        """`none` -> None; `auto` -> newest complete checkpoint under the root (or None);
        a PATH (step directory or root, local or s3://) -> that checkpoint, or CheckpointError."""
        if resume in ("none", ""):
            return None
        if resume == "auto":
            found = self._reader.newest_complete(self.storage)
            self._rejected = {n: why for n, why in self._reader.rejected.items()
                              if self.storage.exists(f"{n}/{MANIFEST}")}
            if found is None and self._rejected:
                # Checkpoints exist but none verifies: starting over would move `latest` and later
                # prune or overwrite them. Stop and let the user choose.
                lines = "\n".join(f"  {self.storage.url(n)}: {why}" for n, why in sorted(self._rejected.items()))
                raise CheckpointError(
                    f"checkpoint.resume=auto: {self.storage.root} holds checkpoints but none verifies:\n{lines}\n"
                    "Nothing was changed. Set checkpoint.resume: none to start over on purpose (the new run's "
                    "checkpoints then replace and prune these as it reaches their steps), checkpoint.resume: "
                    "PATH to resume from a checkpoint elsewhere, or another checkpoint.root to keep them")
            return found
        try:
            return self._reader.resolve(resume)
        except StorageError as e:
            raise CheckpointError(f"checkpoint.resume={resume!r}: {e}") from None

    def load(self, location: str) -> Checkpoint:
        """Load a checkpoint after verifying every file's size and sha256 (works on any rank)."""
        return self._reader.load(location)

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
