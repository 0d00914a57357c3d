"""The bounded raw store: partitions, dedup across them, prune by whole partitions, rebuild after.

PostgreSQL tests run on the session's migrated database (``pg``); the months they
use (2023) are their own, and each test drops what it created.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from analytics.config import Settings
from analytics.errors import ConfigError
from analytics.events import parse
from analytics.ingest import Context, apply_events
from analytics.models import DeadLetter, MetricCounter, StoredEvent
from analytics.rebuild import RebuildError, rebuild
from analytics.retention import (
    DEFAULT_PARTITION,
    RetentionError,
    ensure_partitions,
    parse_age,
    partitions,
    prune,
    pruned_before,
)
from tests.analytics.helpers import apply, make

NOW = datetime(2023, 7, 15, 12, 0)
CTX = Context(default_currency="USD")


@pytest.fixture
def months(pg):
    """The run's database with no partition of 2023 before or after the test."""

    def drop() -> None:
        with pg.begin() as conn:
            for (name,) in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'events_p2023%'")
            ):
                conn.execute(text(f"DROP TABLE {name}"))

    drop()
    yield pg
    drop()


def order(event_id: str, ts: str, total: int = 10, tenant: str = "tenant-a"):
    return make(
        "order.created",
        {"order_id": f"o-{event_id}", "total_amount": total},
        timestamp=ts,
        event_id=event_id,
        tenant_id=tenant,
    )


def revenue(engine) -> tuple[int, Decimal | None]:
    with Session(engine) as session:
        count, total = session.execute(
            select(
                func.coalesce(func.sum(MetricCounter.count), 0), func.sum(MetricCounter.total)
            ).where(MetricCounter.metric == "revenue")
        ).one()
    return count, total


def stored(engine) -> list[tuple[str, datetime]]:
    with Session(engine) as session:
        return [
            (row[0], row[1])
            for row in session.execute(
                select(StoredEvent.event_id, StoredEvent.occurred_at).order_by(StoredEvent.id)
            )
        ]


def where_rows_are(engine) -> dict[str, str]:
    """event_id -> the partition holding it."""
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT event_id, tableoid::regclass::text FROM events")).all()
        )


def maintain(engine, fn, *args, **kwargs):
    with Session(engine) as session, session.begin():
        return fn(session, *args, **kwargs)


def test_migrate_leaves_this_month_and_the_next_ones_ready_and_a_default(pg):
    with Session(pg) as session:
        names = [p.name for p in partitions(session)]
    this = datetime.now()
    assert f"events_p{this:%Y%m}" in names
    assert names[-1] == DEFAULT_PARTITION
    assert len([n for n in names if n >= f"events_p{this:%Y%m}" and n != DEFAULT_PARTITION]) >= 3


def test_an_event_of_a_month_without_partition_is_caught_by_default_then_moved_out(months):
    apply(months, [order("late", "2023-03-10T08:00:00Z")])
    [where] = where_rows_are(months).values()
    assert where == DEFAULT_PARTITION
    before = stored(months)
    made = maintain(months, ensure_partitions, NOW, 0)
    assert "events_p202303" in made.created and made.moved == 1
    assert where_rows_are(months) == {"late": "events_p202303"}
    assert stored(months) == before
    # Ids are kept, and the sequence goes on past them.
    apply(months, [order("next", "2023-03-11T08:00:00Z")])
    with Session(months) as session:
        ids = session.execute(select(StoredEvent.id).order_by(StoredEvent.id)).scalars().all()
    assert ids[1] > ids[0]
    assert maintain(months, ensure_partitions, NOW, 0).created == []  # idempotent


@pytest.mark.parametrize("extra", [0, 60], ids=["small batches", "COPY batches"])
def test_a_re_sent_event_id_with_another_time_counts_once_across_a_partition_boundary(
    engine, extra
):
    if engine.dialect.name == "postgresql":
        apply(engine, [order("seed", "2023-01-31T12:00:00Z"), order("s2", "2023-02-01T12:00:00Z")])
        maintain(engine, ensure_partitions, NOW, 0)  # January and February partitions exist
    first = apply(engine, [order("e-1", "2023-01-31T23:59:59Z")])
    # A re-stamped retry, then the same envelope, each among other events.
    again = apply(engine, [*others(extra, "10"), order("e-1", "2023-02-01T00:00:01Z")])
    same = apply(engine, [order("e-1", "2023-01-31T23:59:59Z"), *others(extra, "11")])
    assert (first.stored, again.stored, same.stored) == (1, extra, extra)
    assert (again.duplicates, same.duplicates) == (1, 1)
    counts = [t for e, t in stored(engine) if e == "e-1"]
    assert counts == [datetime(2023, 1, 31, 23, 59, 59)]
    base = (2 if engine.dialect.name == "postgresql" else 0) + 2 * extra
    assert revenue(engine) == (base + 1, Decimal(10 * (base + 1)))
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for name in ("events_p202301", "events_p202302"):
                conn.execute(text(f"DROP TABLE {name}"))


