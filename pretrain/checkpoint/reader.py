"""Checkpoint format names, and finding, verifying and loading checkpoints (local or S3).

The layout and the write order are described in pretrain/checkpoint/__init__.py (pretrain/checkpoint/writer.py writes them); this
module reads them: `load_checkpoint(path)` takes a step directory or a root (then the newest
complete checkpoint, falling back past damaged ones) and verifies every file against MANIFEST.json.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors.numpy import load_file

from common.io import sha256_file
from common.log import get_logger, process_rank
from common.schema import S3Config
from pretrain.checkpoint.storage import Storage, open_storage

log = get_logger(__name__)

FORMAT = "kogpt-ckpt-v1"
MANIFEST = "MANIFEST.json"
LATEST = "latest"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TOKENIZER_DIR = "tokenizer"
_STEP_RE = re.compile(r"^step_(\d+)$")
_MB = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names it and says why."""


@dataclass
class Checkpoint:
    location: str                        # "work/run/checkpoints/step_00001000" or "s3://b/p/step_00001000"
    weights: dict[str, np.ndarray]       # model.safetensors
    optimizer: dict[str, np.ndarray]     # optimizer.safetensors
    state: dict                          # state.json
    files: dict[str, dict] = field(default_factory=dict)   # the manifest's {relpath: {size, sha256}}

    @property
    def step(self) -> int:
        return int(self.state.get("step", -1))


def step_name(step: int) -> str:
    """`1000` -> `"step_00001000"` (zero-padded so names sort like steps)."""
    return f"step_{int(step):08d}"


def parse_step(name: str) -> Optional[int]:
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def split_location(location: str) -> tuple[str, str]:
    """`.../root/step_00001000` -> (".../root", "step_00001000"); works for s3:// URLs too."""
    loc = location.rstrip("/")
    if loc.startswith("s3://"):
        head, _, name = loc[len("s3://"):].rpartition("/")
        if not head:
            raise CheckpointError(f"{location!r}: an S3 checkpoint is s3://BUCKET/[PREFIX/]step_N")
        return "s3://" + head, name
    parent, name = os.path.split(os.path.normpath(loc))
    return parent or ".", name


# ----------------------------------------------------------------------------------------------------
# reading and verification


