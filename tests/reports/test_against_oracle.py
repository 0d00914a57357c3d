"""Every report equals what the independent oracle computes from the raw events.

The dataset (tests/reports/dataset.py) has 2,800+ events over 10 days for 2 tenants:
several currencies, refunds days after their orders, duplicates, late events, ids
that collide across tenants. The oracle (tests/reports/oracle.py) shares no code
with the project. The events go through the real writer in publish order, in
batches, on PostgreSQL and on SQLite.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import orjson
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from analytics.deadletters import Rejected, record_dead_letters
from analytics.errors import InvalidEvent
from analytics.events import parse
from analytics.ingest import Context
from analytics.models import DailyRevenue, ProductSaleMonth, Refund
from analytics.rebuild import rebuild
from analytics.reports import REPORTS, Query, run
from tests.analytics.helpers import apply
from tests.reports import dataset, oracle

NOW = datetime(2024, 3, 20, 12, 0)
LETTERS_AT = datetime(2024, 3, 7, 15, 30)
RANGES = [
    (None, None),
    (date(2024, 3, 6), date(2024, 3, 10)),
    (date(2024, 3, 13), date(2024, 3, 13)),
]


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return dataset.build()


@pytest.fixture
def loaded(engine, documents):
    _load(engine, documents)
    rejected = []
    for raw in dataset.dead_letter_payloads():
        with pytest.raises(InvalidEvent) as info:
            parse(raw, channel="events:x:y", received_at=LETTERS_AT, max_bytes=1 << 20)
        rejected.append(
            Rejected(
                "events:x:y", raw, LETTERS_AT, info.value.summary, tenant_id=info.value.tenant_id
            )
        )
    assert [r.tenant_id for r in rejected] == dataset.dead_letter_tenants()
    with Session(engine) as session, session.begin():
        record_dead_letters(session, rejected)
    return engine


def test_the_dataset_is_big_and_varied_enough(documents):
    assert len(documents) >= 2000
    assert {d["tenant_id"] for d in documents} == {"tenant-1", "tenant-2"}
    assert len({d["timestamp"][:10] for d in documents}) >= 10
    assert len(documents) - len({(d["tenant_id"], d["event_id"]) for d in documents}) >= 50


@pytest.mark.parametrize("tenant", ["tenant-1", "tenant-2"])
def test_every_report_matches_the_oracle(loaded, documents, tenant):
    letters = [
        {"tenant_id": t, "received_at": LETTERS_AT} for t in dataset.dead_letter_tenants() if t
    ]
    mismatches = _mismatches(loaded, documents, tenant, RANGES, NOW, REPORTS, letters)
    for name, since, until, actual, expected in mismatches[:5]:
        print(f"\n{name} {since}..{until}")
        missing = [row for row in expected if row not in actual]
        extra = [row for row in actual if row not in expected]
        print(f"  expected, not printed ({len(missing)}): {missing[:4]}")
        print(f"  printed, not expected ({len(extra)}): {extra[:4]}")
    assert [m[:3] for m in mismatches] == []


#: The reports that count distinct users from spans of days (user_hours, city_users) when a
#: range is open at one end, and every event from one counter an hour.
REACH = ("activity-heatmap", "geo", "operations")
#: Ranges open at one end: the late events of the dataset's last third are of its first
#: four days (03-04 .. 03-07), so some users' spans started earlier than first stored.
HALF_OPEN = [
    (date(2024, 3, 6), None),
    (date(2024, 3, 13), None),
    (None, date(2024, 3, 5)),
    (None, date(2024, 3, 10)),
    (date(2024, 3, 14), None),
    (None, date(2024, 3, 3)),
]


@pytest.mark.parametrize("tenant", ["tenant-1", "tenant-2"])
def test_reach_reports_match_the_oracle_over_ranges_open_at_one_end(loaded, documents, tenant):
    letters = [
        {"tenant_id": t, "received_at": LETTERS_AT} for t in dataset.dead_letter_tenants() if t
    ]
    mismatches = _mismatches(loaded, documents, tenant, HALF_OPEN, NOW, REACH, letters)
    assert [m[:3] for m in mismatches] == []


#: The reports that read rollups of analytics.report_rollups.
ROLLED_UP = ("retention", "conversion", "logins")


def _late_changes(documents: list[dict]) -> list[dict]:
    """Events that change days the rollups have already counted, published last.

    A user registered on 2024-03-11 registers again on 03-05 (moving to an earlier
    cohort) and logs in on 03-06; an unpaid order of 03-05 is paid on 03-12; an order
    of 03-12 is created again on 03-06 (its earliest creation counts).
    """
    mine = [d for d in documents if d["tenant_id"] == "tenant-1"]
    registered = {d["event_id"]: d for d in mine if d["event_type"] == "user.registered"}
    mover = next(d for d in registered.values() if d["timestamp"].startswith("2024-03-11"))
    paid = {d["data"].get("order_id") for d in mine if d["event_type"] == "payment.processed"}
    created = [d for d in mine if d["event_type"] == "order.created"]
    unpaid = next(
        d
        for d in created
        if d["timestamp"].startswith("2024-03-05") and d["data"]["order_id"] not in paid
    )
    moved = next(d for d in created if d["timestamp"].startswith("2024-03-12"))
    login = next(d for d in mine if d["event_type"] == "user.logged_in")
    user = mover["data"]["user_id"]
    return [
        {**mover, "event_id": "late-registration", "timestamp": "2024-03-05T09:00:00Z"},
        {**login, "event_id": "late-login", "user_id": user, "timestamp": "2024-03-06T08:00:00Z",
         "data": {**login["data"], "user_id": user}},
        {"event_id": "late-payment", "event_type": "payment.processed", "tenant_id": "tenant-1",
         "user_id": unpaid["user_id"], "timestamp": "2024-03-12T10:00:00Z",
         "data": {"payment_id": "late-payment-1", "order_id": unpaid["data"]["order_id"],
                  "amount": unpaid["data"]["total_amount"], "currency": "USD",
                  "payment_method": "card"}},
        {**moved, "event_id": "earlier-creation", "timestamp": "2024-03-06T07:00:00Z"},
    ]  # fmt: skip


def test_rolled_up_reports_stay_exact_as_late_events_arrive(engine, documents):
    """Reports read between batches, so each batch's late events change days already rolled
    up: registrations that move a user's cohort, payments days after their order, an order
    created again earlier. A rollup left stale by any of them differs from the oracle."""
    published = documents + _late_changes(documents)
    chunks = [documents[i : i + 400] for i in range(0, len(documents), 400)]
    chunks += [[event] for event in published[len(documents) :]]
    loaded: list[dict] = []
    mismatches = []
    for chunk in chunks:
        apply(engine, [
            parse(orjson.dumps(d), channel="events:x:y", received_at=NOW, max_bytes=1 << 20)
            for d in chunk
        ])  # fmt: skip
        loaded += chunk
        for name in ROLLED_UP:
            for since, until in RANGES:
                with Session(engine) as session, session.begin():
                    actual = run(session, name, Query("tenant-1", since, until, now=NOW))
                expected = oracle.expected(
                    name, loaded, tenant="tenant-1", since=since, until=until, now=NOW
                )
                if actual != expected:
                    mismatches.append((len(loaded), name, since, until))
    assert mismatches == []
    assert len(loaded) == len(published)


@pytest.mark.parametrize(
    "now", [datetime(2024, 3, 12, 9, 30), datetime(2024, 3, 13, 23, 0), datetime(2024, 3, 15)]
)
def test_conversion_reads_the_orders_of_days_whose_abandonment_windows_may_be_open(
    loaded, documents, now
):
    """The rollup counts abandonment as if every window had passed; days less than two
    days old at the report's clock come from the orders, so the clock still decides."""
    for since, until in RANGES:
        with Session(loaded) as session, session.begin():
            actual = run(session, "conversion", Query("tenant-1", since, until, now=now))
        expected = oracle.expected(
            "conversion", documents, tenant="tenant-1", since=since, until=until, now=now
        )
        assert actual == expected, (since, until)


