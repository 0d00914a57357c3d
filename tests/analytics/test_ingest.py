"""The writer: exactly-once effects, atomic merges, event time and out-of-order state.

Every test runs on PostgreSQL and on SQLite (the ``engine`` fixture).
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session

from analytics.db import COPY_MIN_ROWS
from analytics.deadletters import Rejected, record_dead_letters
from analytics.ingest import Context, apply_events
from analytics.ingest.changes import AGGREGATES
from analytics.models import (
    Alert,
    DeadLetter,
    InventoryLevel,
    MetricCounter,
    Order,
    Payment,
    ProductSale,
    RollupDirtyDay,
    StoredEvent,
    UserActivity,
)
from tests.analytics.helpers import apply, apply_beside, make, rows


def counter(engine, metric, dimension=None):
    where = MetricCounter.metric == metric
    if dimension is not None:
        where = where & (MetricCounter.dimension == dimension)
    with Session(engine) as session:
        count, total = session.execute(
            select(
                func.coalesce(func.sum(MetricCounter.count), 0), func.sum(MetricCounter.total)
            ).where(where)
        ).one()
    return count, total


def order_created(
    order_id="o-1", total=10, event_id=None, ts="2024-01-01T10:00:00Z", tenant_id="tenant-a", **data
):
    return make(
        "order.created",
        {"order_id": order_id, "total_amount": total, **data},
        timestamp=ts,
        event_id=event_id,
        tenant_id=tenant_id,
    )


def test_a_duplicate_inside_one_batch_counts_once(engine):
    event = order_created(event_id="e-1")
    result = apply(engine, [event, event])
    assert (result.stored, result.duplicates) == (1, 1)
    assert counter(engine, "revenue", "USD") == (1, Decimal("10"))


def test_a_batch_applied_twice_counts_once(engine):
    batch = [order_created(order_id=f"o-{i}", event_id=f"e-{i}") for i in range(5)]
    apply(engine, batch)
    again = apply(engine, batch)
    assert (again.stored, again.duplicates) == (0, 5)
    assert counter(engine, "revenue", "USD") == (5, Decimal("50"))
    assert counter(engine, "events") == (5, Decimal("0"))


def test_the_same_event_id_in_two_tenants_is_two_events(engine):
    a = make("user.logged_in", {}, event_id="same", tenant_id="a")
    b = make("user.logged_in", {}, event_id="same", tenant_id="b")
    assert apply(engine, [a, b]).stored == 2


@pytest.mark.parametrize("others", [0, 60], ids=["few rows", "through COPY"])
def test_an_event_id_sent_again_under_another_time_by_a_concurrent_batch_counts_once(
    engine, others
):
    # The unique index holds the time too, so only the writer's lock and look-up stop
    # the second copy: the second batch must wait for the first and then see its row.
    again = order_created(event_id="e-1", ts="2024-01-02T10:00:00Z")
    fillers = [order_created(order_id=f"o-{n}", event_id=f"f-{n}") for n in range(others)]
    waited, result = apply_beside(
        engine, [order_created(event_id="e-1", ts="2024-01-01T10:00:00Z")], [again, *fillers]
    )
    assert waited
    assert (result.stored, result.duplicates) == (others, 1)
    assert rows(engine, StoredEvent.occurred_at, where=StoredEvent.event_id == "e-1") == [
        (datetime(2024, 1, 1, 10),)
    ]
    assert counter(engine, "revenue", "USD") == (1 + others, Decimal(10 * (1 + others)))


def test_order_updated_before_order_created_ends_in_the_right_state(engine):
    created = order_created(event_id="c", ts="2024-01-01T10:00:00Z", currency="EUR")
    shipped = make(
        "order.updated",
        {"order_id": "o-1", "status": "shipped"},
        timestamp="2024-01-01T11:00:00Z",
        event_id="u",
    )
    apply(engine, [shipped])
    apply(engine, [created])
    assert rows(engine, Order.status, Order.currency, Order.total_amount, Order.created_at) == [
        ("shipped", "EUR", Decimal("10"), datetime(2024, 1, 1, 10, 0))
    ]


def test_entity_state_is_the_same_for_every_arrival_order_and_batching(engine):
    events = [
        order_created(event_id="c", ts="2024-01-01T10:00:00Z"),
        make(
            "order.updated",
            {"order_id": "o-1", "status": "processing"},
            "2024-01-01T10:05:00Z",
            "u1",
        ),
        make(
            "payment.processed",
            {"payment_id": "p", "order_id": "o-1", "amount": 10},
            "2024-01-01T10:06:00Z",
            "p1",
        ),
        make(
            "order.updated", {"order_id": "o-1", "status": "shipped"}, "2024-01-01T12:00:00Z", "u2"
        ),
        make(
            "payment.refunded",
            {"payment_id": "p", "order_id": "o-1", "refund_amount": 4},
            "2024-01-02T09:00:00Z",
            "r1",
        ),
        make(
            "inventory.restocked",
            {"product_id": "x", "new_quantity": 50},
            "2024-01-01T08:00:00Z",
            "i1",
        ),
        make(
            "inventory.low_stock",
            {"product_id": "x", "current_quantity": 3},
            "2024-01-01T09:00:00Z",
            "i2",
        ),
        make(
            "inventory.adjusted",
            {"product_id": "x", "new_quantity": 2},
            "2024-01-01T09:30:00Z",
            "i3",
        ),
    ]
    expected = None
    shuffler = random.Random(7)
    for attempt in range(6):
        shuffled = events[:]
        shuffler.shuffle(shuffled)
        cut = shuffler.randrange(len(shuffled) + 1)
        for batch in (shuffled[:cut], shuffled[cut:]):
            apply(engine, batch)
        state = (
            rows(engine, Order.status, Order.status_at, Order.paid_at, Order.total_amount),
            rows(engine, Payment.status, Payment.amount, Payment.refunded_amount),
            rows(
                engine,
                InventoryLevel.on_hand,
                InventoryLevel.level_at,
                InventoryLevel.low_stock_events,
            ),
        )
        if expected is None:
            expected = state
            assert state[0] == [
                ("shipped", datetime(2024, 1, 1, 12), datetime(2024, 1, 1, 10, 6), Decimal(10))
            ]
            assert state[1] == [("refunded", Decimal(10), Decimal(4))]
            assert state[2] == [(2, datetime(2024, 1, 1, 9, 30), 1)]
        assert state == expected, f"attempt {attempt} with cut {cut}"
        from tests.conftest import truncate_all

        truncate_all(engine)


def test_events_land_in_the_hour_and_day_of_their_own_timestamp(engine):
    late = order_created(
        ts="2023-12-31T23:59:59.999Z", items=[{"product_id": "p", "quantity": 2, "unit_price": 5}]
    )
    assert late.received_at.date() != late.timestamp.date()
    apply(engine, [late])
    assert rows(engine, MetricCounter.hour, where=MetricCounter.metric == "events") == [
        (datetime(2023, 12, 31, 23, 0),)
    ]
    # Revenue is read by day only: its counter is the day's.
    assert rows(engine, MetricCounter.hour, where=MetricCounter.metric == "revenue") == [
        (datetime(2023, 12, 31),)
    ]
    assert rows(engine, ProductSale.day, ProductSale.units, ProductSale.revenue) == [
        (datetime(2023, 12, 31).date(), 2, Decimal(10))
    ]
    assert rows(engine, UserActivity.hour) == [(datetime(2023, 12, 31, 23, 0),)]


def test_counters_are_hourly_only_for_the_metrics_read_by_hour(engine):
    """Every other metric has one row a day, at its midnight, holding the day's sums."""
    events = [
        make("payment.processed", {"payment_id": f"p{i}", "amount": "2.50", "currency": "EUR"},
             f"2024-03-01T{hour:02d}:15:00Z", f"e{i}")
        for i, hour in enumerate((1, 1, 7, 23))
    ] + [
        make("payment.refunded", {"payment_id": f"p{i}", "refund_amount": "1", "refund_reason": "r"},
             f"2024-03-01T{hour:02d}:30:00Z", f"r{i}")
        for i, hour in enumerate((2, 9, 9))
    ]  # fmt: skip
    apply(engine, events)
    counted = rows(
        engine, MetricCounter.metric, MetricCounter.hour, MetricCounter.count, MetricCounter.total
    )
    by_metric: dict[str, list[tuple[datetime, int, Decimal]]] = {}
    for metric, hour, count, total in counted:
        by_metric.setdefault(metric, []).append((hour, count, total))
    by_metric = {metric: sorted(found) for metric, found in by_metric.items()}
    assert by_metric["payments_processed"] == [(datetime(2024, 3, 1), 4, Decimal(10))]
    # The hourly failure-rate alert's counts: processed and failed by hour, no amounts.
    assert by_metric["payment_outcomes"] == [
        (datetime(2024, 3, 1, 1), 2, Decimal(0)),
        (datetime(2024, 3, 1, 7), 1, Decimal(0)),
        (datetime(2024, 3, 1, 23), 1, Decimal(0)),
    ]
    assert by_metric["payments_refunded"] == [(datetime(2024, 3, 1), 3, Decimal(3))]
    # Events: all types in one row an hour; by type: one row a day per type.
    hourly = [(1, 2), (2, 1), (7, 1), (9, 2), (23, 1)]
    assert by_metric["events"] == [(datetime(2024, 3, 1, h), n, Decimal(0)) for h, n in hourly]
    assert by_metric["events_by_type"] == [
        (datetime(2024, 3, 1), 3, Decimal(0)),
        (datetime(2024, 3, 1), 4, Decimal(0)),
    ]
    assert set(by_metric) == {
        "events",
        "events_by_type",
        "payment_outcomes",
        "payments_processed",
        "payments_refunded",
    }


