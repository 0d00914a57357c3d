"""End to end: real bridge and worker processes, real Redis pub/sub, real PostgreSQL, and each
test on both brokers (Redis, RabbitMQ)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.config import (
    DEFAULT_DEAD_LETTER_KEEP_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    Settings,
)
from analytics.models import DeadLetter, MetricCounter, Order, StoredEvent
from loadgen import channel_for, seed_examples
from tasks.app import make_app
from tests.analytics.helpers import assert_seed_aggregates
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_broker")]


def count(engine, model, *where) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def revenue(engine, tenant_id: str) -> tuple[int, Decimal]:
    with Session(engine) as session:
        count, total = session.execute(
            select(
                func.coalesce(func.sum(MetricCounter.count), 0), func.sum(MetricCounter.total)
            ).where(MetricCounter.tenant_id == tenant_id, MetricCounter.metric == "revenue")
        ).one()
    return count, total


@pytest.fixture(params=["redis", "rabbitmq"])
def pipeline_env(request, pipeline_env):
    """Every test of this file on both brokers: Redis (the run's DB), then RabbitMQ (a vhost
    of the test's own); Redis carries the published events either way."""
    if request.param == "redis":
        return pipeline_env
    return {**pipeline_env, "CELERY_BROKER_URL": request.getfixturevalue("rabbitmq").url}


@pytest.fixture
def celery(pipeline_env):
    """A producer on the test's broker, to send task messages as the bridge does."""
    keys = ("REDIS_URL", "CELERY_BROKER_URL")
    app = make_app(Settings.from_env({key: pipeline_env[key] for key in keys}))
    yield app
    app.close()


def item(document: dict[str, Any] | bytes, channel: str = "events:order:created") -> list[Any]:
    text = document.decode() if isinstance(document, bytes) else orjson.dumps(document).decode()
    return [channel, text, time.time()]


def order(tenant: str, n: int, total: float = 1.5) -> dict[str, Any]:
    return {
        "event_id": f"{tenant}-{n}",
        "event_type": "order.created",
        "tenant_id": tenant,
        "timestamp": "2024-05-01T10:15:00Z",
        "data": {"order_id": f"o-{n}", "total_amount": total, "currency": "EUR"},
    }


def test_every_seed_example_published_on_its_channel_changes_its_aggregates(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    start_worker()
    start_bridge()
    for document in seed_examples():
        receivers = redis_client.publish(
            channel_for(document["event_type"], channel_prefix), orjson.dumps(document)
        )
        assert receivers == 1
    wait_for(lambda: count(pg, StoredEvent) == 15, timeout=30, what="15 stored events")
    # The last task may still be committing its aggregates after the raw insert is visible.
    wait_for(lambda: count(pg, Order, Order.status == "fulfilled"), timeout=10, what="order state")
    time.sleep(0.5)
    assert_seed_aggregates(pg)


def test_the_seed_test_event_is_accepted_and_counted(pg, start_worker, start_bridge, pipeline_env):
    import subprocess
    import sys

    start_worker()
    start_bridge()
    published = subprocess.run(
        [sys.executable, "-m", "analytics", "publish"],
        env=pipeline_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 subscriber(s)" in published.stdout
    wait_for(lambda: revenue(pg, "test-tenant")[0] == 1, timeout=30, what="the test event")
    assert revenue(pg, "test-tenant") == (1, Decimal("99.99"))


def test_a_duplicate_published_twice_counts_once(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    start_worker()
    start_bridge()
    channel = f"{channel_prefix}:order:created"
    redis_client.publish(channel, orjson.dumps(order("dup", 1)))
    redis_client.publish(channel, orjson.dumps(order("dup", 1)))
    redis_client.publish(channel, orjson.dumps(order("dup", 2)))
    wait_for(lambda: count(pg, StoredEvent) == 2, timeout=30, what="two distinct events")
    time.sleep(1)  # let a late duplicate arrive if it were going to count
    assert revenue(pg, "dup") == (2, Decimal("3.0"))


def test_a_task_run_twice_for_the_same_batch_counts_once(pg, start_worker, celery):
    start_worker()
    batch = [item(order("twice", n)) for n in range(20)]
    celery.send_task("order.created", args=[batch], queue="order")
    celery.send_task("order.created", args=[batch], queue="order")
    wait_for(lambda: count(pg, StoredEvent) == 20, timeout=30, what="20 events")
    time.sleep(1.5)
    assert revenue(pg, "twice") == (20, Decimal("30"))


def test_a_batch_with_one_invalid_event_applies_the_rest_and_dead_letters_it(
    pg, start_worker, celery
):
    start_worker()
    bad = order("mixed", 2)
    bad["data"]["total_amount"] = "a lot"
    batch = [item(order("mixed", 1)), item(bad), item(order("mixed", 3))]
    celery.send_task("order.created", args=[batch], queue="order")
    wait_for(lambda: count(pg, DeadLetter) == 1, timeout=30, what="one dead letter")
    wait_for(lambda: revenue(pg, "mixed")[0] == 2, timeout=10, what="the two valid events")
    with Session(pg) as session:
        letter = session.execute(select(DeadLetter)).scalar_one()
    assert letter.error == "invalid order.created data: data.total_amount: Not a valid number."
    assert orjson.loads(letter.raw) == bad
    assert letter.channel == "events:order:created"


def test_two_worker_processes_updating_one_counter_lose_no_update(pg, start_worker, celery):
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    for start in range(0, 2000, 10):
        batch = [item(order("hot", n, total=0.01)) for n in range(start, start + 10)]
        celery.send_task("order.created", args=[batch], queue="order")
    wait_for(lambda: count(pg, StoredEvent) == 2000, timeout=120, what="2000 events")
    wait_for(lambda: revenue(pg, "hot")[0] == 2000, timeout=30, what="2000 increments")
    assert revenue(pg, "hot") == (2000, Decimal("20.00"))
    with Session(pg) as session:
        hours = session.execute(
            select(func.count()).where(
                MetricCounter.tenant_id == "hot", MetricCounter.metric == "revenue"
            )
        ).scalar_one()
    assert hours == 1  # one counter row took every increment


BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "invalid JSON": (b'{"event_type": "order.created", ', "invalid JSON"),
    "invalid UTF-8": (b'{"event_type": "order.created\xff"}', "not valid UTF-8"),
    "not an object": (b'["order.created"]', "must be a JSON object, got list"),
    "missing envelope field": (
        b'{"event_type": "order.created", "data": {"order_id": "o", "total_amount": 1}}',
        "invalid envelope: tenant_id: Missing data for required field.",
    ),
    "wrong type": (
        b'{"event_type": "order.created", "tenant_id": "t", '
        b'"data": {"order_id": "o", "total_amount": true}}',
        "data.total_amount: Not a valid number.",
    ),
    "data not an object": (
        b'{"event_type": "user.logged_in", "tenant_id": "t", "data": "yes"}',
        "data: Not a valid mapping type.",
    ),
    "bad timestamp": (
        b'{"event_type": "user.logged_in", "tenant_id": "t", "timestamp": "noon"}',
        "timestamp: Not a valid ISO 8601 timestamp",
    ),
    "oversized": (
        b'{"event_type": "order.created", "pad": "' + b"x" * (1024 * 1024) + b'"}',
        "over the limit",
    ),
    "nested too deep": (
        b'{"event_type": "order.created", "tenant_id": "t", "data": '
        + b"[" * 40
        + b"]" * 40
        + b"}",
        "JSON nested deeper than the limit of 32 levels",
    ),
}


def test_each_kind_of_bad_input_ends_as_one_dead_letter_and_nothing_stops(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    worker = start_worker()
    bridge = start_bridge()
    channel = f"{channel_prefix}:order:created"
    for raw, _ in BAD_INPUTS.values():
        assert redis_client.publish(channel, raw) == 1
    wait_for(
        lambda: count(pg, DeadLetter) == len(BAD_INPUTS), timeout=30, what="one dead letter each"
    )
    with Session(pg) as session:
        letters = {bytes(d.raw): d for d in session.execute(select(DeadLetter)).scalars()}
    for name, (raw, message) in BAD_INPUTS.items():
        # An oversized message keeps its first DEAD_LETTER_KEEP_BYTES, with its size.
        kept = (
            raw if len(raw) <= DEFAULT_MAX_PAYLOAD_BYTES else raw[:DEFAULT_DEAD_LETTER_KEEP_BYTES]
        )
        assert kept in letters, f"{name}: no dead letter with its exact (or first) bytes"
        assert message in letters[kept].error, f"{name}: {letters[kept].error!r}"
        assert letters[kept].channel == channel
        assert letters[kept].raw_size == len(raw)
    # Both processes are still up and still ingest.
    assert worker.alive and bridge.alive
    redis_client.publish(channel, orjson.dumps(order("after-bad", 1)))
    wait_for(
        lambda: revenue(pg, "after-bad")[0] == 1, timeout=30, what="a good event after the bad ones"
    )
    time.sleep(0.5)
    assert count(pg, DeadLetter) == len(BAD_INPUTS)


def test_unknown_event_types_on_any_channel_are_stored_and_counted(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    start_worker()
    start_bridge()
    document = {
        "event_id": str(uuid.uuid4()),
        "event_type": "wishlist.added",
        "tenant_id": "w",
        "data": {},
    }
    redis_client.publish(f"{channel_prefix}:wishlist:added", orjson.dumps(document))
    wait_for(lambda: count(pg, StoredEvent, StoredEvent.event_type == "wishlist.added"), timeout=30)
    wait_for(
        lambda: count(
            pg,
            MetricCounter,
            MetricCounter.metric == "events_by_type",
            MetricCounter.dimension == "wishlist.added",
        ),
        timeout=10,
    )


def test_worker_consumes_only_the_queues_it_is_given(pg, start_worker, celery):
    start_worker("-Q", "user")
    celery.send_task("order.created", args=[[item(order("queued", 1))]], queue="order")
    celery.send_task(
        "user.logged_in",
        args=[[item({"event_id": "l1", "event_type": "user.logged_in", "tenant_id": "queued"})]],
        queue="user",
    )
    wait_for(lambda: count(pg, StoredEvent, StoredEvent.event_type == "user.logged_in"), timeout=30)
    time.sleep(1)
    assert count(pg, StoredEvent, StoredEvent.event_type == "order.created") == 0
    start_worker("-Q", "order")
    wait_for(lambda: count(pg, StoredEvent, StoredEvent.event_type == "order.created"), timeout=30)


def test_a_batch_waits_for_an_unavailable_database_and_lands_once_it_is_back(
    start_worker, pipeline_env, celery, postgres_url
):
    from sqlalchemy import create_engine, text

    from analytics.migrations import run_migrations
    from tests.conftest import ADMIN_URL

    name = f"late_{uuid.uuid4().hex[:8]}"
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    worker = start_worker(env={**pipeline_env, "DATABASE_URL": url})
    celery.send_task("order.created", args=[[item(order("late", 1))]], queue="order")
    worker.wait_for_output("could not be stored now (OperationalError")
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        run_migrations(url)
        late = create_engine(url)
        wait_for(lambda: revenue(late, "late")[0] == 1, timeout=60, what="the retried batch")
        late.dispose()
        assert "retry 1 of 12" in worker.output()
    finally:
        worker.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_worker_started_before_migrate_retries_its_batch_until_the_schema_is_there(
    start_worker, pipeline_env, celery, postgres_url
):
    from sqlalchemy import create_engine, text

    from analytics.migrations import run_migrations
    from tests.conftest import ADMIN_URL

    name = f"unmigrated_{uuid.uuid4().hex[:8]}"
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    worker = start_worker(env={**pipeline_env, "DATABASE_URL": url})
    try:
        bad = item(b'{"not": "an event"}')
        celery.send_task("order.created", args=[[item(order("early", 1)), bad]], queue="order")
        # No table: the batch is the environment's problem, not the events'.
        worker.wait_for_output("could not be stored now (ProgrammingError")
        run_migrations(url)
        late = create_engine(url)
        wait_for(lambda: revenue(late, "early")[0] == 1, timeout=60, what="the retried batch")
        assert count(late, DeadLetter) == 1
        late.dispose()
    finally:
        worker.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_bridge_logs_counts_per_category_and_stops_cleanly_on_sigterm(
    start_bridge, start_worker, redis_client, channel_prefix, pg
):
    start_worker()
    bridge = start_bridge()
    for n in range(3):
        redis_client.publish(f"{channel_prefix}:order:created", orjson.dumps(order("log", n)))
    redis_client.publish(
        f"{channel_prefix}:user:logged_in",
        orjson.dumps({**order("log", 9), "event_type": "user.logged_in"}),
    )
    bridge.wait_for_output("forwarded order=3 user=1")
    assert bridge.stop() == 0
    assert "SIGTERM received: handing over what was read" in bridge.output()
    assert "bridge stopped" in bridge.output()


def test_backfill_rollups_waits_for_the_workers_and_celery_call_runs_the_same_task(
    pg, start_worker, pipeline_env
):
    import subprocess
    import sys
    from datetime import date, datetime
    from pathlib import Path

    from sqlalchemy import delete

    from analytics.models import ActiveUsersDaily
    from loadgen import Simulator
    from tests.analytics.helpers import apply, to_event

    documents = Simulator(tenants=2, seed=8, start=datetime(2024, 3, 4), days=3).events(900)
    apply(pg, [to_event(d) for d in documents])
    start_worker()
    done = subprocess.run(
        [sys.executable, "-m", "analytics", "backfill", "rollups", "--since", "2024-03-04",
         "--until", "2024-03-06", "--wait"],
        env=pipeline_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "queued 6 rollups.day tasks (2 tenant(s) x 3 day(s)) on queue rollups" in done.stdout
    assert "done: 6 tenant-days recomputed" in done.stdout
    day = date(2024, 3, 5)
    with Session(pg) as session, session.begin():
        session.execute(delete(ActiveUsersDaily).where(ActiveUsersDaily.day == day))
    celery_bin = Path(sys.executable).with_name("celery")
    called = subprocess.run(
        [str(celery_bin), "-A", "tasks", "call", "rollups.day", "--args", '["tenant-1", "2024-03-05"]'],
        env=pipeline_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    wait_for(
        lambda: count(
            pg,
            ActiveUsersDaily,
            ActiveUsersDaily.day == day,
            ActiveUsersDaily.tenant_id == "tenant-1",
        ),
        timeout=30,
        what="the rollup row recomputed by `celery call`",
    )


def test_beat_refreshes_the_rollups_of_days_that_received_events(
    pg, start_worker, start_process, pipeline_env, tmp_path
):
    from analytics.models import ActiveUsersDaily, RollupDirtyDay
    from tests.analytics.helpers import apply, make

    env = {**pipeline_env, "ROLLUP_INTERVAL": "1"}
    apply(pg, [make("user.logged_in", {}, "2024-03-05T10:00:00Z", "beat-1", user_id="u1")])
    assert count(pg, RollupDirtyDay) == 1
    start_worker("-Q", "rollups", env=env)
    beat = start_process("beat", ["beat", "-s", str(tmp_path / "schedule")], env)
    wait_for(lambda: count(pg, RollupDirtyDay) == 0, timeout=60, what="beat's refresh to run")
    assert count(pg, ActiveUsersDaily) == 30  # 03-05 and the 29 days whose MAU it counts in
    assert beat.alive
    assert "Scheduler: Sending due task rollups-refresh (rollups.refresh)" in beat.output()


def test_flower_runs_behind_basic_auth_and_sees_the_workers(
    start_worker, start_process, pipeline_env
):
    import base64
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_worker()
    start_process(
        "flower",
        ["flower", f"--port={port}", "--address=127.0.0.1", "--basic-auth=ops:secret"],
        pipeline_env,
    )
    url = f"http://127.0.0.1:{port}/api/workers?refresh=1"

    def get(auth: str | None) -> tuple[int, bytes]:
        request = urllib.request.Request(url)
        if auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    wait_for(lambda: get(None)[0] == 401, timeout=60, what="Flower to answer")
    assert get("ops:wrong")[0] == 401
    # The worker fixture names nodes test-<hex>@host.
    wait_for(
        lambda: (reply := get("ops:secret"))[0] == 200 and b'"test-' in reply[1],
        timeout=60,
        what="Flower to list the worker",
    )


def test_two_bridges_count_every_event_once_and_every_bad_message_once(
    pg, start_worker, start_bridge, redis_client, channel_prefix
):
    start_worker()
    start_bridge()
    start_bridge()
    channel = f"{channel_prefix}:order:created"
    for n in range(50):
        assert redis_client.publish(channel, orjson.dumps(order("twin", n))) == 2
    for raw, _ in list(BAD_INPUTS.values())[:3]:
        assert redis_client.publish(channel, raw) == 2
    wait_for(lambda: count(pg, StoredEvent) == 50, timeout=30, what="50 events")
    wait_for(lambda: count(pg, DeadLetter) == 3, timeout=30, what="3 dead letters")
    time.sleep(1.5)  # both copies of everything have had time to land
    assert revenue(pg, "twin") == (50, Decimal("75.0"))
    assert count(pg, DeadLetter) == 3