def test_an_id_less_timestamp_less_payload_forwarded_twice_counts_once(engine):
    document = b'{"event_type": "user.logged_in", "tenant_id": "t", "user_id": "u", "data": {}}'
    copies = [
        parse(document, channel="events:user:logged_in", received_at=at, max_bytes=1 << 20)
        for at in (datetime(2023, 4, 30, 23, 59, 59, 999000), datetime(2023, 5, 1, 0, 0, 0, 2000))
    ]
    assert copies[0].event_id == copies[1].event_id
    assert copies[0].timestamp != copies[1].timestamp
    results = [apply(engine, [copy]) for copy in copies]
    assert [r.stored for r in results] == [1, 0]


def others(n: int, day: str) -> list:
    """``n`` more events, so that a batch takes the COPY path of the writer (50 rows or more)."""
    return [order(f"{day}-{i}", f"2023-06-{day}T11:00:00Z") for i in range(n)]


@pytest.mark.parametrize("extra", [0, 60], ids=["small batches", "COPY batches"])
def test_two_transactions_with_one_id_under_two_times_store_it_once(pg, extra):
    # The second waits for the first's key lock, then finds its row: no race lets both in.
    session = Session(pg)
    session.begin()
    first = apply_events(
        session, [order("race", "2023-06-01T10:00:00Z"), *others(extra, "01")], CTX
    )
    outcome: dict[str, int] = {}

    def second() -> None:
        batch = [*others(extra, "02"), order("race", "2023-06-02T10:00:00Z")]
        outcome["stored"] = apply(pg, batch).stored

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the second transaction did not wait for the first"
    session.commit()
    session.close()
    thread.join(timeout=10)
    assert (first.stored, outcome["stored"]) == (1 + extra, extra)
    assert [e for e, _ in stored(pg)].count("race") == 1


def populate(engine) -> dict[str, int]:
    """Events in January, February and March 2023 (and one DEFAULT would catch), dead letters."""
    events = [
        order("jan-1", "2023-01-05T10:00:00Z"),
        order("jan-2", "2023-01-20T10:00:00Z"),
        order("feb-1", "2023-02-10T10:00:00Z"),
        order("mar-1", "2023-03-10T10:00:00Z"),
    ]
    apply(engine, events)
    with Session(engine) as session, session.begin():
        for n, when in enumerate((datetime(2023, 1, 2), datetime(2023, 6, 1))):
            session.add(
                DeadLetter(
                    received_at=when,
                    channel="events:x",
                    raw=b"x",
                    error="bad",
                    messages={},
                    fingerprint=f"fp-{n}",
                )
            )
    with Session(engine) as session:
        return dict(session.execute(select(StoredEvent.event_id, StoredEvent.id)).all())


def test_prune_drops_whole_old_partitions_only_and_never_aggregates(months):
    populate(months)
    maintain(months, ensure_partitions, NOW, 0)
    aggregates = revenue(months)
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(months, "before_cursor_execute", seen)
    try:
        # Cutoff 2023-02-15: January is wholly before it; February is not (ends 03-01).
        result = maintain(months, prune, timedelta(days=150), NOW)
    finally:
        event.remove(months, "before_cursor_execute", seen)
    assert result.cutoff == datetime(2023, 2, 15, 12, 0)
    assert result.dropped == ["events_p202301"]
    assert (result.events, result.dead_letters) == (2, 1)
    assert [e for e, _ in stored(months)] == ["feb-1", "mar-1"]
    assert revenue(months) == aggregates == (4, Decimal("40"))
    assert not [s for s in statements if s.lstrip().upper().startswith("DELETE FROM EVENTS")]
    with months.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('events_p202301')")).scalar() is None
        letters = conn.execute(text("SELECT received_at FROM dead_letters")).scalars().all()
    assert letters == [datetime(2023, 6, 1)]
    with Session(months) as session:
        assert pruned_before(session) == datetime(2023, 2, 1)
    again = maintain(months, prune, timedelta(days=150), NOW)
    assert (again.dropped, again.events) == ([], 0)
    # A pruned event re-sent counts once still: its key outlives it, as its sums do.
    resent = apply(
        months, [order("jan-1", "2023-01-05T10:00:00Z"), order("jun-1", NOW.isoformat())]
    )
    assert (resent.stored, resent.duplicates) == (1, 1)
    assert revenue(months) == (5, Decimal("50"))
    assert "jan-1" not in [e for e, _ in stored(months)]