def test_amounts_sum_exactly(engine):
    batch = [order_created(order_id=f"o{i}", event_id=f"e{i}", total=0.1) for i in range(1000)]
    for start in range(0, len(batch), 250):
        apply(engine, batch[start : start + 250])
    assert counter(engine, "revenue", "USD") == (1000, Decimal("100"))


def test_missing_currency_is_the_default_currency(engine):
    apply(
        engine,
        [order_created(event_id="a"), order_created(order_id="o-2", event_id="b", currency="eur")],
        currency="GBP",
    )
    assert rows(engine, MetricCounter.dimension, where=MetricCounter.metric == "revenue") == [
        ("EUR",),
        ("GBP",),
    ]


def test_unknown_types_are_stored_raw_and_counted_without_aggregates(engine):
    event = make("wishlist.added", {"product_id": "p"}, event_id="w")
    assert apply(engine, [event]).stored == 1
    assert rows(engine, StoredEvent.event_type, StoredEvent.known) == [("wishlist.added", False)]
    assert rows(engine, MetricCounter.metric, MetricCounter.dimension) == [
        ("events", ""),
        ("events_by_type", "wishlist.added"),
    ]
    assert rows(engine, UserActivity.user_id) == [("user-1",)]


def test_an_alert_is_not_raised_twice_while_open_and_restock_closes_it(engine):
    def low(event_id, ts):
        return make(
            "inventory.low_stock",
            {"product_id": "p", "sku": "SKU-1", "location_id": "l", "current_quantity": 3},
            ts,
            event_id,
        )

    apply(engine, [low("a", "2024-01-01T10:00:00Z"), low("b", "2024-01-01T11:00:00Z")])
    apply(engine, [low("c", "2024-01-01T12:00:00Z")])
    assert rows(engine, Alert.alert_type, Alert.severity, Alert.created_at, Alert.message) == [
        (
            "low_stock",
            "warning",
            datetime(2024, 1, 1, 10),
            "Low stock alert: SKU-1 at location l: 3 left",
        )
    ]
    restock = make(
        "inventory.restocked",
        {"product_id": "p", "location_id": "l", "new_quantity": 40},
        "2024-01-01T13:00:00Z",
        "r",
    )
    apply(engine, [restock, low("d", "2024-01-02T10:00:00Z")])
    assert rows(engine, Alert.created_at, Alert.resolved_at) == [
        (datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 13)),
        (datetime(2024, 1, 2, 10), None),
    ]
    assert rows(
        engine,
        InventoryLevel.on_hand,
        InventoryLevel.low_stock_events,
        InventoryLevel.restock_events,
    ) == [(3, 4, 1)]


