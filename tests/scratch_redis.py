"""A redis-server of a test's own: a free port, a temporary directory, stopped and started at will.

Never the machine's Redis on 6379 (other people's tests use it): a test that
restarts Redis, loads an ACL file or turns TLS on starts one of these.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import IN_CI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server_or_skip() -> str:
    """The redis-server program; the test skips (fails under CI) without it."""
    found = shutil.which("redis-server")
    if found is None:
        message = "redis-server not found on PATH: no Redis of the test's own"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


class ScratchRedis:
    """One redis-server process in ``root``, with the given extra options."""

    def __init__(self, root: Path, *options: str, tls: bool = False):
        self.program = redis_server_or_skip()
        self.root = root
        self.port = free_port()
        self.options = list(options)
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def url(self, db: int = 0, user: str | None = None, password: str | None = None) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f"{user or ''}:{password}@" if password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> None:
        port = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        argv = [self.program, *port, "--bind", "127.0.0.1", "--dir", str(self.root)]
        argv += ["--logfile", str(self.log_path), "--save", "", *self.options]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not ready after {timeout}s: {self.log()[-2000:]}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        # "Ready to accept connections" is logged once the AOF has been loaded.
        return self.log().count("Ready to accept connections") >= self.starts

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits. SIGKILL: what a crash leaves."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url(), **kwargs)


def scratch_redis(root: Path, *options: str, tls: bool = False) -> Iterator[ScratchRedis]:
    """Start one; kill it (whatever happened) when the test ends."""
    server = ScratchRedis(root, *options, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
