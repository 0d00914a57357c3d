"""Dead-letter listing and replay, and rebuilding aggregates from the raw event store."""

from __future__ import annotations

from datetime import date, datetime

import orjson
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from analytics.deadletters import Rejected, listing, record_dead_letters, replay
from analytics.ingest import Context
from analytics.models import Base, DeadLetter, MetricCounter, ProductSale, StoredEvent, UserActivity
from analytics.rebuild import BUCKETED, STATE, rebuild
from loadgen import Simulator
from tests.analytics.helpers import apply, to_event


def letters(engine, *raws):
    with Session(engine) as session, session.begin():
        record_dead_letters(
            session,
            [
                Rejected("events:order:created", raw, datetime(2024, 3, 1, 9), "invalid")
                for raw in raws
            ],
        )


def do_replay(engine, ids=None):
    with Session(engine) as session, session.begin():
        return replay(session, ids, Context(), max_bytes=1 << 20)


def valid(event_id="ok-1"):
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_type": "order.created",
            "tenant_id": "t",
            "data": {"order_id": "o", "total_amount": 5},
        }
    )


def test_dead_letters_are_listed_oldest_first_with_their_reason(engine):
    letters(engine, b"{bad", b"[]")
    with Session(engine) as session:
        rows = listing(session)
        assert [(r["id"], r["channel"], r["error"]) for r in rows] == [
            (1, "events:order:created", "invalid"),
            (2, "events:order:created", "invalid"),
        ]
        assert rows[0]["received_at"] == "2024-03-01T09:00:00Z"
        assert len(listing(session, limit=1)) == 1


def test_a_replayed_letter_that_now_passes_is_counted_once_and_marked(engine):
    letters(engine, b"{still bad", valid())
    first = do_replay(engine)
    assert (first.ingested, first.duplicates, first.still_invalid) == (1, 0, 1)
    with Session(engine) as session:
        assert session.execute(select(StoredEvent.event_id)).scalars().all() == ["ok-1"]
        bad, good = session.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars()
        assert bad.replayed_at is None and bad.error.startswith("invalid JSON")
        assert good.replayed_at is not None
        assert [r["id"] for r in listing(session, pending_only=True)] == [bad.id]
    again = do_replay(engine)
    assert (again.ingested, again.duplicates, again.still_invalid) == (0, 0, 1)
    with Session(engine) as session:
        counted = session.execute(
            select(MetricCounter.count).where(MetricCounter.metric == "revenue")
        ).scalar_one()
    assert counted == 1


def test_replaying_a_letter_whose_event_was_already_counted_changes_nothing(engine):
    apply(engine, [to_event(orjson.loads(valid("dup")))])
    letters(engine, valid("dup"))
    result = do_replay(engine, [1])
    assert (result.ingested, result.duplicates) == (0, 1)
    assert do_replay(engine, [1, 99]).missing == (1, 99)


def snapshot(engine):
    tables = [model for model, _ in BUCKETED] + list(STATE)
    with Session(engine) as session:
        result = {}
        for model in tables:
            columns = [c for c in model.__table__.columns if c.name != "id"]
            result[model.__tablename__] = sorted(
                (tuple(str(v) for v in row) for row in session.execute(select(*columns))),
            )
        return result


def test_rebuild_after_losing_a_days_aggregates_restores_them_exactly(engine):
    documents = list(Simulator(tenants=2, seed=11, start=datetime(2024, 3, 4), days=4).events(1200))
    for start in range(0, len(documents), 300):
        apply(engine, [to_event(d) for d in documents[start : start + 300]])
    before = snapshot(engine)
    day = datetime(2024, 3, 5)
    with Session(engine) as session, session.begin():
        session.execute(
            delete(MetricCounter).where(
                MetricCounter.hour >= day, MetricCounter.hour < datetime(2024, 3, 6)
            )
        )
        session.execute(delete(UserActivity).where(UserActivity.tenant_id == "tenant-1"))
        session.execute(delete(ProductSale).where(ProductSale.day == date(2024, 3, 5)))
    assert snapshot(engine) != before
    with Session(engine) as session, session.begin():
        for tenant in ("tenant-1", "tenant-2"):
            counts = rebuild(session, tenant, date(2024, 3, 4), date(2024, 3, 7), Context())
            assert counts["events_in_range"] > 0
    assert snapshot(engine) == before


def test_rebuild_of_one_day_leaves_the_other_days_alone(engine):
    documents = list(Simulator(tenants=1, seed=12, start=datetime(2024, 3, 4), days=3).events(600))
    apply(engine, [to_event(d) for d in documents])
    before = snapshot(engine)
    with Session(engine) as session, session.begin():
        rebuild(session, "tenant-1", date(2024, 3, 5), date(2024, 3, 5), Context())
    assert snapshot(engine) == before
    assert Base.metadata.tables["events"] is StoredEvent.__table__


def test_the_same_bad_message_recorded_twice_is_one_dead_letter(engine):
    letters(engine, b"{bad", b"{bad", b"[]")
    letters(engine, b"{bad")  # a second bridge, or a redelivered task
    with Session(engine) as session:
        raws = session.execute(select(DeadLetter.raw).order_by(DeadLetter.id)).scalars().all()
    assert [bytes(raw) for raw in raws] == [b"{bad", b"[]"]