def test_dead_letters_keep_the_exact_bytes_and_the_reason(engine):
    raw = b"\xff not json"
    with Session(engine) as session, session.begin():
        record_dead_letters(
            session,
            [Rejected("events:order:created", raw, datetime(2024, 1, 1), "invalid JSON: x")],
        )
    assert rows(
        engine, DeadLetter.raw, DeadLetter.channel, DeadLetter.error, DeadLetter.messages
    ) == [(raw, "events:order:created", "invalid JSON: x", {"_schema": ["invalid JSON: x"]})]


def test_every_seed_example_changes_its_aggregates(engine):
    from loadgen import seed_examples
    from tests.analytics.helpers import assert_seed_aggregates, to_event

    events = [to_event(document) for document in seed_examples()]
    assert apply(engine, events).stored == 15
    assert_seed_aggregates(engine)


def test_seed_examples_one_batch_at_a_time_give_the_same_aggregates(engine):
    from loadgen import seed_examples
    from tests.analytics.helpers import assert_seed_aggregates, to_event

    for document in reversed(seed_examples()):
        apply(engine, [to_event(document)])
    assert_seed_aggregates(engine)


@pytest.mark.parametrize(
    "padding", [COPY_MIN_ROWS, 0], ids=["through COPY", "payloads as one JSON array"]
)
def test_raw_events_with_awkward_characters_are_stored_exactly(engine, padding):
    awkward = "tab\there new\nline back\\slash \\N null-lookalike ünï 🚀 'quote\" \r"
    event = make(
        "wishlist.added",
        {"note": awkward, "nested": {"deep": [awkward, None, 1.5]}},
        event_id="id\\with\ttab",
        tenant_id="tenant\nwith newline",
        user_id=awkward[:100],
    )
    # With enough events PostgreSQL takes the COPY path (db.COPY_MIN_ROWS); with fewer,
    # the payloads go as one JSON array (db.Unnest), the other columns as arrays.
    pads = [make("wishlist.added", {}, event_id=f"pad-{n}", tenant_id="zz") for n in range(padding)]
    assert apply(engine, [event, *pads, event]).stored == padding + 1
    assert apply(engine, [event]).stored == 0
    (row,) = rows(
        engine,
        StoredEvent.tenant_id,
        StoredEvent.event_id,
        StoredEvent.user_id,
        StoredEvent.payload,
        where=StoredEvent.tenant_id != "zz",
    )
    assert row[:3] == ("tenant\nwith newline", "id\\with\ttab", awkward[:100])
    assert row[3] == event.payload
    assert row[3]["data"]["nested"]["deep"] == [awkward, None, 1.5]


