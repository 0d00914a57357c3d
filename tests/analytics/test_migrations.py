"""One Alembic chain takes empty PostgreSQL and SQLite databases to head, matching the models."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from analytics.models import Base
from analytics.retention import include_name


def head() -> str:
    from alembic.script import ScriptDirectory

    from analytics.migrations import alembic_config

    return str(ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head())


def diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_name}
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_postgresql_at_head_matches_the_models(postgres_url):
    assert diff(postgres_url) == []


def test_sqlite_at_head_matches_the_models(sqlite_url):
    assert diff(sqlite_url) == []


def test_every_model_table_exists_after_migrating(sqlite_url):
    engine = create_engine(sqlite_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_analytics_migrate_upgrades_an_empty_file_and_is_safe_to_rerun(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "analytics", "migrate"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert f"database is at schema revision {head()}" in done.stdout
    assert diff(url) == []


def test_analytics_migrate_reports_an_unreachable_database_in_one_line(tmp_path):
    env = {"DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "analytics", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: migration failed:")


@pytest.fixture
def scratch_postgres():
    """An empty PostgreSQL database of this test's own, dropped after it."""
    from tests.conftest import RUN_ID, scratch_database

    with scratch_database(f"analytics_test_{RUN_ID}_migrate") as url:
        yield url


def events_of(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT id, tenant_id, event_id, occurred_at, payload::text FROM events ORDER BY id"
                )
            )
        ]


def test_0010_partitions_a_populated_events_table_and_downgrades_back(scratch_postgres):
    from alembic import command
    from analytics.migrations import alembic_config

    config = alembic_config(scratch_postgres)
    command.upgrade(config, "0009")
    engine = create_engine(scratch_postgres)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (tenant_id, event_id, event_type, known, occurred_at, "
                    "received_at, channel, event_id_derived, timestamp_derived, payload) "
                    "SELECT 't' || (n % 3), 'e-' || n, 'user.logged_in', true, "
                    "timestamp '2024-01-15' + n * interval '1 day', now(), 'events:user:x', "
                    "false, false, json_build_object('n', n) FROM generate_series(1, 90) n"
                )
            )
        before = events_of(engine)
        command.upgrade(config, "0010")
        assert events_of(engine) == before
        with engine.connect() as conn:
            parts = (
                conn.execute(
                    text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
                    )
                )
                .scalars()
                .all()
            )
            indexes = (
                conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1")
                )
                .scalars()
                .all()
            )
        # 2024-01-16 .. 2024-04-14: a partition per month, and DEFAULT.
        assert parts == [
            "events_default", "events_p202401", "events_p202402", "events_p202403",
            "events_p202404",
        ]  # fmt: skip
        assert indexes == [
            "ix_events_tenant_id_event_id_occurred_at",
            "ix_events_tenant_id_occurred_at",
            "pk_events",
        ]
        with engine.begin() as conn:  # the id sequence goes on after the copied ids
            conn.execute(
                text(
                    "INSERT INTO events (tenant_id, event_id, event_type, known, occurred_at, "
                    "received_at, channel, event_id_derived, timestamp_derived, payload) "
                    "VALUES ('t0', 'new', 'x.y', false, '2024-02-02', now(), 'c', false, false, '{}')"
                )
            )
        after = events_of(engine)
        assert after[:-1] == before and after[-1][0] == before[-1][0] + 1
        command.downgrade(config, "0009")
        assert events_of(engine) == after
        with engine.connect() as conn:
            kind = conn.execute(text("SELECT relkind FROM pg_class WHERE relname = 'events'"))
            assert kind.scalar() == "r"
            indexes = (
                conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1")
                )
                .scalars()
                .all()
            )
        assert indexes == [
            "ix_events_tenant_id_event_id",
            "ix_events_tenant_id_occurred_at",
            "pk_events",
        ]
        command.upgrade(config, "head")
        assert diff(scratch_postgres) == []
        assert events_of(engine) == after
    finally:
        engine.dispose()


