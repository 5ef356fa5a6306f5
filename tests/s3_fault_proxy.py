"""A real S3 API on loopback for fault tests: moto's server, and a forwarding HTTP proxy that injects faults.

    moto = start_moto()                                    # subprocess: python -m moto.server
    proxy = Proxy(moto_port, tmp, fail_first=3).start()   # the first 3 PUT/POST answer 503 SlowDown
    proxy = Proxy(moto_port, tmp, stall_match="step_00000006/", stall_s=600).start()
    proxy.kill()                                           # SIGKILL: the endpoint is gone mid-request

The proxy runs as its own process (`python tests/s3_fault_proxy.py PORT TARGET FAIL_FIRST STATS
[STALL_MATCH STALL_S]`), so killing it kills the endpoint while moto keeps the bucket. Stalling holds
each PUT/POST whose path contains STALL_MATCH for STALL_S seconds after reading its body, then
forwards it: an upload in flight that does not move, which a test can time a SIGKILL into
(`proxy.stalled` counts the requests held so far). Nothing in boto3 is mocked.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>")
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive and Expect: 100-continue, like a real S3 endpoint

    def log_message(self, *args) -> None:
        pass

    def _count(self, attr: str, path: str) -> None:
        srv = self.server
        with srv.lock:
            setattr(srv, attr, getattr(srv, attr) + 1)
            Path(path).write_text(str(getattr(srv, attr)))

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        srv = self.server
        if self.command in ("PUT", "POST"):
            with srv.lock:
                throttle = srv.fail_left > 0
                if throttle:
                    srv.fail_left -= 1
            if throttle:
                self._count("failed", srv.stats)
                self.send_response(503, "Slow Down")
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_SLOWDOWN)))
                self.end_headers()
                self.wfile.write(_SLOWDOWN)
                return
            if srv.stall_match and srv.stall_match in self.path:
                self._count("stalled", srv.stats + ".stalled")
                time.sleep(srv.stall_s)
        conn = http.client.HTTPConnection("127.0.0.1", srv.target, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def run_proxy(port: int, target: int, fail_first: int, stats: str, stall_match: str = "", stall_s: float = 0) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", port), _ProxyHandler)
    srv.daemon_threads = True
    srv.target, srv.fail_left, srv.failed, srv.stats, srv.lock = target, fail_first, 0, stats, threading.Lock()
    srv.stall_match, srv.stall_s, srv.stalled = stall_match, stall_s, 0
    Path(stats).write_text("0")
    Path(stats + ".stalled").write_text("0")
    srv.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_moto() -> tuple[subprocess.Popen, int]:
    """moto's S3 server on a free loopback port: (process, port)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, port


class Proxy:
    """The fault proxy as a separate process, restartable on the same port."""

    def __init__(self, target: int, tmp: Path, fail_first: int = 0, stall_match: str = "", stall_s: float = 0):
        self.port, self.target, self.fail_first = free_port(), target, fail_first
        self.stall_match, self.stall_s = stall_match, stall_s
        self.stats = str(tmp / f"proxy-{self.port}.stats")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proxy":
        args = [str(self.port), str(self.target), str(self.fail_first), self.stats]
        if self.stall_match:
            args += [self.stall_match, str(self.stall_s)]
        self.proc = subprocess.Popen([sys.executable, __file__, *args], cwd=REPO)
        wait_http(self.port, self.proc)
        return self

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    @property
    def throttled(self) -> int:
        return int(Path(self.stats).read_text() or 0)

    @property
    def stalled(self) -> int:
        return int(Path(self.stats + ".stalled").read_text() or 0)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


if __name__ == "__main__":
    a = sys.argv[1:]
    run_proxy(int(a[0]), int(a[1]), int(a[2]), a[3], a[4] if len(a) > 4 else "", float(a[5]) if len(a) > 5 else 0)


def set_fake_aws_env(monkeypatch, tmp_path: Path, key_id: str, secret: str) -> dict:
    """Fake credentials through the standard chain (the environment, so subprocesses get them too): no
    shared config files, no instance metadata, no other credential source. Returns what was set."""
    env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    return env


def new_bucket(moto_port: int, prefix: str):
    """A fresh, uniquely named bucket on the moto server: (boto3 client talking straight to moto, name)."""
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1")
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name