@pytest.mark.parametrize(
    "size", [COPY_MIN_ROWS, 6], ids=["raw events through COPY", "raw events as arrays"]
)
def test_batches_of_aggregate_rows_are_written_exactly(engine, size):
    # Aggregates go as arrays (db.Unnest), each column one array; the raw events of
    # COPY_MIN_ROWS orders go through COPY, those of 6 as arrays too. Keys hold COPY's
    # and arrays' special characters (quotes, braces, commas), amounts are in 1/10,000.
    awkward = ["tab\there", "new\nline", "back\\slash", "\\N", "cr\r", "q\"{a,b}'", "plain"]
    batch = [
        order_created(
            order_id=f"{awkward[n % len(awkward)]}-{n}",
            total=float(Decimal("0.0001") * (n * 7919 + 1)),
            event_id=f"e-{n}",
        )
        for n in range(size)
    ]
    assert apply(engine, batch).stored == size
    stored = dict(rows(engine, Order.order_id, Order.total_amount))
    assert stored == {e.data.order_id: e.data.total_amount for e in batch}
    assert counter(engine, "revenue", "USD") == (size, sum(e.data.total_amount for e in batch))


def statements_sent(engine, batch) -> list[str]:
    """The statements one batch sends to ``engine``, in order (BEGIN and COMMIT aside)."""
    sent: list[str] = []

    def record(conn, cursor, statement, *_):
        sent.append(statement)

    with Session(engine) as session, session.begin():
        # Statements this connection PREPAREd before show as "EXECUTE <name>": have
        # them all prepared again (as after a failed round trip), their SQL in the text.
        prepared = session.connection().connection.info.get("analytics_prepared")
        if prepared is not None:
            prepared.uncertain = True
        event.listen(engine, "before_cursor_execute", record)
        try:
            apply_events(session, batch, Context())
        finally:
            event.remove(engine, "before_cursor_execute", record)
    return sent


