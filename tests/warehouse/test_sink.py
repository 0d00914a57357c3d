"""The sink against the local BigQuery server: every event once by insertId, whatever fails."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, text

from analytics.db import session_factory
from analytics.models import StoredEvent, WarehouseReject, WarehouseSink
from analytics.warehouse import deliver
from analytics.warehouse.bigquery import BigQueryTable
from analytics.warehouse.rows import SCHEMA, insert_id
from analytics.warehouse.status import status
from tests.warehouse.conftest import event_row, store_events, warehouse_settings


class Clock:
    """Time the test moves by hand (naive UTC)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sink_row(engine: Engine, name: str) -> WarehouseSink:
    with session_factory(engine).begin() as session:
        row = session.get(WarehouseSink, name)
        assert row is not None
        return row


def test_every_stored_event_arrives_once_with_its_insert_id(engine, bigquery, store):
    expected = store(range(25))
    settings = warehouse_settings(bigquery)
    table = BigQueryTable(settings)

    run = deliver(session_factory(engine), settings, table)

    assert (run.state, run.sent, run.batches) == ("drained", 25, 3)
    assert bigquery.distinct() == expected
    assert Counter(bigquery.arrivals()).most_common(1)[0][1] == 1
    assert deliver(session_factory(engine), settings, table).sent == 0
    with session_factory(engine).begin() as session:
        last = session.scalar(select(StoredEvent.id).order_by(StoredEvent.id.desc()).limit(1))
    assert sink_row(engine, settings.warehouse_sink).delivered_id == last


def test_the_table_is_created_with_its_schema_partitioned_by_day_and_clustered(
    engine, bigquery, store
):
    store(range(1))
    settings = warehouse_settings(bigquery)
    deliver(session_factory(engine), settings, BigQueryTable(settings))

    table = bigquery.store.tables[("test-project", "analytics", "events")]
    assert [(f["name"], f["type"], f["mode"]) for f in table["schema"]["fields"]] == list(SCHEMA)
    assert table["timePartitioning"] == {"type": "DAY", "field": "timestamp"}
    assert table["clustering"] == {"fields": ["tenant_id", "event_type"]}
    row = next(iter(bigquery.store.rows.values()))
    assert row["timestamp"] == "2026-12-01T09:00:00.000000Z"
    assert row["data"] == '{"order_id":"o0","total_amount":0}'
    assert row["metadata"] == '{"source":"test"}'


def test_insert_id_is_the_event_id():
    assert (
        insert_id("0b6f9c1e-8a43-4c52-9f0e-3d2a1b7c5e90") == "0b6f9c1e-8a43-4c52-9f0e-3d2a1b7c5e90"
    )


def test_a_row_committed_late_with_a_smaller_id_is_not_skipped(pg, bigquery):
    """Two writer transactions interleave: A takes an id first and commits last."""
    settings = warehouse_settings(bigquery)
    table = BigQueryTable(settings)
    insert = text(
        "INSERT INTO events (tenant_id, event_id, event_type, known, occurred_at, received_at, "
        "stored_at, channel, payload, event_id_derived, timestamp_derived) VALUES "
        "(:t, :e, 'order.created', true, now(), now(), now(), 'events:order:created', "
        "'{}', false, false) RETURNING id"
    )
    with pg.connect() as a, pg.connect() as b:
        first = a.execute(insert, {"t": "t1", "e": "slow"}).scalar_one()  # A: open
        second = b.execute(insert, {"t": "t1", "e": "fast"}).scalar_one()
        b.commit()
        assert first < second

        run = deliver(session_factory(pg), settings, table)
        # B's row is committed and visible, but A may still commit a smaller id:
        # the sink does not move past it.
        assert run.sent == 0
        sink = sink_row(pg, settings.warehouse_sink)
        assert (sink.delivered_id, sink.safe_id, sink.fence_id) == (0, 0, second)
        assert sink.fence_writers

        a.commit()
    run = deliver(session_factory(pg), settings, table)
    assert run.sent == 2
    assert bigquery.distinct() == {insert_id("slow"), insert_id("fast")}


def test_a_rolled_back_writer_releases_the_fence(pg, bigquery):
    settings = warehouse_settings(bigquery)
    table = BigQueryTable(settings)
    with pg.connect() as a:
        a.execute(insert(StoredEvent), [event_row(99)])
        expected = store_events(pg, range(3))
        assert deliver(session_factory(pg), settings, table).sent == 0
        a.rollback()
    assert deliver(session_factory(pg), settings, table).sent == 3
    assert bigquery.distinct() == expected