def test_prune_keeps_a_partition_holding_an_event_the_warehouse_has_not_received(months):
    ids = populate(months)
    maintain(months, ensure_partitions, NOW, 0)
    kept = maintain(months, prune, timedelta(days=150), NOW, keep_from_id=ids["jan-2"])
    assert (kept.dropped, kept.kept_for_warehouse) == ([], ["events_p202301"])
    assert len(stored(months)) == 4
    with Session(months) as session:
        assert pruned_before(session) is None  # nothing went: rebuilds still see everything
    # Once the warehouse has everything in January, the partition goes.
    later = maintain(months, prune, timedelta(days=150), NOW, keep_from_id=ids["jan-2"] + 1)
    assert later.dropped == ["events_p202301"]


def test_prune_on_sqlite_deletes_old_rows_except_those_kept_for_the_warehouse(sqlite_url):
    from analytics.db import make_engine

    engine = make_engine(sqlite_url)
    try:
        ids = populate(engine)
        result = maintain(engine, prune, timedelta(days=150), NOW, keep_from_id=ids["jan-2"])
        assert (result.events, result.dead_letters) == (1, 1)
        assert [e for e, _ in stored(engine)] == ["jan-2", "feb-1", "mar-1"]
        assert revenue(engine) == (4, Decimal("40"))
    finally:
        engine.dispose()


def test_a_rebuild_cannot_start_before_the_horizon_and_keeps_state_after_a_prune(months):
    populate(months)
    maintain(months, ensure_partitions, NOW, 0)
    maintain(months, prune, timedelta(days=150), NOW)
    from datetime import date

    with pytest.raises(RebuildError, match="start on 2023-02-01 at the earliest"):
        maintain(months, rebuild, "tenant-a", date(2023, 1, 15), date(2023, 3, 31), CTX)
    maintain(months, rebuild, "tenant-a", date(2023, 2, 1), date(2023, 3, 31), CTX)
    # January's revenue (whose raw events are gone) and the state of its orders stay.
    assert revenue(months) == (4, Decimal("40"))
    with months.connect() as conn:
        orders = conn.execute(text("SELECT order_id FROM orders ORDER BY 1")).scalars().all()
    assert orders == ["o-feb-1", "o-jan-1", "o-jan-2", "o-mar-1"]


def test_ages_read_as_days_or_weeks_and_nonsense_is_refused():
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("12w") == timedelta(days=84)
    assert parse_age("30") == timedelta(days=30)
    for bad in ("", "abc", "0d", "-5d", "3 months"):
        with pytest.raises(RetentionError):
            parse_age(bad)


def test_retention_settings_are_validated():
    assert Settings.from_env({}).raw_retention_days == 0
    assert Settings.from_env({"RAW_RETENTION_DAYS": "90"}).raw_retention_days == 90
    for bad in ("-1", "ninety"):
        with pytest.raises(ConfigError, match="RAW_RETENTION_DAYS"):
            Settings.from_env({"RAW_RETENTION_DAYS": bad})
    with pytest.raises(ConfigError, match="RAW_PARTITIONS_AHEAD"):
        Settings.from_env({"RAW_PARTITIONS_AHEAD": "0"})


def test_beat_prunes_only_when_a_retention_is_set():
    from tasks.app import make_app
    from tasks.queues import RETENTION_PARTITIONS_TASK, RETENTION_PRUNE_TASK

    def tasks(env: dict[str, str]) -> set[str]:
        schedule = make_app(Settings.from_env(env)).conf.beat_schedule
        return {entry["task"] for entry in schedule.values()}

    assert RETENTION_PARTITIONS_TASK in tasks({})
    assert RETENTION_PRUNE_TASK not in tasks({})
    assert RETENTION_PRUNE_TASK in tasks({"RAW_RETENTION_DAYS": "90"})


def test_the_retention_commands_answer_in_one_line_on_sqlite(sqlite_url):
    import subprocess
    import sys

    env = {"DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "analytics", "retention", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True)

    pruned = run("prune", "--older-than", "90d", "--format", "json")
    assert pruned.returncode == 0, pruned.stderr
    assert '"events":0' in pruned.stdout
    bad = run("prune", "--older-than", "3 months")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error: --older-than '3 months' is not an age such as 90d or 12w"
    listed = run("partitions")
    assert listed.returncode == 0
    assert "not partitioned here (SQLite)" in listed.stderr
