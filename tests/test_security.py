"""Least privilege: the Redis ACL users and PostgreSQL roles of `analytics security`.

The end-to-end test runs the pipeline (bridge, worker, reports) with one Redis
user and one PostgreSQL role per process kind, on a redis-server of its own
loaded with the printed ACL file and with roles created (uniquely named) in the
test database's cluster, and shows each of them refused outside its rights.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError

from analytics.cli import main
from analytics.cli.security import REPORT_WRITES, pg_roles_sql, redis_acl
from analytics.config import Settings
from loadgen import checking, publishing
from tests.conftest import ADMIN_URL, Process
from tests.scratch_redis import ScratchRedis, scratch_redis

ROLES = ("producer", "bridge", "worker", "beat", "admin")
JSON = ("--format", "json")
PASSWORDS = {role: f"pw-{role}-{uuid.uuid4().hex[:6]}" for role in ROLES}


def test_the_acl_file_stores_no_password_and_switches_the_default_user_off():
    acl = redis_acl(Settings(), PASSWORDS)

    lines = acl.splitlines()
    assert lines[0].startswith("user default off")
    assert all(line.startswith("user ") for line in lines), "Redis refuses comments in an aclfile"
    for password in PASSWORDS.values():
        assert password not in acl


def test_a_producer_may_only_publish_and_append_to_the_event_channels():
    acl = redis_acl(Settings(event_channel_pattern="shop:events:*"), PASSWORDS)

    producer = next(line for line in acl.splitlines() if "analytics-producer" in line)
    assert " ~shop:events:* " in producer and " &shop:events:* " in producer
    assert "-@all +publish +xadd" in producer
    assert "~*" not in producer.replace("~shop:events:*", "")


def test_the_command_needs_every_password_and_says_which_is_missing():
    env = {f"REDIS_{role.upper()}_PASSWORD": PASSWORDS[role] for role in ROLES}
    env["REDIS_BEAT_PASSWORD"] = ""
    result = CliRunner().invoke(main, ["security", "redis-acl"], env=env)

    assert result.exit_code != 0
    assert "--beat-password" in result.output


def test_pg_roles_refuses_a_prefix_that_is_not_an_identifier():
    result = CliRunner().invoke(main, ["security", "pg-roles", "--prefix", "x; DROP TABLE events"])

    assert result.exit_code == 2
    assert "--prefix" in result.output


def test_pg_roles_lets_reports_write_only_the_rollups_they_refresh():
    sql = pg_roles_sql("shop")

    assert "GRANT SELECT ON ALL TABLES IN SCHEMA public TO shop_report;" in sql
    assert f"GRANT INSERT, UPDATE, DELETE ON {', '.join(REPORT_WRITES)} TO shop_report;" in sql
    assert "events" not in REPORT_WRITES


# ------------------------------------------------------------------------ end to end


def _with_user(url: str, user: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}@{rest.rpartition('@')[2]}"


@pytest.fixture
def pg_roles(postgres_url: str) -> Iterator[dict[str, str]]:
    """Ingest and report roles, and a login in each, in the test database; dropped after."""
    prefix = f"analytics_t{uuid.uuid4().hex[:8]}"
    logins = {"ingest": f"{prefix}_w", "report": f"{prefix}_r"}
    owner = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with owner.connect() as conn:
            conn.exec_driver_sql(pg_roles_sql(prefix))
            for group, login in logins.items():
                conn.exec_driver_sql(f"CREATE ROLE {login} LOGIN IN ROLE {prefix}_{group}")
        yield {group: _with_user(postgres_url, login) for group, login in logins.items()}
    finally:
        names = [*logins.values(), f"{prefix}_ingest", f"{prefix}_report"]
        with owner.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN :n"),
                {"n": tuple(logins.values())},
            )
            existing = [
                name
                for name in names
                if conn.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}
                ).first()
            ]
            if existing:
                conn.exec_driver_sql(f"DROP OWNED BY {', '.join(existing)}")
                conn.exec_driver_sql(f"DROP ROLE {', '.join(existing)}")
        owner.dispose()
        admin = create_engine(ADMIN_URL)
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_roles WHERE rolname LIKE :p"), {"p": prefix + "%"}
            ).scalar_one()
        admin.dispose()
        assert left == 0, f"roles {prefix}* left behind"


@pytest.fixture
def acl_redis(tmp_path: Path, pipeline_env: dict[str, str]) -> Iterator[ScratchRedis]:
    # The test's channel pattern and beat prefix; DB 0 of the server of its own.
    db0 = "redis://127.0.0.1:6379/0"
    settings = Settings.from_env({**pipeline_env, "REDIS_URL": db0, "CELERY_BROKER_URL": db0})
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(redis_acl(settings, PASSWORDS))
    root = tmp_path / "redis"
    root.mkdir()
    yield from scratch_redis(root, "--aclfile", str(acl_file))


def _as(server: ScratchRedis, role: str) -> redis.Redis:
    return redis.Redis.from_url(server.url(0, f"analytics-{role}", PASSWORDS[role]))


def _refused(call: Callable[[], object]) -> bool:
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as exc:
        return "NOPERM" in str(exc) or "no permissions" in str(exc)
    return False


@pytest.mark.slow
def test_the_pipeline_runs_with_a_user_per_role_and_each_is_refused_outside_its_rights(
    pg_roles: dict[str, str],
    acl_redis: ScratchRedis,
    pg: Engine,
    pipeline_env: dict[str, str],
    start_process: Callable[..., Process],
    channel_prefix: str,
):
    def env_for(role: str, database_url: str) -> dict[str, str]:
        url = acl_redis.url(0, f"analytics-{role}", PASSWORDS[role])
        return {
            **pipeline_env,
            "REDIS_URL": url,
            "CELERY_BROKER_URL": url,
            "DATABASE_URL": database_url,
        }

    worker = start_process(
        "worker",
        ["worker", "--concurrency", "1", "-n", f"acl-{uuid.uuid4().hex[:6]}@%h"],
        env_for("worker", pg_roles["ingest"]),
    )
    worker.wait_for_output("ready.")
    # The bridge and beat have no database credentials at all: they never open one.
    bridge = start_process("bridge", ["bridge"], env_for("bridge", "postgresql://nobody@0/none"))
    bridge.wait_for_output("subscribed to")
    beat = start_process(
        "beat", ["beat"], {**env_for("beat", "postgresql://nobody@0/none"), "ROLLUP_INTERVAL": "2"}
    )
    stream = publishing.build_stream(
        publishing.simulate(400, tenants=2, seed=16), channel_prefix=channel_prefix
    )
    producer = _as(acl_redis, "producer")
    published = publishing.publish(producer, stream, rate=0)
    assert published.count == len(stream) and not published.unreceived

    waited = checking.wait_stored(pg, stream.tenants, len(stream), timeout=90, stall=30)
    exact = checking.check_exact(pg, stream)
    assert waited.complete, waited.reason + worker.output()[-2000:] + bridge.output()[-2000:]
    assert exact.exact, exact.problems

    # Beat took its lock and its rollups reached the worker, which ran them.
    beat.wait_for_output("beat: Acquired lock", timeout=30)
    worker.wait_for_output("rollups.refresh", timeout=30)

    # Reports run as the report role, the rollups they refresh included.
    # A tenant with orders: revenue-by-day lists only days with some.
    tenant = next(orjson.loads(p)["tenant_id"] for p in stream.payloads if b"order.created" in p)
    for report in ("revenue-by-day", "dau"):
        done = subprocess.run(
            [sys.executable, "-m", "analytics", "report", report, "--tenant", tenant, *JSON],
            env=env_for("admin", pg_roles["report"]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout), f"{report} is empty"

    # Nothing the processes did was refused: no command, key or channel is missing.
    admin = _as(acl_redis, "admin")
    denied = admin.acl_log()
    assert not denied, [(d["username"], d["reason"], d["object"]) for d in denied]

    # Redis: each user refused outside its rights.
    event_channel = stream.channels[0]
    assert _refused(lambda: producer.lrange("order", 0, -1)), "a producer read a queue"
    assert _refused(lambda: producer.hgetall("unacked")), "a producer read the batches in flight"
    assert _refused(lambda: producer.xrange(event_channel)), "a producer read a stream"
    assert _refused(lambda: producer.lpush("order", b"forged task")), "a producer forged a task"
    assert _refused(lambda: producer.publish("other:events:order:created", b"{}"))
    assert not _refused(lambda: producer.xadd(event_channel, {"data": b"{}"}))
    bridge_client = _as(acl_redis, "bridge")
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST")):
        assert _refused(partial(bridge_client.execute_command, *command)), command
    worker_client = _as(acl_redis, "worker")
    assert _refused(lambda: worker_client.xadd(event_channel, {"data": b"{}"}))
    assert _refused(lambda: worker_client.publish(event_channel, b"{}"))
    beat_client = _as(acl_redis, "beat")
    assert _refused(lambda: beat_client.hgetall("analytics:ledger:batches"))
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(acl_redis.url(0)).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(acl_redis.url(0, "analytics-admin", "wrong")).ping()

    # PostgreSQL: the report role reads and cannot write the events or counters; the
    # ingest role writes rows and cannot change the schema.
    report_db = create_engine(pg_roles["report"])
    ingest_db = create_engine(pg_roles["ingest"])
    try:
        refused_sql = [
            (report_db, "INSERT INTO metric_counters SELECT * FROM metric_counters LIMIT 1"),
            (report_db, "DELETE FROM events"),
            (report_db, "UPDATE orders SET status = 'x'"),
            (report_db, "INSERT INTO api_keys SELECT * FROM api_keys LIMIT 1"),
            (ingest_db, "DROP TABLE events"),
            (ingest_db, "ALTER TABLE events ADD COLUMN x int"),
            (ingest_db, "CREATE TABLE stolen (x int)"),
        ]
        for engine, statement in refused_sql:
            with (
                pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
                engine.begin() as conn,
            ):
                conn.exec_driver_sql(statement)
        with report_db.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one() >= len(stream)
    finally:
        report_db.dispose()
        ingest_db.dispose()
    assert {d["username"] for d in admin.acl_log()} >= {
        "analytics-producer",
        "analytics-bridge",
        "analytics-worker",
        "analytics-beat",
    }
    for client in (producer, bridge_client, worker_client, beat_client, admin):
        client.close()
