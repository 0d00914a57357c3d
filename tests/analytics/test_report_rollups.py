"""The retention, conversion and logins rollups: filled by a recompute, replaced exactly.

How late events keep them exact is proven against the oracle
(tests/reports/test_against_oracle.py); here, that ``analytics backfill rollups``
(``rollups.recompute``) fills them for data stored before they existed, that a second
recompute changes nothing, and that rows of days that lost their data go.
Runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import date, datetime

import orjson
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from analytics import report_rollups, rollups
from analytics.events import parse
from analytics.models import (
    CohortSize,
    CohortWeek,
    DailyConversion,
    DailyLogins,
    LoginLocation,
    RollupDirtyDay,
)
from analytics.reports import Query, run
from tests.analytics.helpers import apply
from tests.reports import dataset, oracle

NOW = datetime(2024, 3, 20, 12, 0)
ROLLUPS = (CohortSize, CohortWeek, DailyConversion, DailyLogins)
REPORTS = ("retention", "conversion", "logins")


def load(engine):
    documents = [d for d in dataset.build() if d["tenant_id"] == "tenant-2"]
    events = [
        parse(orjson.dumps(d), channel="events:x:y", received_at=NOW, max_bytes=1 << 20)
        for d in documents
    ]
    apply(engine, events)
    return documents


def reports(engine):
    with Session(engine) as session, session.begin():
        return {name: run(session, name, Query("tenant-2", now=NOW)) for name in REPORTS}


def stored(engine):
    with Session(engine) as session:
        return [
            sorted(tuple(row) for row in session.execute(select(*m.__table__.c))) for m in ROLLUPS
        ]


def test_a_recompute_fills_the_rollups_for_existing_data_and_again_changes_nothing(engine):
    documents = load(engine)
    expected = {
        name: oracle.expected(name, documents, tenant="tenant-2", now=NOW) for name in REPORTS
    }
    assert reports(engine) == expected
    filled = stored(engine)
    assert all(filled)
    # As a database migrated before the rollups existed: no rows, nothing dirty.
    with Session(engine) as session, session.begin():
        for model in (*ROLLUPS, RollupDirtyDay):
            session.execute(delete(model))
    assert reports(engine)["logins"] == []
    for _ in range(2):
        with Session(engine) as session, session.begin():
            rollups.recompute(session, date(2024, 3, 1), date(2024, 3, 31), tenant="tenant-2")
        assert stored(engine) == filled
        assert reports(engine) == expected


def test_a_recompute_removes_the_rows_of_days_whose_data_is_gone(engine):
    load(engine)
    reports(engine)
    with Session(engine) as session, session.begin():
        session.execute(delete(LoginLocation).where(LoginLocation.day == date(2024, 3, 5)))
        report_rollups.logins(session, "tenant-2", [date(2024, 3, 5)])
    days = {row["date"] for row in reports(engine)["logins"]}
    assert "2024-03-05" not in days and "2024-03-06" in days


def test_days_are_merged_into_runs():
    d = date(2024, 3, 1)
    assert report_rollups.runs([d.replace(day=n) for n in (5, 1, 2, 3, 9, 5)]) == [
        (d, d.replace(day=3)),
        (d.replace(day=5), d.replace(day=5)),
        (d.replace(day=9), d.replace(day=9)),
    ]
    mondays = [date(2024, 3, 4), date(2024, 3, 11), date(2024, 3, 25)]
    assert report_rollups.runs(mondays, step=7) == [
        (date(2024, 3, 4), date(2024, 3, 11)),
        (date(2024, 3, 25), date(2024, 3, 25)),
    ]