def test_a_small_batch_is_written_in_three_round_trips_on_postgresql(pg):
    # The raw events (lock, look-up, insert); the days these orders are stored on now (an
    # earlier order.created moves an order to another day of the conversion rollup);
    # then every aggregate and the dirty days.
    batch = [
        order_created(order_id=f"o-{n}", event_id=f"e-{n}", ts=f"2024-01-0{n + 1}T10:00:00Z")
        for n in range(5)
    ]
    sent = statements_sent(pg, batch)
    assert len(sent) == 3, sent
    assert "FROM orders AS t WHERE" in sent[1]
    assert counter(pg, "revenue", "USD") == (5, Decimal("50"))
    assert len(rows(pg, RollupDirtyDay.day)) == 5


def test_two_large_batches_in_one_transaction_each_count_once(engine):
    # A rebuild applies many batches in one transaction: what one batch staged for
    # COPY must not be written again by the next.
    from analytics.db import session_factory
    from analytics.ingest import Context, apply_events

    first = [order_created(order_id=f"a-{n}", event_id=f"a-{n}") for n in range(60)]
    second = [order_created(order_id=f"b-{n}", event_id=f"b-{n}") for n in range(60)]
    with session_factory(engine).begin() as session:
        apply_events(session, first, Context())
        apply_events(session, second, Context())
    assert counter(engine, "revenue", "USD") == (120, Decimal(1200))
    assert len(rows(engine, Order.order_id)) == 120


