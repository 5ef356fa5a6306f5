"""Checkpoints: write, list, prune and resume, under a local directory or `s3://bucket/prefix`.

Layout (docs/CONTRACTS.md, "Checkpoints"):

    <root>/step_00001000/model.safetensors      weights, fp32, engine-neutral names
                         optimizer.safetensors  exp_avg.* / exp_avg_sq.*
                         state.json             step, cursor, rng, config, ...
                         tokenizer/             spm.model, tokenizer.json, ...
                         MANIFEST.json          {"files": {relpath: {"size", "sha256"}}}   written last
    <root>/latest                               "step_00001000", written after MANIFEST.json

Ordering is what makes a checkpoint safe to read: files, then MANIFEST.json, then `latest`. A
directory without MANIFEST.json is incomplete and ignored; `latest` only ever names a directory
whose manifest was already written. On a local root the whole directory is built under a temporary
name and renamed into place; on S3 each object appears atomically when its upload completes.

`CheckpointManager.save` copies the arrays (the training loop keeps mutating its own) and returns;
a background thread serializes them (safetensors, never pickle), hashes, uploads and prunes to
the newest `checkpoint.keep_last`. The next save waits for the previous one, and `close()` waits
for the last, so a run never exits before its final checkpoint is stored or has failed loudly.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from safetensors.numpy import save_file

from common.io import sha256_file, write_bytes_atomic
from common.log import get_logger
from common.schema import CheckpointConfig, S3Config
from pretrain.storage import LocalStorage, Storage, StorageError, open_storage

from pretrain.checkpoint_read import (  # noqa: F401 - re-exported: the one public module for checkpoints
    FORMAT, LATEST, MANIFEST, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_DIR, WEIGHTS_FILE, _MB, _STEP_RE,
    Checkpoint, CheckpointError, _Reader, load_checkpoint, parse_step, split_location, step_name)

log = get_logger(__name__)


class CheckpointWriteFailed(CheckpointError):
    """A save failed after the storage's retries (disk full, S3 unreachable or throttled too long).

    The previous checkpoint is intact and `latest` still points at it. Unlike a config error the
    cause may be gone a minute later, so the trainer exits with its own status (5) and launchers
    that restart (launch/aws/spot_run.sh) try again, resuming from that checkpoint."""


# ----------------------------------------------------------------------------------------------------
# writing


def _snapshot(arrays: Mapping[str, Any], copy: bool, what: str) -> dict[str, np.ndarray]:
    """C-contiguous numpy arrays by name; copied unless `copy=False` (the caller hands them over)."""
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype == object:
            raise CheckpointError(f"{what}[{name!r}] is not a numeric array ({type(value).__name__})")
        out[name] = np.array(a, order="C", copy=True) if copy else np.ascontiguousarray(a)
    return out


def _read_tokenizer(tokenizer_dir: Optional[str]) -> dict[str, bytes]:
    """The tokenizer directory's files (spm.model, spm.vocab, tokenizer.json, ...) by name."""
    if not tokenizer_dir:
        return {}
    p = Path(tokenizer_dir)
    if p.is_file():   # a bare tokenizer.json / .model path: take its directory
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(f"tokenizer directory {tokenizer_dir!r} does not exist: pass the "
                              "tokenizer.dir written by `make tokenizer` (or None)")
    return {f.name: f.read_bytes() for f in sorted(p.iterdir()) if f.is_file()}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):   # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_dir(out: Path, step: int, weights: dict[str, np.ndarray], optimizer: dict[str, np.ndarray],
               state_bytes: bytes, tokenizer: dict[str, bytes]) -> bytes:
    """Write a checkpoint's files into local directory `out`; returns the MANIFEST.json bytes.

    The manifest itself is not written here: the caller publishes it after the other files.
    """
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "step": str(step)}
    save_file(weights, out / WEIGHTS_FILE, metadata=meta)
    save_file(optimizer, out / OPTIMIZER_FILE, metadata=meta)
    (out / STATE_FILE).write_bytes(state_bytes)
    if tokenizer:
        (out / TOKENIZER_DIR).mkdir(exist_ok=True)
        for name, data in tokenizer.items():
            (out / TOKENIZER_DIR / name).write_bytes(data)
    files: dict[str, dict] = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            _fsync_file(p)
            files[p.relative_to(out).as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = {"format": FORMAT, "step": step, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": files}
    return (json.dumps(manifest, indent=2) + "\n").encode("utf-8")


def _publish(storage: Storage, name: str, step: int, weights: dict[str, np.ndarray],
             optimizer: dict[str, np.ndarray], state_bytes: bytes, tokenizer: dict[str, bytes],
             staging_dir: Optional[str], update_latest: bool) -> int:
    """Write checkpoint `name` under `storage`: files, MANIFEST.json, then `latest`. Returns bytes."""
    local = storage.local_path(name)
    if local is not None:
        # Build the directory under a temporary name beside its final place, then rename.
        root = Path(storage.root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            manifest = _write_dir(tmp, step, weights, optimizer, state_bytes, tokenizer)
            write_bytes_atomic(tmp / MANIFEST, manifest)
            final = Path(local)
            old = None
            if final.exists():   # re-writing a step (a resumed run): move the old one aside first
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=root))
                os.replace(final, old / name)
            os.replace(tmp, final)
            _fsync_dir(root)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        base = Path(staging_dir or tempfile.mkdtemp(prefix="kogpt-ckpt-"))
        tmp = base / name
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            manifest = _write_dir(tmp, step, weights, optimizer, state_bytes, tokenizer)
            if storage.list(name):
                # Leftovers of an earlier attempt at this step: drop its manifest first, so the
                # directory is never "complete" with a mix of old and new files.
                storage.delete(f"{name}/{MANIFEST}")
                storage.delete_prefix(name)
            rels = sorted(json.loads(manifest)["files"])
            for rel in rels:   # each file goes up in parallel parts (TransferConfig)
                storage.put_file(str(tmp / rel), f"{name}/{rel}")
            storage.put_bytes(f"{name}/{MANIFEST}", manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if not staging_dir:
                shutil.rmtree(base, ignore_errors=True)
    if update_latest:
        storage.put_bytes(LATEST, (name + "\n").encode())
    return sum(f["size"] for f in json.loads(manifest)["files"].values())


def _state_bytes(step: int, state: Mapping[str, Any]) -> bytes:
    st = dict(state)
    st.setdefault("format", FORMAT)
    st.setdefault("step", int(step))
    if int(st["step"]) != int(step):
        raise CheckpointError(f"state['step']={st['step']} differs from the step argument {step}")
    try:
        return (json.dumps(st, indent=2, ensure_ascii=False, allow_nan=True) + "\n").encode("utf-8")
    except TypeError as e:
        raise CheckpointError(f"checkpoint state is not JSON-serializable ({e}); convert numpy "
                              "scalars/arrays to Python numbers/lists before save()") from None


def write_checkpoint(location: str, weights: Mapping[str, Any], optimizer: Mapping[str, Any],
                     state: Mapping[str, Any], tokenizer_dir: Optional[str],
                     s3cfg: Optional[S3Config] = None, update_latest: bool = False) -> str:
    """Write one checkpoint synchronously to `location` (a local directory or s3:// URL).

    `latest` in the parent is updated only when `update_latest` is set. Returns `location`.
    """
    root, name = split_location(location)
    step = int(state.get("step", parse_step(name) or 0))
    storage = open_storage(root, s3cfg)
    try:
        _publish(storage, name, step, _snapshot(weights, False, "weights"),
                 _snapshot(optimizer, False, "optimizer"), _state_bytes(step, state),
                 _read_tokenizer(tokenizer_dir), None, update_latest)
    finally:
        storage.close()
    return storage.url(name)


# ----------------------------------------------------------------------------------------------------
# the manager the training loop uses


class CheckpointManager:
    """Saves in the background (rank 0 only), prunes to `keep_last`, resolves and loads resumes.

    save() blocks only for the copy of the arrays; a background thread writes safetensors to the
    local staging directory (S3) or a temporary directory beside the root (local), hashes every
    file, publishes files -> MANIFEST.json -> latest and prunes. A failure is logged at once and
    raised from the next save(), wait() or close().
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
        try:
            t0 = time.perf_counter()
            nbytes = _publish(self.storage, name, step, w, o, state_bytes, tok,
                              self.staging_dir, update_latest=True)
            dt = time.perf_counter() - t0
            log.info("checkpoint %s complete: %.1f MB in %.2f s (%.1f MB/s)", self.storage.url(name),
                     nbytes / 1e6, dt, nbytes / 1e6 / max(dt, 1e-9))
            self.last_saved_step = step
            self._prune(step)
        except BaseException as e:   # kept for the next save()/wait(); logged now so it is never silent
            log.error("checkpoint %s FAILED: %s (latest still points at the previous checkpoint)",
                      self.storage.url(name), e)
            self._error = e

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
        keep = [n for n in older if dirs[n]][: max(0, self.cfg.keep_last - 1)]
        for n in older:
            if n in keep:
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
            return self._reader.newest_complete(self.storage)
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
