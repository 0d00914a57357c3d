"""The raw-store tasks beat sends: partitions ahead, and prune from RAW_RETENTION_DAYS."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select, text

from analytics.config import Settings
from tasks import retention as retention_tasks
from tests.analytics.helpers import apply, make


def use(monkeypatch, pg, **settings) -> None:
    chosen = dataclasses.replace(Settings.from_env({}), **settings)
    monkeypatch.setattr(retention_tasks, "get_settings", lambda: chosen)
    monkeypatch.setattr("tasks.rollups.get_engine", lambda: pg)


def partition_of(pg, event_id: str) -> str | None:
    with pg.connect() as conn:
        return conn.execute(
            text("SELECT tableoid::regclass::text FROM events WHERE event_id = :e"), {"e": event_id}
        ).scalar()


def test_the_prune_task_keeps_everything_while_no_retention_is_set(monkeypatch, pg):
    use(monkeypatch, pg, raw_retention_days=0)
    apply(pg, [make("user.logged_in", {}, "2022-01-05T10:00:00Z", event_id="old")])
    assert "skipped" in retention_tasks.prune()
    assert partition_of(pg, "old") is not None


def test_the_tasks_give_a_caught_event_its_month_then_prune_it_past_the_horizon(monkeypatch, pg):
    use(monkeypatch, pg, raw_retention_days=365, raw_partitions_ahead=1)
    apply(pg, [make("user.logged_in", {}, "2022-01-05T10:00:00Z", event_id="old")])
    assert partition_of(pg, "old") == "events_default"
    made = retention_tasks.partitions()
    assert "events_p202201" in made["created"] and made["moved"] == 1
    assert partition_of(pg, "old") == "events_p202201"
    pruned = retention_tasks.prune()
    assert "events_p202201" in pruned["dropped"] and pruned["events"] == 1
    assert partition_of(pg, "old") is None


def test_the_prune_task_keeps_what_the_warehouse_sink_has_not_delivered(monkeypatch, pg):
    from sqlalchemy.orm import Session

    from analytics.models import StoredEvent, WarehouseSink

    use(
        monkeypatch, pg, raw_retention_days=365, raw_partitions_ahead=1,
        warehouse="bigquery", bigquery_project="p", bigquery_dataset="d",
    )  # fmt: skip
    apply(pg, [make("user.logged_in", {}, "2022-01-05T10:00:00Z", event_id="undelivered")])
    retention_tasks.partitions()
    settings = retention_tasks.get_settings()
    with Session(pg) as session, session.begin():
        stored = session.execute(
            select(StoredEvent.id).where(StoredEvent.event_id == "undelivered")
        ).scalar_one()
        session.add(WarehouseSink(name=settings.warehouse_sink, delivered_id=stored - 1))
    try:
        kept = retention_tasks.prune()
        assert kept["events"] == 0 and "events_p202201" in kept["kept_for_warehouse"]
        assert partition_of(pg, "undelivered") == "events_p202201"
        with pg.begin() as conn:
            conn.execute(text("UPDATE warehouse_sinks SET delivered_id = :d"), {"d": stored})
        assert "events_p202201" in retention_tasks.prune()["dropped"]
        assert partition_of(pg, "undelivered") is None
    finally:
        with pg.begin() as conn:
            conn.execute(text("DELETE FROM warehouse_sinks"))