# -------------------------------------------------- summaries under history, late events, rebuild

#: The reports read from writer-kept summaries (daily revenue, monthly product sales).
SUMMARISED = ("revenue-by-day", "top-products", "inventory", "dead-stock")
#: The dataset moved 8 days back spans 2024-02-25 .. 2024-03-05: ranges that start and end
#: mid-month, cover a whole month, or stop at a month's last day.
SHIFT = timedelta(days=8)
MONTH_RANGES = [
    (None, None),
    (date(2024, 2, 27), date(2024, 3, 2)),
    (date(2024, 3, 1), None),
    (None, date(2024, 2, 29)),
    (date(2024, 2, 1), date(2024, 3, 31)),
    (date(2024, 2, 29), date(2024, 3, 1)),
    (None, date(2024, 3, 3)),
    (date(2024, 2, 27), None),
    (date(2024, 2, 26), date(2024, 3, 31)),
    (date(2024, 2, 1), date(2024, 3, 2)),
]


def _shifted(documents: list[dict]) -> list[dict]:
    moved = []
    for document in documents:
        document = dict(document)
        stamp = oracle.parse_timestamp(document["timestamp"]) - SHIFT
        document["timestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        moved.append(document)
    return moved


def _load(engine, documents: list[dict]) -> None:
    events = [
        parse(orjson.dumps(d), channel="events:x:y", received_at=NOW, max_bytes=1 << 20)
        for d in documents
    ]
    for start in range(0, len(events), 250):
        apply(engine, events[start : start + 250])


def _mismatches(engine, documents, tenant, ranges, now, names=SUMMARISED, letters=()):
    """``(report, since, until, printed, expected)`` for every report and range that differ."""
    found = []
    for name in names:
        for since, until in ranges:
            with Session(engine) as session, session.begin():
                actual = run(session, name, Query(tenant, since, until, now=now))
            expected = oracle.expected(
                name,
                documents,
                tenant=tenant,
                since=since,
                until=until,
                now=now,
                dead_letters=list(letters),
            )
            if name == "alerts":
                actual = [{k: v for k, v in row.items() if k != "message"} for row in actual]
            if actual != expected:
                found.append((name, since, until, actual, expected))
    return found


def _differ(engine, documents, tenant, ranges=MONTH_RANGES, now=NOW - SHIFT):
    return [m[:3] for m in _mismatches(engine, documents, tenant, ranges, now)]


def test_summaries_match_the_oracle_across_a_month_boundary(engine, documents):
    moved = _shifted(documents)
    _load(engine, moved)
    for tenant in ("tenant-1", "tenant-2"):
        assert _differ(engine, moved, tenant) == []


def test_summaries_match_the_oracle_when_every_event_arrives_late(engine, documents):
    """Published newest first, read half way: refunds stored before their orders, every
    movement and sale late, after the summaries of their months were computed."""
    moved = _shifted(documents)
    backwards = sorted(moved, key=lambda d: oracle.parse_timestamp(d["timestamp"]), reverse=True)
    half = len(backwards) // 2
    _load(engine, backwards[:half])
    # Read once in between: the rollups are refreshed, then the older half arrives.
    assert _differ(engine, backwards[:half], "tenant-1") == []
    _load(engine, backwards[half:])
    with Session(engine) as session:
        unresolved = session.scalar(
            select(func.count()).select_from(Refund).where(Refund.currency.is_(None))
        )
    assert unresolved  # the read-time lookup is exercised
    for tenant in ("tenant-1", "tenant-2"):
        assert _differ(engine, moved, tenant) == []


def test_a_rebuild_of_part_of_a_month_leaves_the_summaries_exact(engine, documents):
    moved = _shifted(documents)
    _load(engine, moved)
    with Session(engine) as session, session.begin():
        # Summaries lost inside the range, and the whole of both months it touches.
        session.execute(delete(DailyRevenue).where(DailyRevenue.day == date(2024, 3, 2)))
        session.execute(delete(ProductSaleMonth))
    with Session(engine) as session, session.begin():
        rebuild(session, "tenant-1", date(2024, 2, 28), date(2024, 3, 2), Context())
    assert _differ(engine, moved, "tenant-1") == []
