"""The operations report reads its response-time percentiles from a per-day rollup.

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
from analytics.models import OperationsDaily, RollupDirtyDay
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


def stored(engine):
    with Session(engine) as session:
        return session.execute(
            select(OperationsDaily.tenant_id, OperationsDaily.day, OperationsDaily.responses,
                   OperationsDaily.p50_response_ms, OperationsDaily.p95_response_ms)
            .order_by(OperationsDaily.tenant_id, OperationsDaily.day)
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
        session.execute(delete(OperationsDaily))
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
        session.add(OperationsDaily(tenant_id="tenant-a", day=date(2024, 3, 9), responses=1,
                                    p50_response_ms=Decimal(1), p95_response_ms=Decimal(1)))  # fmt: skip
    with Session(engine) as session, session.begin():
        rollups.recompute(session, date(2024, 3, 1), date(2024, 3, 9), tenant="tenant-a")
    assert [row[1] for row in stored(engine)] == [date(2024, 3, 1)]