def _database_at(dialect: str, request: pytest.FixtureRequest, revision: str) -> tuple[str, Any]:
    """A scratch database of ``dialect`` migrated to ``revision``: its URL and Alembic config."""
    from alembic import command
    from analytics.migrations import alembic_config

    if dialect == "postgresql":
        url = request.getfixturevalue("scratch_postgres")
    else:
        url = f"sqlite:///{request.getfixturevalue('tmp_path') / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, revision)
    return url, config


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0011_marks_measured_days_dirty_so_the_first_report_fills_the_percentiles(dialect, request):
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.models import RollupDirtyDay
    from analytics.reports import Query, run
    from tests.analytics.helpers import apply, make

    # Stored by today's writer (it writes tables of later revisions), then taken back to 0010.
    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    try:
        # Stored before 0011, already refreshed: nothing dirty.
        timed = [
            make("user.logged_in", {}, f"2024-03-0{d}T10:00:00Z", f"e{d}",
                 metadata={"response_time_ms": 10 * d})
            for d in (1, 2)
        ]  # fmt: skip
        out = make("user.logged_out", {"session_duration_seconds": 42}, "2024-03-05T10:00:00Z", "o")
        apply(engine, [*timed, out])
        command.downgrade(config, "0010")
        with Session(engine) as session, session.begin():
            session.execute(delete(RollupDirtyDay))
        command.upgrade(config, "head")
        with Session(engine) as session, session.begin():
            ops = run(session, "operations", Query("tenant-a"))
            sessions = run(session, "sessions", Query("tenant-a"))
        assert [(r["date"], r["p50_response_ms"]) for r in ops] == [
            ("2024-03-01", 10.0),
            ("2024-03-02", 20.0),
            ("2024-03-05", None),
        ]
        assert [(r["date"], r["p50_seconds"]) for r in sessions] == [("2024-03-05", 42.0)]
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0012_marks_counted_days_dirty_so_the_first_report_fills_the_report_rollups(
    dialect, request
):
    from datetime import datetime

    import orjson
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.events import parse
    from analytics.models import RollupDirtyDay
    from analytics.reports import Query, run
    from tests.analytics.helpers import apply
    from tests.reports import dataset, oracle

    # Stored by today's writer, then taken back to 0011 (the rollups' tables dropped).
    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    now = datetime(2024, 3, 20, 12, 0)
    documents = [d for d in dataset.build() if d["tenant_id"] == "tenant-1"]
    try:
        # Stored before 0012, already refreshed: nothing dirty.
        events = [
            parse(orjson.dumps(d), channel="events:x:y", received_at=now, max_bytes=1 << 20)
            for d in documents
        ]
        for start in range(0, len(events), 500):
            apply(engine, events[start : start + 500])
        command.downgrade(config, "0011")
        with Session(engine) as session, session.begin():
            session.execute(delete(RollupDirtyDay))
        command.upgrade(config, "head")
        for name in ("retention", "conversion", "logins"):
            with Session(engine) as session, session.begin():
                actual = run(session, name, Query("tenant-1", now=now))
            assert actual, name
            assert actual == oracle.expected(name, documents, tenant="tenant-1", now=now), name
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0013_fills_the_sales_summaries_from_what_was_stored_before(dialect, request):
    """Summaries dropped (downgrade to 0012) and refilled by 0013: every report reads the same."""
    from datetime import date, datetime

    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.models import ProductSaleMonth
    from analytics.reports import Query, run
    from tests.analytics.helpers import apply, make

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)

    def item(product: str, quantity: int, price: str, name: str | None = "Mug") -> dict:
        return {"product_id": product, "quantity": quantity, "unit_price": price, "name": name}

    events = [
        make("order.created", {"order_id": "o1", "total_amount": "10.50", "currency": "EUR",
             "location_id": "L", "items": [item("p1", 2, "5.25")]}, "2024-01-30T10:00:00Z", "a"),
        make("order.created", {"order_id": "o2", "total_amount": "7", "location_id": "L",
             "items": [item("p1", 1, "4", "Big mug"), item("p2", 1, "3", None)]},
             "2024-02-02T09:00:00Z", "b"),
        make("payment.refunded", {"payment_id": "y1", "order_id": "o1", "refund_amount": "3"},
             "2024-02-03T09:00:00Z", "c"),
        make("payment.refunded", {"payment_id": "y2", "order_id": "o9", "refund_amount": "1"},
             "2024-02-03T10:00:00Z", "d"),
        make("inventory.restocked", {"product_id": "p1", "location_id": "L", "sku": "S1",
             "new_quantity": 9}, "2024-01-01T00:00:00Z", "e"),
    ]  # fmt: skip
    reports = ("revenue-by-day", "top-products", "inventory", "dead-stock")
    ranges = [(None, None), (date(2024, 1, 30), date(2024, 2, 2)), (date(2024, 2, 1), None)]
    now = datetime(2024, 4, 1)

    def everything() -> list:
        with Session(engine) as session, session.begin():
            return [
                run(session, name, Query("tenant-a", since, until, now=now))
                for name in reports
                for since, until in ranges
            ]

    try:
        apply(engine, events)
        before = everything()
        # One refund resolved by the writer (EUR, its order's), one looked up when read.
        assert [(r["currency"], r["refunds"]) for r in before[0][:2]] == [
            ("EUR", 3.0),
            ("USD", 1.0),
        ]
        command.downgrade(config, "0012")
        command.upgrade(config, "head")
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(ProductSaleMonth)) == 3
        assert everything() == before
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0014_fills_the_reach_rollups_from_what_was_stored_before(dialect, request):
    """Rollups dropped (downgrade to 0013) and refilled by 0014 from user_activity,
    login_locations and the counters: the rows ingest made, and the oracle's reports."""
    from datetime import date, datetime

    import orjson
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.events import parse
    from analytics.models import CityLogin, CityUser, UserHour
    from analytics.reports import Query, run
    from analytics.rollups import refresh_dirty
    from tests.analytics.helpers import apply
    from tests.reports import dataset, oracle

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    now = datetime(2024, 3, 20, 12, 0)
    documents = dataset.build()

    def snapshot() -> list[list[tuple]]:
        found = []
        with Session(engine) as session:
            for model in (UserHour, CityUser, CityLogin):
                columns = list(model.__table__.columns)
                found.append(
                    [tuple(r) for r in session.execute(select(*columns).order_by(*columns))]
                )
        return found

    try:
        events = [
            parse(orjson.dumps(d), channel="events:x:y", received_at=now, max_bytes=1 << 20)
            for d in documents
        ]
        for start in range(0, len(events), 500):
            apply(engine, events[start : start + 500])
        with Session(engine) as session, session.begin():
            refresh_dirty(session)  # nothing dirty left: only 0014 can have the cycles set
        made = snapshot()
        assert all(made)
        command.downgrade(config, "0013")
        command.upgrade(config, "head")
        assert snapshot() == made
        ranges = [(None, None), (date(2024, 3, 6), None), (None, date(2024, 3, 6))]
        # inventory over all history reads the cycles the refresh stores again (0014 marks
        # the stock days dirty).
        for name in ("activity-heatmap", "geo", "inventory"):
            for since, until in ranges:
                with Session(engine) as session, session.begin():
                    actual = run(session, name, Query("tenant-1", since, until, now=now))
                expected = oracle.expected(
                    name, documents, tenant="tenant-1", since=since, until=until, now=now
                )
                assert actual == expected, (name, since, until)
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0015_sums_the_daily_counters_and_drops_what_no_report_read_up_and_down(
    dialect, request, monkeypatch
):
    """Stored as before 0015 (every counter by hour, events by hour and type), then
    downgraded, upgraded, downgraded and upgraded again: every report equals the oracle's
    at each step, over whole and partial ranges, and every counter's sums stay."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.ingest import handlers
    from analytics.ingest.handlers import common_changes
    from analytics.models import MetricCounter
    from analytics.reports import REPORTS
    from tests.reports import dataset
    from tests.reports.test_against_oracle import NOW, RANGES, _load, _mismatches

    class EveryMetric:
        """What HOURLY_METRICS was before 0015: every metric counted by hour."""

        def __contains__(self, metric: object) -> bool:
            return True

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    documents = dataset.build()

    def common_changes_before(event: Any) -> list[Any]:
        """What every event changed before 0015: one ``events`` counter by hour and type."""
        changes = common_changes(event)
        changes[:2] = [handlers.counter(event, "events", event.event_type)]
        return changes

    def by_type(metric: str) -> dict[str, int]:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT dimension, sum(count) FROM metric_counters WHERE metric = :m "
                     "GROUP BY dimension"), {"m": metric}
            ).all()  # fmt: skip
        return {dimension: int(n) for dimension, n in found}

    def counters() -> tuple[int, dict[str, tuple[int, int]]]:
        """How many counter rows, and each metric's summed count and total."""
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT metric, sum(count), sum(total), count(*) FROM metric_counters "
                     "GROUP BY metric")
            ).all()  # fmt: skip
        return sum(rows for *_, rows in found), {m: (int(c), int(t)) for m, c, t, _ in found}

    def metrics_with_hours() -> set[str]:
        """The metrics with a row at an hour other than midnight."""
        with Session(engine) as session:
            stamps = session.execute(select(MetricCounter.metric, MetricCounter.hour).distinct())
            return {metric for metric, hour in stamps if hour.hour != 0}

    def every_report_is_the_oracles() -> None:
        for tenant in ("tenant-1", "tenant-2"):
            found = _mismatches(engine, documents, tenant, RANGES, NOW, REPORTS)
            assert [m[:3] for m in found] == []

    def payment_index() -> bool:
        return "ix_payments_tenant_id_order_id" in {
            index["name"] for index in inspect(engine).get_indexes("payments")
        }

    try:
        with monkeypatch.context() as patch:
            patch.setattr(handlers, "HOURLY_METRICS", EveryMetric())
            patch.setattr(handlers, "common_changes", common_changes_before)
            _load(engine, documents)
        every_report_is_the_oracles()  # the rollups and alerts refreshed at head
        with engine.begin() as conn:  # and the counters as they were before 0018
            conn.execute(text("DELETE FROM metric_counters WHERE metric = 'payment_outcomes'"))
        hourly_rows, sums = counters()
        types = by_type("events")
        assert len(types) >= 10
        assert {"revenue", "logins", "payments_refunded"} <= metrics_with_hours()
        command.downgrade(config, "0014")
        assert payment_index()
        assert {"customer_id", "user_id", "location_id"} <= columns_of(engine, "orders")
        assert "order_id" in columns_of(engine, "payments")
        assert {"id", "event_id", "user_id"} <= columns_of(engine, "user_sessions")
        assert inspect(engine).get_pk_constraint("user_sessions")["constrained_columns"] == ["id"]
        every_report_is_the_oracles()

        command.upgrade(config, "head")
        assert diff(url) == []
        assert not payment_index()
        daily_rows, daily_sums = counters()
        # Up to head: 0018 also counts the payments' hourly outcomes, and their days.
        outcomes = daily_sums.pop("payment_outcomes")
        assert outcomes == (sums["payments_processed"][0] + sums["payments_failed"][0], 0)
        assert daily_sums == {**sums, "events_by_type": sums["events"]}
        assert by_type("events_by_type") == types
        assert set(by_type("events")) == {""}
        assert daily_rows < hourly_rows
        assert metrics_with_hours() <= {"events", "payment_outcomes"}
        every_report_is_the_oracles()

        command.downgrade(config, "0014")
        assert counters()[1] == daily_sums
        every_report_is_the_oracles()
        command.upgrade(config, "head")
        # Already split: the upgrade again keeps every sum, and no type-less day row.
        assert counters()[1] == {**daily_sums, "payment_outcomes": outcomes}
        assert by_type("events_by_type") == types
        every_report_is_the_oracles()
    finally:
        engine.dispose()


