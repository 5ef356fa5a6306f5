"""Writing one checkpoint: snapshot the arrays, serialize (safetensors), hash, upload the files, then
MANIFEST.json, then `latest` (the order in pretrain/checkpoint/__init__.py)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from common.io import sha256_file, write_bytes_atomic
from common.log import get_logger
from common.schema import S3Config
from pretrain.checkpoint.storage import Storage, open_storage

from pretrain.checkpoint.reader import (
    FORMAT, LATEST, MANIFEST, OPTIMIZER_FILE, STATE_FILE, TOKENIZER_DIR, WEIGHTS_FILE, CheckpointError, parse_step, split_location)

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


_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
                       "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
                       "uint8": "U8", "bool": "BOOL"}


def save_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file whose bytes depend only on the tensors and the metadata.

    safetensors' own writer keeps `__metadata__` in a hash map whose order changes from process to
    process, so identical checkpoints got different sha256. Here the header is JSON with sorted keys
    and no spaces, padded with spaces to a multiple of 8 bytes (the format's alignment), and the data
    follows in tensor-name order, little-endian, C order; safetensors' readers load it as their own.
    """
    arrays = {name: np.asarray(tensors[name]) for name in sorted(tensors)}
    header: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in sorted(metadata.items())}}
    offset = 0
    for name, a in arrays.items():
        dtype = _SAFETENSORS_DTYPES.get(a.dtype.name)
        if dtype is None:
            raise CheckpointError(f"tensor {name!r} has dtype {a.dtype}, which a checkpoint cannot hold "
                                  f"(use one of {', '.join(sorted(_SAFETENSORS_DTYPES))})")
        if a.dtype.byteorder == ">" or not a.flags.c_contiguous:    # (ascontiguousarray makes 0-d 1-d)
            arrays[name] = a = a.astype(a.dtype.newbyteorder("<"), order="C")
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for a in arrays.values():
            if a.nbytes:
                f.write(memoryview(a.reshape(-1)).cast("B"))


def _write_dir(out: Path, step: int, weights: dict[str, np.ndarray], optimizer: dict[str, np.ndarray],
               state_bytes: bytes, tokenizer: dict[str, bytes],
               progress: Optional[Callable[[int], None]] = None) -> bytes:
    """Write a checkpoint's files into local directory `out`; returns the MANIFEST.json bytes.

    The manifest itself is not written here: the caller publishes it after the other files. Every
    file's bytes depend only on the arrays and state (no time stamps), so identical runs write
    byte-identical checkpoints. `progress(nbytes)` is called after each file is written and hashed.
    """
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "step": str(step)}
    save_safetensors(out / WEIGHTS_FILE, weights, meta)
    save_safetensors(out / OPTIMIZER_FILE, optimizer, meta)
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
            if progress is not None:
                progress(p.stat().st_size)
    manifest = {"format": FORMAT, "step": step, "files": files}
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _publish(storage: Storage, name: str, step: int, weights: dict[str, np.ndarray],
             optimizer: dict[str, np.ndarray], state_bytes: bytes, tokenizer: dict[str, bytes],
             staging_dir: Optional[str], update_latest: bool, timings: Optional[dict] = None) -> int:
    """Write checkpoint `name` under `storage`: files, MANIFEST.json, then `latest`. Returns bytes.
    `storage.on_progress`, when set, hears of every file written locally and every byte uploaded;
    `timings`, when given, gets "serialize_s" (files written and hashed locally) and "publish_s"
    (uploaded, or renamed into place, through `latest`), in seconds."""
    t0 = time.perf_counter()
    local = storage.local_path(name)
    if local is not None:
        # Build the directory under a temporary name beside its final place, then rename.
        root = Path(storage.root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            manifest = _write_dir(tmp, step, weights, optimizer, state_bytes, tokenizer, storage.on_progress)
            t1 = time.perf_counter()
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
            manifest = _write_dir(tmp, step, weights, optimizer, state_bytes, tokenizer, storage.on_progress)
            t1 = time.perf_counter()
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
    if timings is not None:
        timings.update(serialize_s=t1 - t0, publish_s=time.perf_counter() - t1)
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