def test_database_errors_worth_retrying_are_told_from_the_rest():
    import psycopg2
    from sqlalchemy.exc import IntegrityError, OperationalError

    from analytics.db import is_transient

    # Raised through SQLAlchemy, and raw from the COPY cursor.
    assert is_transient(OperationalError("SELECT 1", {}, Exception("connection lost")))
    assert is_transient(psycopg2.OperationalError("server closed the connection unexpectedly"))
    assert is_transient(psycopg2.errors.QueryCanceled("canceling statement due to timeout"))
    assert is_transient(psycopg2.InterfaceError("connection already closed"))
    assert not is_transient(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_transient(psycopg2.errors.NumericValueOutOfRange("bigint out of range"))
    assert not is_transient(ValueError("a bug of ours"))


def test_sql_in_event_content_is_stored_as_text_never_run(engine):
    # Every statement binds its values (or streams them through COPY): no SQL is
    # built from event content, so this is data like any other.
    evil = "x'); DROP TABLE events; --\" \\' `"
    events = [
        make(
            "order.created",
            {
                "order_id": f"{evil}{n}",
                "total_amount": 1,
                "items": [{"product_id": evil, "sku": evil, "name": evil, "unit_price": 1}],
            },
            event_id=f"{evil}{n}",
            tenant_id=evil,
            user_id=evil,
        )
        for n in range(COPY_MIN_ROWS)  # the COPY path on PostgreSQL
    ]
    events.append(
        make("user.logged_in", {"location": {"country": evil, "city": evil}}, tenant_id=evil)
    )
    assert apply(engine, events).stored == COPY_MIN_ROWS + 1
    with Session(engine) as session, session.begin():
        record_dead_letters(session, [Rejected(evil, evil.encode(), datetime(2024, 1, 1), evil)])
    stored = rows(engine, StoredEvent.event_id, where=StoredEvent.tenant_id == evil)
    assert len(stored) == COPY_MIN_ROWS + 1
    assert rows(engine, Order.order_id, where=Order.order_id == f"{evil}7") == [(f"{evil}7",)]
    assert rows(engine, ProductSale.product_id, ProductSale.name) == [(evil, evil)]
    assert rows(engine, DeadLetter.channel, DeadLetter.raw, DeadLetter.error) == [
        (evil, evil.encode(), evil)
    ]
    assert counter(engine, "revenue") == (COPY_MIN_ROWS, Decimal(COPY_MIN_ROWS))


def test_a_dead_letter_with_nul_characters_in_its_text_is_stored(engine):
    raw = b'{"event_type": "x\\u0000", "tenant_id": 5}'
    letter = Rejected(
        "events:\x00:x", raw, datetime(2024, 1, 1), "bad\x00", tenant_id="t\x00", event_type="x\x00"
    )
    with Session(engine) as session, session.begin():
        record_dead_letters(session, [letter])
    stored = rows(
        engine, DeadLetter.channel, DeadLetter.raw, DeadLetter.error, DeadLetter.tenant_id,
        DeadLetter.event_type,
    )  # fmt: skip
    assert stored == [("events:\ufffd:x", raw, "bad\ufffd", "t\ufffd", "x\ufffd")]


def test_aggregates_of_a_large_batch_go_as_arrays_in_the_writers_table_order(pg):
    # COPY_MIN_ROWS orders: their raw events go through COPY, their aggregates as
    # arrays with no staging table (PostgreSQL would empty every staging table a
    # connection holds at each commit), in one string, in the writer's table order: two
    # workers locking the same rows in opposite orders deadlock (PostgreSQL then waits
    # deadlock_timeout, a second, before it breaks the tie).
    batch = [
        order_created(order_id=f"o-{n}", event_id=f"e-{n}", ts="2024-01-01T10:00:00Z")
        for n in range(COPY_MIN_ROWS)
    ]
    sent = statements_sent(pg, batch)
    assert any("TABLE IF NOT EXISTS staging_events" in text for text in sent)
    assert not any("staging_orders" in text or "staging_metric" in text for text in sent)
    (writes,) = [text for text in sent if "INSERT INTO orders" in text]
    assert writes.index("INSERT INTO metric_counters") < writes.index("INSERT INTO orders")
    assert counter(pg, "revenue", "USD") == (COPY_MIN_ROWS, Decimal(10 * COPY_MIN_ROWS))


def test_every_aggregate_upsert_takes_its_rows_in_key_order(pg):
    # The writer merges a table's rows in arrival order; the upsert's ORDER BY (text by
    # its bytes) is what makes two workers lock the same rows in the same order.
    batch = [
        order_created(order_id=f"o-{n}", event_id=f"e-{n}", ts=f"2024-01-0{1 + n % 3}T10:00:00Z")
        for n in range(9, 0, -1)
    ] + [make("user.logged_in", {"user_id": "u-9"}, "2024-01-02T10:00:00Z", "l-1")]
    keys = {aggregate.table: aggregate.key for aggregate in AGGREGATES}
    upserts = [
        found
        for text in statements_sent(pg, batch)
        for part in text.split(";")
        if (found := re.search(r"INSERT INTO (\w+) .* ORDER BY (.*) ON CONFLICT \(", part, re.S))
    ]
    tables = [upsert.group(1) for upsert in upserts]
    assert {"orders", "metric_counters", "user_activity", "daily_revenue"} <= set(tables), tables
    for upsert in upserts:
        table, order = upsert.groups()
        ordered = [column.split()[0].split(".")[-1] for column in order.split(",")]
        assert ordered == list(keys[table]), (table, order)
        assert 'tenant_id COLLATE "C"' in order, (table, order)  # text by its bytes


def test_a_batch_below_copy_min_rows_touches_no_staging_table(pg):
    # Its raw events go as arrays, their payloads as one JSON array: no temporary table,
    # so the commit does not make PostgreSQL empty the connection's staging tables, and
    # no COPY round trips. The payloads are stored as sent.
    batch = [
        make("wishlist.added", {"n": n, "note": f'it\'s \\ "{n}"'}, event_id=f"w-{n}")
        for n in range(COPY_MIN_ROWS - 1)
    ]
    sent = statements_sent(pg, batch)
    assert not any("staging_" in text or text.startswith("COPY") for text in sent), sent
    assert any("json_array_elements" in text for text in sent)
    stored = dict(rows(pg, StoredEvent.event_id, StoredEvent.payload))
    assert stored == {e.event_id: e.payload for e in batch}


def test_a_batch_that_pays_orders_marks_every_dirty_day_in_one_statement(pg):
    # The paid orders' creation days are read after the writes; the batch's own days and
    # those are then marked together, in key order: two statements on rollup_dirty_days
    # in one transaction could lock its rows in opposite orders to another writer's.
    apply(pg, [order_created(order_id="o-1", event_id="c", ts="2024-01-01T10:00:00Z")])
    payments = [
        make("payment.processed", {"payment_id": "p", "order_id": "o-1", "amount": 10},
             "2024-01-03T10:00:00Z", "p1"),
    ]  # fmt: skip
    sent = statements_sent(pg, payments)
    assert sum("INSERT INTO rollup_dirty_days" in text for text in sent) == 1, sent
    marked = {day.isoformat() for (day,) in rows(pg, RollupDirtyDay.day)}
    assert {"2024-01-01", "2024-01-03"} <= marked


def registered(user_id, ts, tenant_id, event_id):
    return make("user.registered", {"user_id": user_id}, ts, event_id, tenant_id)


def paid(order_id, ts, tenant_id, event_id):
    data = {"payment_id": f"p-{event_id}", "order_id": order_id, "amount": 10}
    return make("payment.processed", data, ts, event_id, tenant_id)


TENANTS = ("tenant-a", "tenant-b", "tenant-c")


def test_a_batch_of_several_tenants_looks_up_its_stored_days_in_one_statement_each_way(pg):
    # Orders created, users registered and orders paid, for three tenants: one look-up
    # before the writes for every tenant and both tables, one after for the paid orders.
    batch = [
        event
        for n, tenant in enumerate(TENANTS)
        for event in (
            order_created(order_id="o-1", event_id=f"c{n}", tenant_id=tenant),
            registered("u-1", "2024-01-01T10:00:00Z", tenant, f"r{n}"),
            paid("o-2", "2024-01-02T10:00:00Z", tenant, f"p{n}"),
        )
    ]
    sent = statements_sent(pg, batch)
    # The raw events; the days before; the writes and, after them in the same round trip,
    # the paid orders' days; the dirty days.
    assert len(sent) == 4, sent
    assert "FROM orders AS t" in sent[1] and "FROM user_cohorts AS t" in sent[1]
    assert sent[2].rindex("INSERT INTO orders") < sent[2].index("FROM orders AS t WHERE")
    assert sent[2].endswith("AND t.created_at IS NOT NULL OFFSET 0) AS t")
    # Nothing to look up, no look-up: the raw events, then the writes.
    logins = [make("user.logged_in", {}, tenant_id=tenant, event_id="l") for tenant in TENANTS]
    assert len(statements_sent(pg, logins)) == 2


def test_a_batch_s_keys_are_looked_up_by_primary_key_also_in_a_young_table(pg):
    # A few thousand rows: as a join, the planner read them all and hashed them for each
    # batch's keys; the stored days and the refunds' currencies probe each table's primary
    # key once a key.
    from sqlalchemy import text

    from analytics.ingest.refunds import _CURRENCIES_SQL
    from analytics.report_rollups import _ORDER_CREATED, _USER_REGISTERED

    with pg.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orders (tenant_id, order_id, created_at, currency) "
                "SELECT 'tenant-a', 'o-' || n, now(), 'USD' FROM generate_series(1, 3000) AS n"
            )
        )
        conn.execute(
            text(
                "INSERT INTO user_cohorts (tenant_id, user_id, registered_at) "
                "SELECT 'tenant-a', 'o-' || n, now() FROM generate_series(1, 3000) AS n"
            )
        )
        conn.execute(text("ANALYZE orders, user_cohorts"))
        keys = (["tenant-a"] * 40, [f"o-{n}" for n in range(1, 41)])
        for sql, table in (
            (_ORDER_CREATED.sql(), "orders"),
            (_USER_REGISTERED.sql(), "user_cohorts"),
            (_CURRENCIES_SQL, "orders"),
        ):
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + sql, keys).scalars())
            assert f"Index Scan using pk_{table}" in plan and "Seq Scan" not in plan, plan
            assert len(conn.exec_driver_sql(sql, keys).all()) == 40