def columns_of(engine: Any, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0016_fills_the_event_keys_so_an_event_stored_before_is_still_a_duplicate(dialect, request):
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.models import EventKey
    from tests.analytics.helpers import apply, make

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    try:
        before = [make("user.logged_in", {}, f"2024-03-0{d}T10:00:00Z", f"e{d}") for d in (1, 2)]
        apply(engine, before)
        command.downgrade(config, "0015")
        assert "event_keys" not in inspect(engine).get_table_names()
        command.upgrade(config, "head")
        with Session(engine) as session:
            keys = session.execute(select(EventKey.tenant_id, EventKey.event_id)).all()
        assert sorted(tuple(k) for k in keys) == [("tenant-a", "e1"), ("tenant-a", "e2")]
        # Re-sent under another time, and a new one beside it.
        again = make("user.logged_in", {}, "2024-03-09T10:00:00Z", "e1")
        result = apply(engine, [again, make("user.logged_in", {}, "2024-03-09T10:00:00Z", "e3")])
        assert (result.stored, result.duplicates) == (1, 1)
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0017_keeps_every_row_and_sum_reports_read_up_and_down(dialect, request):
    """Stored, then taken down to 0016 (the dropped columns back), up, down and up
    again: the rebuilt tables keep every row and value they keep, a day's logins summed
    as 0015 and 0016 sum them equal ``city_logins``, and every report equals the oracle's."""
    from alembic import command
    from analytics.reports import REPORTS
    from tests.reports import dataset
    from tests.reports.test_against_oracle import NOW, RANGES, _load, _mismatches

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    documents = dataset.build()

    #: What each rebuilt table keeps, compared before and after every step.
    kept = {
        "product_sales": "tenant_id, day, product_id, currency, location_id, name, units, "
        "revenue, last_sold_at",
        "user_activity": "tenant_id, hour, user_id",
        "login_locations": "tenant_id, day, country, city, user_id",
        "user_hours": "tenant_id, hour_of_day, user_id, first_day, last_day",
    }

    def stored() -> dict[str, list[tuple]]:
        found = {}
        with engine.connect() as conn:
            for table, columns in kept.items():
                found[table] = [
                    tuple(row)
                    for row in conn.execute(
                        text(f"SELECT {columns} FROM {table} ORDER BY {columns}")
                    )
                ]
        return found

    def every_report_is_the_oracles() -> None:
        for tenant in ("tenant-1", "tenant-2"):
            found = _mismatches(engine, documents, tenant, RANGES, NOW, REPORTS)
            assert [m[:3] for m in found] == []

    def logins_by_day(table: str) -> dict[tuple, int]:
        """What 0015's logins rollup summed (``login_locations``), or ``city_logins``."""
        with engine.connect() as conn:
            found = conn.execute(
                text(f"SELECT tenant_id, day, sum(logins) FROM {table} GROUP BY tenant_id, day")
            ).all()
        return {(tenant, str(day)): int(n) for tenant, day, n in found}

    def fill_factors() -> set[str]:
        """The tables given a fill factor (PostgreSQL; SQLite has none)."""
        if dialect != "postgresql":
            return set()
        with engine.connect() as conn:
            return set(
                conn.scalars(
                    text("SELECT relname FROM pg_class WHERE 'fillfactor=80' = ANY(reloptions)")
                )
            )

    try:
        _load(engine, documents)
        every_report_is_the_oracles()  # which refreshes the rollups: user_hours filled
        before = stored()
        assert all(before.values())
        command.downgrade(config, "0016")
        assert "sku" in columns_of(engine, "product_sales")
        assert "events" in columns_of(engine, "user_activity")
        assert fill_factors() == set()
        assert logins_by_day("login_locations") == logins_by_day("city_logins")
        assert stored() == before
        # As an older writer left them: an sku.
        with engine.begin() as conn:
            conn.execute(text("UPDATE product_sales SET sku = 'SKU-1'"))
        every_report_is_the_oracles()

        command.upgrade(config, "head")
        assert diff(url) == []
        assert "sku" not in columns_of(engine, "product_sales")
        assert "events" not in columns_of(engine, "user_activity")
        assert "logins" not in columns_of(engine, "login_locations")
        if dialect == "postgresql":
            assert fill_factors() == {"orders", "product_sales"}
        assert stored() == before
        every_report_is_the_oracles()

        command.downgrade(config, "0016")
        assert stored() == before
        every_report_is_the_oracles()
        command.upgrade(config, "head")
        assert diff(url) == []
        assert stored() == before
        every_report_is_the_oracles()
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0018_counts_payments_by_day_and_their_outcomes_by_hour_up_and_down(
    dialect, request, monkeypatch
):
    """Stored as before 0018 (payments counted by hour, by currency and reason, and no
    outcome counter), then upgraded, downgraded and upgraded again: each hour's processed
    and failed payments (the alert's) and each day's and dimension's sums (the reports')
    stay, and every report, payment alerts included, equals the oracle's."""
    from alembic import command
    from analytics.ingest import handlers
    from analytics.ingest.changes import Upsert
    from analytics.reports import REPORTS
    from tests.reports import dataset
    from tests.reports.test_against_oracle import NOW, RANGES, _load, _mismatches

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)
    documents = dataset.build()
    payments = "metric IN ('payments_processed', 'payments_failed')"

    def by_hour() -> dict[tuple, int]:
        """Each hour's payments by outcome, as 0017's alert summed them."""
        with engine.connect() as conn:
            found = conn.execute(
                text(f"SELECT tenant_id, metric, hour, sum(count) FROM metric_counters "
                     f"WHERE {payments} GROUP BY tenant_id, metric, hour HAVING sum(count) <> 0")
            ).all()  # fmt: skip
        return {(t, m, str(h)[:19]): int(n) for t, m, h, n in found}

    def outcomes() -> dict[tuple, int]:
        """Each hour's ``payment_outcomes``, named as :func:`by_hour` names them."""
        names = {"processed": "payments_processed", "failed": "payments_failed"}
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT tenant_id, dimension, hour, count FROM metric_counters "
                     "WHERE metric = 'payment_outcomes'")
            ).all()  # fmt: skip
        return {(t, names[d], str(h)[:19]): int(n) for t, d, h, n in found}

    def by_day() -> dict[tuple, tuple[int, int]]:
        """Each day's count and total of each metric and dimension, as the reports sum them."""
        with engine.connect() as conn:
            found = conn.execute(
                text(f"SELECT tenant_id, metric, hour, dimension, count, total FROM metric_counters "
                     f"WHERE {payments}")
            ).all()  # fmt: skip
        sums: dict[tuple, tuple[int, int]] = {}
        for tenant, metric, hour, dimension, count, total in found:
            key = (tenant, metric, str(hour)[:10], dimension)
            n, t = sums.get(key, (0, 0))
            sums[key] = (n + int(count), t + int(total))
        return sums

    def hours_of_payment_rows() -> set[str]:
        with engine.connect() as conn:
            return {str(h)[11:19] for (h,) in conn.execute(
                text(f"SELECT DISTINCT hour FROM metric_counters WHERE {payments}")
            )}  # fmt: skip

    def every_report_is_the_oracles() -> None:
        for tenant in ("tenant-1", "tenant-2"):
            found = _mismatches(engine, documents, tenant, RANGES, NOW, REPORTS)
            assert [m[:3] for m in found] == []

    def before_0018(event_type: str) -> Any:
        handler = handlers.HANDLERS[event_type]

        def changes(event: Any, ctx: Any) -> list[Any]:
            return [
                change
                for change in handler(event, ctx)
                if not (
                    isinstance(change, Upsert) and change.values.get("metric") == "payment_outcomes"
                )
            ]

        return changes

    try:
        with monkeypatch.context() as patch:
            hourly = frozenset({"events", "payments_processed", "payments_failed"})
            patch.setattr(handlers, "HOURLY_METRICS", hourly)
            for event_type in ("payment.processed", "payment.failed"):
                patch.setitem(handlers.HANDLERS, event_type, before_0018(event_type))
            _load(engine, documents)  # the days stay dirty: no report has run yet
        command.downgrade(config, "0017")
        hours, days = by_hour(), by_day()
        assert len(hours_of_payment_rows()) > 1 and outcomes() == {}
        assert len(hours) > len({(t, m, h[:10]) for t, m, h in hours})  # several hours a day

        command.upgrade(config, "head")
        assert diff(url) == []
        assert hours_of_payment_rows() == {"00:00:00"}
        assert by_day() == days
        assert outcomes() == hours
        every_report_is_the_oracles()  # the alerts computed from the outcomes

        command.downgrade(config, "0017")
        assert outcomes() == {}
        assert by_hour() == hours
        assert by_day() == days
        every_report_is_the_oracles()

        command.upgrade(config, "head")
        assert hours_of_payment_rows() == {"00:00:00"}
        assert by_day() == days
        assert outcomes() == hours
        every_report_is_the_oracles()
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_0019_indexes_stock_alerts_by_key_and_time_up_and_down(dialect, request):
    """The recompute reads a key's alerts from a time: ``created_at`` joins the key's index
    (which replaces the old one), and down and up again leave the alerts as they were."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from alembic import command
    from analytics.models import Alert
    from tests.analytics.helpers import apply
    from tests.analytics.test_stock_alerts import inventory

    url, config = _database_at(dialect, request, "head")
    engine = create_engine(url)

    def indexes() -> dict[str | None, list[str | None]]:
        return {
            index["name"]: index["column_names"] for index in inspect(engine).get_indexes("alerts")
        }

    def alerts() -> list[tuple[Any, ...]]:
        with Session(engine) as session:
            return sorted(
                tuple(row) for row in session.execute(select(Alert.event_id, Alert.resolved_at))
            )

    try:
        apply(engine, [inventory("low_stock", "2024-01-01T10:00:00Z", "low")])
        apply(engine, [inventory("restocked", "2024-01-01T11:00:00Z", "restock")])
        stored = alerts()
        assert indexes()["ix_alerts_tenant_id_alert_key_created_at"] == [
            "tenant_id", "alert_key", "created_at"
        ]  # fmt: skip
        assert "ix_alerts_tenant_id_alert_key" not in indexes()
        command.downgrade(config, "0018")
        assert indexes()["ix_alerts_tenant_id_alert_key"] == ["tenant_id", "alert_key"]
        assert "ix_alerts_tenant_id_alert_key_created_at" not in indexes()
        command.upgrade(config, "head")
        assert alerts() == stored
        apply(engine, [inventory("low_stock", "2024-01-01T12:00:00Z", "again")])
        assert [event for event, resolved in alerts() if resolved is None] == ["again"]
    finally:
        engine.dispose()
