"""Where checkpoints live: a local directory or an S3 (or S3-compatible) `s3://bucket/prefix`.

A `Storage` addresses objects by keys relative to its root, with `/` as separator
(`"step_00001000/model.safetensors"`, `"latest"`). Checkpoint code (pretrain/checkpoint/) only
talks to this interface, so one code path writes both kinds of roots.

S3 goes through boto3: the transfer manager (`TransferConfig`: multipart chunks of
`checkpoint.s3.multipart_chunk_mb`, `max_concurrency` parallel parts) for files, botocore retries in
`standard`/`adaptive` mode (`max_attempts`), and `endpoint_url` / `region` / `profile` from
`checkpoint.s3` so MinIO, Ceph RGW and other S3-compatible stores work. Credentials come only from
the standard AWS chain (env vars, shared files/profile, SSO, container/instance role); this module
never reads, stores or logs them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
import threading
from typing import Callable, Optional

from common.io import atomic_open, write_bytes_atomic
from common.log import get_logger
from common.schema import S3Config

log = get_logger(__name__)

_MB = 1 << 20


class StorageError(RuntimeError):
    """A storage root cannot be used; the message says which and what to do about it."""


class Storage(ABC):
    """Objects under one root, addressed by `/`-separated keys relative to it."""

    root: str
    # Progress and retry figures, read by the checkpoint manager (stall watchdog, metrics.jsonl).
    on_progress: Optional[Callable[[int], None]] = None   # called with bytes sent (<0 when a retry rewinds)
    retries: int = 0                                       # requests retried since the storage was opened

    def url(self, key: str = "") -> str:
        """The full location of `key` (`<dir>/key` or `s3://bucket/prefix/key`)."""
        return f"{self.root.rstrip('/')}/{key}" if key else self.root

    def local_path(self, key: str) -> Optional[str]:
        """A filesystem path for `key` when the root is local, else None."""
        return None

    @abstractmethod
    def put_file(self, local_path: str, key: str) -> None:
        """Copy a local file to `key`; `key` appears complete or not at all."""

    @abstractmethod
    def get_file(self, key: str, local_path: str) -> None:
        """Copy `key` into a local file (temporary name, then rename)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; raises FileNotFoundError when it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix` (recursively): {key relative to root: size in bytes}."""

    @abstractmethod
    def list_dirs(self, prefix: str = "") -> list[str]:
        """Names of the immediate "directories" (common key prefixes) under `prefix`."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` (a "directory" key); returns how many were deleted."""

    def delete(self, key: str) -> None:
        """Delete one object; no error when it does not exist."""
        self.delete_prefix(key)

    @abstractmethod
    def move_prefix(self, src: str, dst: str) -> int:
        """Move every object under the "directory" `src` to `dst` (which must not exist); returns how many."""

    def abort_unfinished_uploads(self) -> int:
        """Abort uploads under the root that a killed writer left open; returns how many (0: none kept)."""
        return 0

    def close(self) -> None:
        """Release connections."""


# ----------------------------------------------------------------------------------------------------
# local directory


class LocalStorage(Storage):
    """A local (or network-mounted) directory; every write is temp file + rename."""

    def __init__(self, root: str):
        self.root = os.path.normpath(root)

    def _path(self, key: str) -> Path:
        return Path(self.root, *[p for p in key.split("/") if p])

    def local_path(self, key: str) -> Optional[str]:
        return str(self._path(key))

    def put_file(self, local_path: str, key: str) -> None:
        dst = self._path(key)
        with atomic_open(dst, "wb") as out, open(local_path, "rb") as src:
            shutil.copyfileobj(src, out, 16 * _MB)

    def get_file(self, key: str, local_path: str) -> None:
        src = self._path(key)
        if not src.is_file():
            raise FileNotFoundError(f"{src} does not exist")
        with atomic_open(local_path, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 16 * _MB)

    def put_bytes(self, key: str, data: bytes) -> None:
        write_bytes_atomic(self._path(key), data)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self._path(prefix)
        out: dict[str, int] = {}
        if base.is_file():
            return {prefix: base.stat().st_size}
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                p = Path(dirpath, name)
                out[p.relative_to(self.root).as_posix()] = p.stat().st_size
        return out

    def list_dirs(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(e.name for e in os.scandir(base) if e.is_dir())

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def move_prefix(self, src: str, dst: str) -> int:
        a, b = self._path(src), self._path(dst)
        if b.exists():
            raise StorageError(f"cannot move {a} to {b}: it exists")
        n = sum(len(f) for _, _, f in os.walk(a))
        os.replace(a, b)   # one rename: atomic on one filesystem
        return n

    def delete_prefix(self, prefix: str) -> int:
        p = self._path(prefix)
        if p.is_dir():
            n = sum(len(f) for _, _, f in os.walk(p))
            shutil.rmtree(p)
            return n
        if p.exists():
            p.unlink()
            return 1
        return 0


# ----------------------------------------------------------------------------------------------------
# S3


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{url!r} names no bucket: write checkpoint.root as s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


_CRED_HELP = ("Give credentials through the standard AWS chain: on EC2 attach an IAM role (instance "
              "profile) to the instance; elsewhere set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and "
              "AWS_SESSION_TOKEN) in the environment, or AWS_PROFILE / checkpoint.s3.profile naming a "
              "profile in ~/.aws/credentials. Never put keys in the config. See docs/S3.md.")


class S3Storage(Storage):
    """`s3://bucket/prefix` through boto3, for AWS S3 and S3-compatible stores.

    Construction checks that credentials exist and that the bucket is reachable (one ListObjectsV2
    under the prefix), so a run fails at start-up, not at its first checkpoint hours later.
    """

    def __init__(self, url: str, cfg: Optional[S3Config] = None, check: bool = True):
        import boto3
        import botocore.exceptions as bex
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config as BotoConfig

        cfg = cfg or S3Config()
        self.cfg = cfg
        self.bucket, self.prefix = parse_s3_url(url)
        self.root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        try:
            session = boto3.session.Session(profile_name=cfg.profile or None,
                                            region_name=cfg.region or None)
        except bex.ProfileNotFound as e:
            raise StorageError(f"checkpoint.s3.profile={cfg.profile!r}: {e}. Add the profile to "
                               "~/.aws/config or ~/.aws/credentials, or leave profile empty to use "
                               "the default credential chain.") from None
        if session.get_credentials() is None:
            raise StorageError(f"No AWS credentials found for {self.root}. {_CRED_HELP}")
        chunk = max(5, int(cfg.multipart_chunk_mb)) * _MB   # S3's minimum part size is 5 MiB
        boto_cfg = BotoConfig(
            retries={"mode": cfg.retry_mode, "max_attempts": int(cfg.max_attempts)},
            max_pool_connections=max(10, 2 * int(cfg.max_concurrency)),
            # MinIO / Ceph RGW / moto are usually addressed by path (http://host:9000/bucket/key).
            s3={"addressing_style": "path"} if cfg.endpoint_url else {},
        )
        self.client = session.client("s3", endpoint_url=cfg.endpoint_url or None, config=boto_cfg)
        # Count and report botocore's retries (they are otherwise silent: a flaky endpoint only shows
        # as slow checkpoints): the cause is noted per request when its answer arrives, and a request
        # created for attempt 2, 3, ... is a retry.
        self.retries = 0
        self._retry_lock = threading.Lock()
        self.client.meta.events.register("response-received.s3", self._note_response)
        self.client.meta.events.register("request-created.s3", self._note_request)
        self.transfer = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk,
                                       max_concurrency=int(cfg.max_concurrency), use_threads=True)
        where = cfg.endpoint_url or "AWS"
        log.info("S3 storage %s (endpoint %s, region %s, chunks %d MiB x %d parallel, retries %s/%d)",
                 self.root, where, session.region_name or "default", chunk // _MB,
                 cfg.max_concurrency, cfg.retry_mode, cfg.max_attempts)
        if check:
            self._check_bucket()

    # -- retries ----------------------------------------------------------------------------------

    @staticmethod
    def _note_response(context=None, exception=None, response_dict=None, parsed_response=None, **_) -> None:
        if context is None:
            return
        if exception is not None:
            context["kogpt_problem"] = f"{type(exception).__name__}: {exception}"
        elif response_dict is not None and int(response_dict.get("status_code") or 0) >= 300:
            code = ((parsed_response or {}).get("Error") or {}).get("Code", "")
            context["kogpt_problem"] = f"HTTP {response_dict.get('status_code')} {code}".strip()

    def _note_request(self, request=None, operation_name: str = "", **_) -> None:
        context = getattr(request, "context", None) or {}
        attempt = int((context.get("retries") or {}).get("attempt", 1))
        if attempt <= 1:
            return
        with self._retry_lock:
            self.retries += 1
            total = self.retries
        where = str(getattr(request, "url", "")).split("?")[0]   # the query may carry an upload id, never keys
        log.warning("S3 %s %s: retry (attempt %d of %d) after %s; %d retries since start",
                    operation_name, where, attempt, self.cfg.max_attempts,
                    context.get("kogpt_problem", "an error"), total)

    # -- errors -----------------------------------------------------------------------------------

    def _explain(self, e: Exception, what: str) -> StorageError:
        """Turn a botocore exception into a StorageError that says what to do."""
        import botocore.exceptions as bex

        where = self.cfg.endpoint_url or "AWS S3"
        if isinstance(e, bex.NoCredentialsError):
            return StorageError(f"{what}: no AWS credentials. {_CRED_HELP}")
        if isinstance(e, (bex.EndpointConnectionError, bex.ConnectionClosedError,
                          bex.ReadTimeoutError, bex.ConnectTimeoutError)):
            return StorageError(f"{what}: cannot reach {where} ({type(e).__name__}: {e}) after "
                                f"{self.cfg.max_attempts} attempts. Check checkpoint.s3.endpoint_url "
                                "and the network; raise checkpoint.s3.max_attempts for flaky links.")
        if isinstance(e, bex.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and what.startswith("bucket")):
                return StorageError(
                    f"S3 bucket {self.bucket!r} does not exist at {where}. Create it first "
                    f"(`aws s3 mb s3://{self.bucket}`, or the MinIO console / `mc mb`), or fix "
                    "checkpoint.root; see docs/S3.md.")
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
                return StorageError(
                    f"{what}: access denied to s3://{self.bucket} at {where}. The credentials need "
                    "s3:ListBucket on the bucket and s3:GetObject/PutObject/DeleteObject/"
                    "AbortMultipartUpload on the prefix (policy in docs/S3.md).")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                        "InvalidToken", "TokenRefreshRequired"):
                return StorageError(f"{what}: the AWS credentials were rejected ({code}). {_CRED_HELP}")
            return StorageError(f"{what}: S3 error {code or status}: {err.get('Message', e)}")
        if isinstance(e, bex.BotoCoreError):
            return StorageError(f"{what}: {type(e).__name__}: {e}")
        return StorageError(f"{what}: {type(e).__name__}: {e}")

    @contextlib.contextmanager
    def _errors(self, what: str):
        import boto3.exceptions
        import botocore.exceptions as bex

        try:
            yield
        except (bex.BotoCoreError, bex.ClientError, boto3.exceptions.S3UploadFailedError) as e:
            cause = e
            # upload_file wraps the ClientError into S3UploadFailedError; keep the original's code
            if isinstance(e, boto3.exceptions.S3UploadFailedError) and e.__context__ is not None:
                cause = e.__context__
            raise self._explain(cause, what) from e

    def _check_bucket(self) -> None:
        # One key listed under the prefix, not HeadBucket: HeadBucket carries no prefix, so a policy
        # that grants s3:ListBucket only on the run's prefix (docs/S3.md) would refuse it.
        with self._errors(f"bucket s3://{self.bucket}"):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key("") + "/" if self.prefix else "",
                                        MaxKeys=1)

    # -- keys -------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- objects ----------------------------------------------------------------------------------

    def put_file(self, local_path: str, key: str) -> None:
        # S3 makes an object visible only when its (multipart) upload completes; a failed
        # multipart upload is aborted by the transfer manager (and by the lifecycle rule otherwise).
        log.debug("upload %s (%d bytes) to %s", local_path, os.path.getsize(local_path), self.url(key))
        with self._errors(f"upload {local_path} to {self.url(key)}"):
            self.client.upload_file(local_path, self.bucket, self._key(key), Config=self.transfer,
                                    Callback=self.on_progress)

    def get_file(self, key: str, local_path: str) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{Path(local_path).name}.", suffix=".tmp",
                                   dir=Path(local_path).parent)
        os.close(fd)
        try:
            with self._errors(f"download {self.url(key)}"):
                self.client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)
            os.replace(tmp, local_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(f"put {self.url(key)}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        c = self.client
        with self._errors(f"get {self.url(key)}"):
            try:
                return c.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except c.exceptions.NoSuchKey:
                raise FileNotFoundError(f"{self.url(key)} does not exist") from None

    def list(self, prefix: str = "") -> dict[str, int]:
        full = self._key(prefix)
        if full and prefix:
            full += "/" if not prefix.endswith("/") else ""
        elif self.prefix:
            full = self.prefix + "/"
        out: dict[str, int] = {}
        with self._errors(f"list {self.url(prefix)}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    out[self._rel(obj["Key"])] = int(obj["Size"])
        return out

    def list_dirs(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        full = f"{full}/" if full else ""
        names: list[str] = []
        with self._errors(f"list {self.url(prefix)}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    names.append(cp["Prefix"][len(full):].rstrip("/"))
        return sorted(names)

    def exists(self, key: str) -> bool:
        import botocore.exceptions as bex

        with self._errors(f"head {self.url(key)}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except bex.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

    def delete(self, key: str) -> None:
        with self._errors(f"delete {self.url(key)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def move_prefix(self, src: str, dst: str) -> int:
        # S3 has no rename: server-side copies (boto3's managed copy splits objects over 5 GB), then
        # the deletes, so an interruption leaves both copies rather than none.
        if self.list(dst):
            raise StorageError(f"cannot move {self.url(src)} to {self.url(dst)}: it exists")
        keys = list(self.list(src))
        with self._errors(f"copy {self.url(src)} to {self.url(dst)}"):
            for k in keys:
                self.client.copy({"Bucket": self.bucket, "Key": self._key(k)}, self.bucket,
                                 self._key(dst + k[len(src):]))
        self.delete_prefix(src)
        return len(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(k) for k in self.list(prefix)]
        with self._errors(f"delete {self.url(prefix)}"):
            for i in range(0, len(keys), 1000):   # DeleteObjects takes at most 1000 keys
                batch = [{"Key": k} for k in keys[i:i + 1000]]
                resp = self.client.delete_objects(Bucket=self.bucket,
                                                  Delete={"Objects": batch, "Quiet": True})
                if resp.get("Errors"):
                    e = resp["Errors"][0]
                    raise StorageError(f"delete {self.url(prefix)}: {e.get('Code')} on "
                                       f"{e.get('Key')}: {e.get('Message')}")
        return len(keys)

    def abort_unfinished_uploads(self) -> int:
        """Abort the multipart uploads open under this root's prefix: parts of an upload whose writer
        was killed are invisible but billed until aborted (or a lifecycle rule expires them). Only the
        run's writer calls this, at start, when none of its own uploads is in flight."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        with self._errors(f"list unfinished uploads under {self.root}"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                     Prefix=prefix):
                for up in page.get("Uploads", []):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    aborted += 1
                    log.warning("aborted an unfinished multipart upload of s3://%s/%s (started %s, left by a "
                                "killed checkpoint write)", self.bucket, up["Key"], up.get("Initiated"))
        return aborted

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def open_storage(root: str, s3cfg: Optional[S3Config] = None, check: bool = True) -> Storage:
    """A Storage for a local directory or `s3://bucket/prefix` (`check`: list one key under the prefix at start)."""
    if root.startswith("s3://"):
        return S3Storage(root, s3cfg, check=check)
    if "://" in root:
        raise StorageError(f"checkpoint root {root!r}: only local paths and s3://bucket/prefix "
                           "are supported (MinIO/Ceph: s3:// with checkpoint.s3.endpoint_url)")
    return LocalStorage(root)