def test_the_days_an_earlier_time_or_a_payment_alters_are_marked_for_each_tenant(engine):
    # Each tenant has the same ids on days of its own: a look-up that mixed tenants up
    # would mark another tenant's days. tenant-c is stored alike but sends nothing.
    def day(n, offset):
        return f"2024-01-{10 * n + offset:02d}T10:00:00Z"

    stored = [
        event
        for n, tenant in enumerate(TENANTS)
        for event in (
            order_created(order_id="o-1", event_id=f"c{n}", ts=day(n, 5), tenant_id=tenant),
            order_created(order_id="o-2", event_id=f"d{n}", ts=day(n, 2), tenant_id=tenant),
            registered("u-1", day(n, 7), tenant, f"r{n}"),
        )
    ]
    apply(engine, stored)
    with Session(engine) as session, session.begin():
        session.execute(delete(RollupDirtyDay))
    batch = [
        event
        for n, tenant in enumerate(TENANTS[:2])
        for event in (
            # o-1 created earlier: its stored day (5) loses it.
            order_created(order_id="o-1", event_id=f"e{n}", ts=day(n, 1), tenant_id=tenant),
            # u-1 registered earlier: its stored cohort (7) loses it.
            registered("u-1", day(n, 3), tenant, f"s{n}"),
            # o-2, created on day 2, paid on day 9: day 2's paid orders change.
            paid("o-2", day(n, 9), tenant, f"p{n}"),
        )
    ]
    apply(engine, batch)
    marked = {
        (tenant, day.day)
        for tenant, day in rows(engine, RollupDirtyDay.tenant_id, RollupDirtyDay.day)
    }
    own = {1, 3, 9}
    assert marked == {
        (tenant, 10 * n + d) for n, tenant in enumerate(TENANTS[:2]) for d in {5, 7, 2} | own
    }
