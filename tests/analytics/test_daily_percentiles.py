"""The operations and sessions reports read their percentiles from a per-day rollup.

The rollup must stay exact: late events change a day's percentiles at the next
report, a recompute (``analytics backfill rollups``) fills it for data stored
before it existed, and twice gives the same rows. Runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from analytics import rollups
from analytics.models import DailyPercentiles, RollupDirtyDay
from analytics.reports import Query, run
from tests.analytics.helpers import apply, make


def timed(ms, day, n, tenant="tenant-a"):
    return make(
        "user.logged_in",
        {},
        timestamp=f"{day}T{10 + n % 10:02d}:{n // 10:02d}:00Z",
        user_id=f"u{n}",
        tenant_id=tenant,
        event_id=f"{tenant}-{day}-{n}",
        metadata={"response_time_ms": ms},
    )


def operations(engine, tenant="tenant-a", **options):
    with Session(engine) as session, session.begin():
        return [
            (row["date"], row["events"], row["p50_response_ms"], row["p95_response_ms"])
            for row in run(session, "operations", Query(tenant, **options))
        ]


def stored(engine, measure="response_ms"):
    with Session(engine) as session:
        return session.execute(
            select(DailyPercentiles.tenant_id, DailyPercentiles.day, DailyPercentiles.count,
                   DailyPercentiles.p50, DailyPercentiles.p95)
            .where(DailyPercentiles.measure == measure)
            .order_by(DailyPercentiles.tenant_id, DailyPercentiles.day)
        ).all()  # fmt: skip


def test_percentiles_per_day_are_exact_and_late_events_change_them(engine):
    apply(engine, [timed(ms, "2024-03-01", n) for n, ms in enumerate([10, 20, 30, 40])])
    apply(engine, [timed(7.5, "2024-03-02", 0), timed(5, "2024-03-02", 1, tenant="tenant-b")])
    # p50 of 10..40 is 25; p95 interpolates 3 * 0.95 = 2.85 of the way: 30 + 0.85 * 10
    assert operations(engine) == [("2024-03-01", 4, 25.0, 38.5), ("2024-03-02", 1, 7.5, 7.5)]
    # a late event for a day the report has already read, and a day of its own
    apply(engine, [timed(1000, "2024-03-01", 4), timed(3, "2024-02-28", 0)])
    assert operations(engine) == [
        ("2024-02-28", 1, 3.0, 3.0),
        ("2024-03-01", 5, 30.0, 808.0),
        ("2024-03-02", 1, 7.5, 7.5),
    ]
    assert operations(engine, since=date(2024, 3, 2)) == [("2024-03-02", 1, 7.5, 7.5)]
    assert operations(engine, tenant="tenant-b") == [("2024-03-02", 1, 5.0, 5.0)]


def test_a_recompute_fills_the_rollup_for_existing_data_and_again_changes_nothing(engine):
    apply(engine, [timed(ms, "2024-03-01", n) for n, ms in enumerate([12.345, 1, 99])])
    apply(engine, [timed(ms, "2024-03-03", n) for n, ms in enumerate([4, 8])])
    before = operations(engine)
    filled = stored(engine)
    assert [row[1:] for row in filled] == [
        (date(2024, 3, 1), 3, Decimal("12.35"), Decimal("90.33")),
        (date(2024, 3, 3), 2, Decimal("6.00"), Decimal("7.80")),
    ]
    # As a database migrated before the rollup existed: no rows, nothing dirty.
    with Session(engine) as session, session.begin():
        session.execute(delete(DailyPercentiles))
        session.execute(delete(RollupDirtyDay))
    assert [row[2] for row in operations(engine)] == [None, None]
    for _ in range(2):
        with Session(engine) as session, session.begin():
            rollups.recompute(session, date(2024, 2, 1), date(2024, 3, 31))
        assert stored(engine) == filled
        assert operations(engine) == before


def test_a_recompute_removes_days_whose_events_are_gone(engine):
    apply(engine, [timed(5, "2024-03-01", 0)])
    operations(engine)
    with Session(engine) as session, session.begin():
        session.add(DailyPercentiles(tenant_id="tenant-a", measure="response_ms",
                                     day=date(2024, 3, 9), count=1, total=Decimal(1),
                                     p50=Decimal(1), p90=Decimal(1), p95=Decimal(1)))  # fmt: skip
    with Session(engine) as session, session.begin():
        rollups.recompute(session, date(2024, 3, 1), date(2024, 3, 9), tenant="tenant-a")
    assert [row[1] for row in stored(engine)] == [date(2024, 3, 1)]


def logout(seconds, day, n):
    return make(
        "user.logged_out",
        {"session_duration_seconds": seconds},
        timestamp=f"{day}T{10 + n:02d}:00:00Z",
        user_id=f"u{n}",
        event_id=f"out-{day}-{n}",
    )


def sessions(engine, **options):
    with Session(engine) as session, session.begin():
        return run(session, "sessions", Query("tenant-a", **options))


def test_sessions_come_from_the_rollup_and_late_logouts_change_their_day(engine):
    apply(engine, [logout(s, "2024-03-01", n) for n, s in enumerate([60, 120, 30.5])])
    assert sessions(engine) == [
        {"date": "2024-03-01", "sessions": 3, "avg_duration_seconds": 70.17,
         "p50_seconds": 60.0, "p90_seconds": 108.0},
    ]  # fmt: skip
    apply(engine, [logout(600, "2024-03-01", 3), logout(10, "2024-03-04", 0)])
    assert sessions(engine) == [
        {"date": "2024-03-01", "sessions": 4, "avg_duration_seconds": 202.63,
         "p50_seconds": 90.0, "p90_seconds": 456.0},
        {"date": "2024-03-04", "sessions": 1, "avg_duration_seconds": 10.0,
         "p50_seconds": 10.0, "p90_seconds": 10.0},
    ]  # fmt: skip
    assert sessions(engine, until=date(2024, 3, 3)) == sessions(engine)[:1]