def test_rows_bigquery_refuses_are_kept_with_the_reason_and_the_rest_arrive(
    engine, bigquery, store
):
    expected = store(range(12))
    bigquery.faults.reject = lambda row: "bad total" if row["event_id"] in ("e3", "e7") else None
    settings = warehouse_settings(bigquery)

    run = deliver(session_factory(engine), settings, BigQueryTable(settings))

    assert (run.state, run.sent, run.rejected) == ("drained", 10, 2)
    refused = {insert_id("e3"), insert_id("e7")}
    assert bigquery.distinct() == expected - refused
    with session_factory(engine).begin() as session:
        rejects = session.execute(
            select(WarehouseReject.event_id, WarehouseReject.reason, WarehouseReject.message)
        ).all()
        rows = status(session, settings, datetime(2026, 12, 6))
    assert sorted(rejects) == [("e3", "invalid", "bad total"), ("e7", "invalid", "bad total")]
    assert rows[0]["rejected"] == 2 and rows[0]["lag_events"] == 0


def test_transient_row_errors_send_the_batch_again_after_a_backoff(engine, bigquery, store):
    expected = store(range(5))
    bigquery.faults.transient_requests = 1
    settings = warehouse_settings(bigquery)
    table, clock = BigQueryTable(settings), Clock()

    first = deliver(session_factory(engine), settings, table, now=clock)
    assert (first.state, first.sent) == ("failed", 0)
    assert deliver(session_factory(engine), settings, table, now=clock).state == "backoff"
    clock.advance(1.0)
    assert deliver(session_factory(engine), settings, table, now=clock).sent == 5
    assert bigquery.distinct() == expected
    assert sink_row(engine, settings.warehouse_sink).failures == 0


@pytest.mark.parametrize("fault", ["dropped", "timeout"])
def test_rows_accepted_without_an_answer_are_sent_again_with_the_same_insert_ids(
    engine, bigquery, store, fault
):
    expected = store(range(4))
    settings = warehouse_settings(bigquery, warehouse_timeout=0.5)
    if fault == "dropped":
        bigquery.faults.drop_after_accept = 1
    else:
        bigquery.faults.hang_seconds = 1.5
    table, clock = BigQueryTable(settings), Clock()
    table.ensure()

    failed = deliver(session_factory(engine), settings, table, now=clock)
    assert failed.state == "failed"
    assert bigquery.distinct() == expected  # BigQuery has them; the sink cannot know
    bigquery.faults.hang_seconds = 0
    clock.advance(2)
    assert deliver(session_factory(engine), settings, table, now=clock).sent == 4

    assert Counter(bigquery.arrivals()) == {i: 2 for i in expected}
    assert bigquery.distinct() == expected


def test_an_hour_long_outage_backs_off_then_everything_arrives_once(engine, bigquery, store):
    """An hour of 503s, time compressed: one run every interval, as beat sends them."""
    settings = warehouse_settings(bigquery, warehouse_interval=30.0, warehouse_max_backoff=60.0)
    table, clock = BigQueryTable(settings), Clock()
    table.ensure()
    expected = store(range(30))
    bigquery.faults.unavailable = True
    attempts = 0
    for tick in range(120):  # an hour of runs, 30 s apart
        if tick == 60:
            expected |= store(range(30, 60))  # events keep arriving during the outage
        run = deliver(session_factory(engine), settings, table, now=clock)
        attempts += run.state == "failed"
        clock.advance(settings.warehouse_interval)
    assert bigquery.distinct() == set()
    # Backoff 1, 2, 4 ... 60 s: about one attempt a minute, not one a run.
    assert 55 <= attempts <= 70
    with session_factory(engine).begin() as session:
        (row,) = status(session, settings, clock())
    assert row["lag_events"] == 60 and row["lag_seconds"] > 0
    assert "503" in row["last_error"]

    bigquery.faults.unavailable = False
    for _ in range(20):
        clock.advance(settings.warehouse_interval)
        deliver(session_factory(engine), settings, table, now=clock)
    assert bigquery.distinct() == expected
    assert max(Counter(bigquery.arrivals()).values()) == 1
    with session_factory(engine).begin() as session:
        (row,) = status(session, settings, clock())
    assert (row["lag_events"], row["failures"], row["last_error"]) == (0, 0, None)


def test_one_run_at_a_time_and_a_dead_runs_lease_runs_out(engine, bigquery, store):
    expected = store(range(3))
    settings = warehouse_settings(bigquery)
    table, clock = BigQueryTable(settings), Clock()
    with session_factory(engine).begin() as session:
        session.add(
            WarehouseSink(
                name=settings.warehouse_sink,
                delivered_id=0,
                safe_id=0,
                failures=0,
                rows_delivered=0,
                lease_owner="a-killed-run",
                lease_until=clock() + timedelta(seconds=5),
            )
        )
    assert deliver(session_factory(engine), settings, table, now=clock).state == "busy"
    clock.advance(6)
    assert deliver(session_factory(engine), settings, table, now=clock).sent == 3
    assert bigquery.distinct() == expected


def test_status_shows_the_lag_in_events_and_seconds(engine, bigquery, store):
    store(range(4))
    settings = warehouse_settings(bigquery)
    with session_factory(engine).begin() as session:
        (row,) = status(session, settings, datetime(2026, 12, 1, 10, 0))
    # The first undelivered event was stored at 09:00.
    assert (row["lag_events"], row["lag_seconds"], row["configured"]) == (4, 3600.0, True)