class _Reader:
    """Finds, verifies and loads checkpoints; keeps one Storage per root and a download cache."""

    def __init__(self, s3cfg: Optional[S3Config], cache_dir: Optional[str]):
        self.s3cfg = s3cfg or S3Config()
        self._cache_dir = cache_dir
        self._own_cache = cache_dir is None
        self._storages: dict[str, Storage] = {}
        # location -> (local dir holding verified files, {relpath: (size, mtime_ns)})
        self._verified: dict[str, tuple[Path, dict[str, tuple[int, int]]]] = {}
        self._downloads: set[Path] = set()   # downloaded copies (never the checkpoints themselves)
        self.rejected: dict[str, str] = {}   # name -> why, of the last newest_complete() scan

    def storage(self, root: str) -> Storage:
        key = root.rstrip("/") if root.startswith("s3://") else os.path.normpath(root)
        if key not in self._storages:
            self._storages[key] = open_storage(root, self.s3cfg)
        return self._storages[key]

    def cache_dir(self) -> Path:
        if self._cache_dir is None:
            self._cache_dir = tempfile.mkdtemp(prefix="kogpt-ckpt-dl-")
        p = Path(self._cache_dir)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def close(self) -> None:
        for s in self._storages.values():
            s.close()
        self._storages.clear()
        for d in self._downloads:
            shutil.rmtree(d, ignore_errors=True)
        self._downloads.clear()
        self._verified.clear()
        if self._own_cache and self._cache_dir:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    # -- verification ---------------------------------------------------------------------------

    def manifest(self, storage: Storage, name: str) -> dict:
        try:
            data = storage.get_bytes(f"{name}/{MANIFEST}")
        except FileNotFoundError:
            raise CheckpointError(f"{storage.url(name)} is incomplete: no {MANIFEST} (the save was "
                                  "interrupted or is still running)") from None
        try:
            m = json.loads(data)
            files = m["files"]
            assert isinstance(files, dict) and all({"size", "sha256"} <= set(v) for v in files.values())
        except (ValueError, KeyError, AssertionError):
            raise CheckpointError(f"{storage.url(name)}/{MANIFEST} is not a valid manifest") from None
        for req in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE):
            if req not in files:
                raise CheckpointError(f"{storage.url(name)}/{MANIFEST} lists no {req}")
        return m

    def fetch_verified(self, storage: Storage, name: str) -> Path:
        """A local directory with checkpoint `name`'s files, every size and sha256 checked.

        Local roots are read in place; S3 checkpoints are downloaded (files in parallel, parts in
        parallel) into the cache directory. Raises CheckpointError naming the damaged file.
        """
        url = storage.url(name)
        files = self.manifest(storage, name)["files"]
        listed = storage.list(name)
        for rel, meta in files.items():   # sizes first: cheap, and catches truncation before downloading
            size = listed.get(f"{name}/{rel}")
            if size is None:
                raise CheckpointError(f"{url}/{rel} is missing (listed in {MANIFEST})")
            if size != meta["size"]:
                raise CheckpointError(f"{url}/{rel} has {size} bytes, {MANIFEST} says {meta['size']} "
                                      "(truncated or overwritten)")
        local = storage.local_path(name)
        if local is not None:
            d = Path(local)
        else:
            d = self.cache_dir() / f"{name}-{process_rank()}-{os.getpid()}"
            shutil.rmtree(d, ignore_errors=True)
            self._downloads.add(d)
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(max_workers=min(4, len(files))) as pool:
                list(pool.map(lambda rel: storage.get_file(f"{name}/{rel}", str(d / rel)), files))
            dt = time.perf_counter() - t0
            total = sum(f["size"] for f in files.values())
            log.info("downloaded %s: %.1f MB in %.2f s (%.1f MB/s)", url, total / 1e6, dt,
                     total / 1e6 / max(dt, 1e-9))
        stats: dict[str, tuple[int, int]] = {}
        for rel, meta in files.items():
            p = d / rel
            digest = sha256_file(p)
            if digest != meta["sha256"]:
                raise CheckpointError(f"{url}/{rel}: sha256 {digest[:12]}... does not match "
                                      f"{MANIFEST} ({meta['sha256'][:12]}...): the file was altered")
            st = p.stat()
            stats[rel] = (st.st_size, st.st_mtime_ns)
        self._verified[url] = (d, stats)
        return d

    def fetch_into(self, storage: Storage, name: str, dest: Path) -> Path:
        """Checkpoint `name` of a remote (S3) root, verified, as a local directory `dest` with its
        MANIFEST.json, so other processes can load it with `load_checkpoint(dest)`.

        Reuses the copy this reader verified while resolving the resume, if it is still intact (rank 0
        downloads once, not twice); else downloads and verifies. `dest` is built under a temporary name
        and renamed into place, so a reader never sees a partial directory."""
        url = storage.url(name)
        if storage.local_path(name) is not None:
            raise CheckpointError(f"{url} is already local: load it in place")
        d = self._still_verified(url) or self.fetch_verified(storage, name)
        manifest = self.manifest(storage, name)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.move(str(d), str(tmp))             # a rename when the cache is on the same filesystem
        self._downloads.discard(d)
        self._verified.pop(url, None)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)   # a stale copy from an earlier, killed resume
        os.rename(tmp, dest)
        return dest

    def _still_verified(self, url: str) -> Optional[Path]:
        entry = self._verified.get(url)
        if entry is None:
            return None
        d, stats = entry
        for rel, (size, mtime) in stats.items():
            try:
                st = (d / rel).stat()
            except FileNotFoundError:
                return None
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                return None
        return d

    # -- resolution -----------------------------------------------------------------------------

    def newest_complete(self, storage: Storage) -> Optional[str]:
        """The newest verified checkpoint under a root, following `latest`, falling back with a warning."""
        names = sorted((n for n in storage.list_dirs() if parse_step(n) is not None),
                       key=lambda n: parse_step(n), reverse=True)
        self.rejected = {}
        if not names:
            return None
        latest = None
        with contextlib.suppress(FileNotFoundError):
            latest = storage.get_bytes(LATEST).decode("utf-8", "replace").strip()
        if latest in names:
            newer = [n for n in names if parse_step(n) > parse_step(latest)]
            if newer:
                log.warning("%s: %s newer than `latest` (%s) ignored: left by an interrupted save or "
                            "an abandoned run", storage.root, ", ".join(newer), latest)
            candidates = [n for n in names if parse_step(n) <= parse_step(latest)]
        else:
            if latest is not None:
                log.warning("%s/latest names %r, which does not exist; scanning for the newest "
                            "complete checkpoint", storage.root, latest)
            candidates = names
        problems: list[str] = []
        for name in candidates:
            try:
                self.fetch_verified(storage, name)
            except CheckpointError as e:
                problems.append(str(e))
                self.rejected[name] = str(e)
                log.warning("skipping checkpoint %s: %s", storage.url(name), e)
                continue
            if problems:
                log.warning("resuming from %s, the newest complete checkpoint that verifies "
                            "(%d newer one(s) damaged or incomplete)", storage.url(name), len(problems))
            return storage.url(name)
        log.warning("%s: no complete checkpoint (%d damaged or incomplete)", storage.root, len(problems))
        return None

    def resolve(self, path: str) -> str:
        """A step directory or a root (local or s3://) -> the location of a verified checkpoint."""
        name = path.rstrip("/").rpartition("/")[2]
        if parse_step(name) is not None or self.storage(path).exists(MANIFEST):
            root, name = split_location(path)
            storage = self.storage(root)
            self.fetch_verified(storage, name)   # raises with the reason when unusable
            return storage.url(name)
        found = self.newest_complete(self.storage(path))
        if found is None:
            raise CheckpointError(f"no complete checkpoint under {path!r}: expected step_N/ "
                                  f"directories with a {MANIFEST}. Check checkpoint.resume, or use "
                                  "resume: none to start fresh")
        return found

    def load(self, location: str) -> Checkpoint:
        root, name = split_location(location)
        storage = self.storage(root)
        url = storage.url(name)
        d = self._still_verified(url) or self.fetch_verified(storage, name)
        t0 = time.perf_counter()
        try:
            files = self.manifest(storage, name)["files"] if storage.local_path(name) is None \
                else json.loads((d / MANIFEST).read_text("utf-8"))["files"]
            weights = load_file(d / WEIGHTS_FILE)
            optimizer = load_file(d / OPTIMIZER_FILE)
            state = json.loads((d / STATE_FILE).read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {url}: {e}") from e
        finally:
            if d in self._downloads:   # downloaded copy: free the disk space
                shutil.rmtree(d, ignore_errors=True)
                self._downloads.discard(d)
                self._verified.pop(url, None)
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{url}/{STATE_FILE}: format {state.get('format')!r}, expected {FORMAT!r}")
        log.info("loaded checkpoint %s (step %s, %d weight + %d optimizer tensors) in %.2f s",
                 url, state.get("step"), len(weights), len(optimizer), time.perf_counter() - t0)
        return Checkpoint(url, weights, optimizer, state, files)


def load_checkpoint(path: str, s3cfg: Optional[S3Config] = None) -> Checkpoint:
    """Load a verified checkpoint from a step directory or the newest complete one under a root."""
    reader = _Reader(s3cfg, None)
    try:
        return reader.load(reader.resolve(path))
    finally:
        reader.close()

