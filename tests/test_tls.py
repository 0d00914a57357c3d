"""TLS to Redis (``rediss://``) and PostgreSQL (``sslmode=require``) for every process.

The slow test makes a certificate authority and a server certificate with
openssl, starts a redis-server that listens on TLS only and a PostgreSQL that
accepts TLS connections only (both its own: free ports, temporary directories),
and runs migrate, a worker, the bridge, beat and a report against them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from analytics.config import Settings, tls_redis_url
from analytics.errors import ConfigError
from loadgen import checking, publishing
from tests.conftest import IN_CI, Process
from tests.faults.helpers import ScratchPostgres, running_postgres
from tests.scratch_redis import ScratchRedis, scratch_redis


def test_a_rediss_url_verifies_the_certificate_unless_it_says_otherwise():
    settings = Settings.from_env({"REDIS_URL": "rediss://:pw@cache:6380/0"})

    for url in (settings.redis_url, settings.celery_broker_url, settings.celery_result_backend):
        assert url == "rediss://:pw@cache:6380/0?ssl_cert_reqs=required"


def test_a_rediss_url_keeps_its_own_tls_options():
    url = "rediss://cache:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=none"

    assert tls_redis_url("REDIS_URL", url) == url
    assert tls_redis_url("REDIS_URL", "rediss://c/0?ssl_ca_certs=/ca.pem") == (
        "rediss://c/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required"
    )
    assert tls_redis_url("REDIS_URL", "redis://c/0") == "redis://c/0"


def test_a_bad_ssl_cert_reqs_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="ssl_cert_reqs='maybe' is not one of"):
        Settings.from_env({"REDIS_URL": "rediss://c/0?ssl_cert_reqs=maybe"})


def test_the_subscriber_builds_the_tls_context_the_url_asks_for(tmp_path: Path):
    import ssl

    from bridge.subscriber import tls_context

    assert tls_context({}).verify_mode == ssl.CERT_REQUIRED
    assert tls_context({}).check_hostname
    relaxed = tls_context({"ssl_cert_reqs": "none"})
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname


# ------------------------------------------------------------------------ end to end


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certificates() -> Iterator[Path]:
    """ca.crt, and server.crt/server.key for 127.0.0.1 signed by it, readable by postgres."""
    if shutil.which("openssl") is None:
        message = "openssl not found: cannot make test certificates"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="analytics-tls-"))
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                 "-out", "ca.crt", "-days", "2", "-subj", "/CN=analytics test CA", cwd=root)  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
                 "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=root)  # fmt: skip
        (root / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf",
                 cwd=root)  # fmt: skip
        os.chmod(root, 0o755)
        os.chmod(root / "server.key", 0o600)
        if os.geteuid() == 0:
            shutil.chown(root / "server.key", "postgres", "postgres")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class TlsPostgres(ScratchPostgres):
    """A scratch PostgreSQL that takes TLS connections only (``hostssl``; plain ones refused)."""

    def __init__(self, bindir: Path, root: Path, certificates: Path):
        super().__init__(bindir, root)
        self.certificates = certificates

    def init(self) -> None:
        super().init()
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )

    def start(self) -> None:
        crt, key = self.certificates / "server.crt", self.certificates / "server.key"
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c ssl=on -c ssl_cert_file={crt} -c ssl_key_file={key}"
        )
        log_file = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log_file, "-w", "start")


@pytest.fixture
def tls_postgres(certificates: Path) -> Iterator[TlsPostgres]:
    def make(bindir: Path, root: Path) -> TlsPostgres:
        cluster = TlsPostgres(bindir, root, certificates)
        cluster.url += "?sslmode=require"
        return cluster

    yield from running_postgres(make, "analytics-tls-pg-")


@pytest.fixture
def tls_redis(certificates: Path, tmp_path: Path) -> Iterator[ScratchRedis]:
    root = tmp_path / "redis"
    root.mkdir()
    options = [
        "--tls-cert-file", str(certificates / "server.crt"),
        "--tls-key-file", str(certificates / "server.key"),
        "--tls-ca-cert-file", str(certificates / "ca.crt"),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    yield from scratch_redis(root, *options, tls=True)


@pytest.mark.slow
def test_every_process_runs_over_tls_to_redis_and_postgresql(
    certificates: Path,
    tls_redis: ScratchRedis,
    tls_postgres: TlsPostgres,
    pipeline_env: dict[str, str],
    start_process: Callable[..., Process],
    channel_prefix: str,
):
    ca = certificates / "ca.crt"
    redis_url = f"{tls_redis.url()}?ssl_ca_certs={ca}"
    # The server listens on TLS only: a plain connection gets nowhere.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(
            tls_redis.url().replace("rediss://", "redis://"), socket_timeout=2
        ).ping()
    # And the certificate is verified: without the CA, the connection is refused.
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis.Redis.from_url(tls_redis.url()).ping()
    plain = create_engine(tls_postgres.url.replace("sslmode=require", "sslmode=disable"))
    with pytest.raises(OperationalError, match=r"no encryption|reject"):
        plain.connect()
    plain.dispose()

    env = {
        **pipeline_env,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "DATABASE_URL": tls_postgres.url,
        "ROLLUP_INTERVAL": "2",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "analytics", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    worker = start_process("worker", ["worker", "--concurrency", "1", "-n", "tls@%h"], env)
    worker.wait_for_output("ready.")
    bridge = start_process("bridge", ["bridge"], env)
    bridge.wait_for_output("subscribed to")
    beat = start_process("beat", ["beat"], env)

    stream = publishing.build_stream(
        publishing.simulate(300, tenants=2, seed=31), channel_prefix=channel_prefix
    )
    producer = redis.Redis.from_url(f"{redis_url}&ssl_cert_reqs=required")
    published = publishing.publish(producer, stream, rate=0)
    producer.close()
    assert not published.unreceived

    engine = create_engine(tls_postgres.url)
    try:
        waited = checking.wait_stored(engine, stream.tenants, len(stream), timeout=90, stall=30)
        assert waited.complete, waited.reason + worker.output()[-2000:]
        exact = checking.check_exact(engine, stream)
        assert exact.exact, exact.problems
        beat.wait_for_output("beat: Acquired lock", timeout=30)
        worker.wait_for_output("rollups.refresh", timeout=30)
        with engine.connect() as conn:
            encrypted = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                    "WHERE pg_stat_ssl.ssl AND datname = 'analytics'"
                )
            ).scalar_one()
            plain_sessions = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                    "WHERE NOT pg_stat_ssl.ssl AND datname = 'analytics' "
                    "AND client_addr IS NOT NULL"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert encrypted >= 2, "the worker's connections are not encrypted"
    assert plain_sessions == 0

    # A tenant with orders: revenue-by-day lists only days with some.
    tenant = next(orjson.loads(p)["tenant_id"] for p in stream.payloads if b"order.created" in p)
    tenant_json = ["--tenant", tenant, "--format", "json"]
    report = subprocess.run(
        [sys.executable, "-m", "analytics", "report", "revenue-by-day", *tenant_json],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert orjson.loads(report.stdout)
