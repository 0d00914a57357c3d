"""Stock alerts are a function of a product's inventory events, not of how they arrived.

Events of one product travel in different batches (a task per event type), in any
order; whatever the batching and order, the same events leave the same alerts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from analytics.events import Event
from analytics.ingest import Context
from analytics.ingest import alerts as alerts_module
from analytics.models import Alert, InventoryMovement
from analytics.rebuild import rebuild
from tests.analytics.helpers import apply, apply_beside, make, rows
from tests.conftest import truncate_all

ALERT_COLUMNS = (
    Alert.tenant_id,
    Alert.alert_key,
    Alert.alert_type,
    Alert.severity,
    Alert.message,
    Alert.created_at,
    Alert.resolved_at,
    Alert.event_id,
    Alert.product_id,
    Alert.location_id,
)


def alerts(engine: Any) -> list[tuple[Any, ...]]:
    return sorted(rows(engine, *ALERT_COLUMNS), key=repr)


def inventory(
    kind: str,
    ts: str,
    event_id: str,
    product: str = "p",
    location: str | None = "l",
    quantity: int = 3,
    sku: str | None = "SKU-1",
    tenant: str = "tenant-a",
) -> Event:
    data: dict[str, Any] = {"product_id": product, "sku": sku}
    if location is not None:  # none: the product's location is ""
        data["location_id"] = location
    if kind == "low_stock":
        data.update(current_quantity=quantity, reorder_point=10)
    elif kind == "restocked":
        data.update(new_quantity=quantity + 40, quantity_added=40)
    elif kind == "adjusted":
        data.update(previous_quantity=quantity + 1, new_quantity=quantity)
    return make(f"inventory.{kind}", data, ts, event_id, tenant_id=tenant)


def test_a_low_stock_after_a_restock_raises_again_whatever_batch_it_came_in(engine):
    # Both low_stock events reach the worker in one batch, before the restock between them.
    apply(
        engine,
        [
            inventory("low_stock", "2024-01-01T10:00:00Z", "low-1", quantity=3),
            inventory("low_stock", "2024-01-01T12:00:00Z", "low-3", quantity=2),
        ],
    )
    (first_id,) = [row[0] for row in rows(engine, Alert.id)]
    apply(engine, [inventory("restocked", "2024-01-01T11:00:00Z", "restock-2")])
    assert rows(engine, Alert.created_at, Alert.resolved_at, Alert.event_id, Alert.message) == [
        (
            datetime(2024, 1, 1, 10),
            datetime(2024, 1, 1, 11),
            "low-1",
            "Low stock alert: SKU-1 at location l: 3 left (reorder point 10)",
        ),
        (
            datetime(2024, 1, 1, 12),
            None,
            "low-3",
            "Low stock alert: SKU-1 at location l: 2 left (reorder point 10)",
        ),
    ]
    # The first alert was closed in place, not replaced.
    assert rows(engine, Alert.id, where=Alert.event_id == "low-1") == [(first_id,)]


def test_a_restock_resolves_both_types_and_an_alert_of_the_same_instant(engine):
    apply(engine, [inventory("restocked", "2024-01-01T11:00:00Z", "r")])
    apply(
        engine,
        [
            inventory("out_of_stock", "2024-01-01T11:00:00Z", "o"),
            inventory("low_stock", "2024-01-01T10:00:00Z", "l"),
            inventory("low_stock", "2024-01-01T11:30:00Z", "l2"),
        ],
    )
    assert rows(engine, Alert.created_at, Alert.alert_type, Alert.severity, Alert.resolved_at) == [
        (datetime(2024, 1, 1, 10), "low_stock", "warning", datetime(2024, 1, 1, 11)),
        (datetime(2024, 1, 1, 11), "out_of_stock", "critical", datetime(2024, 1, 1, 11)),
        (datetime(2024, 1, 1, 11, 30), "low_stock", "warning", None),
    ]


def test_an_earlier_low_stock_arriving_late_takes_over_the_open_alert(engine):
    apply(engine, [inventory("low_stock", "2024-01-01T12:00:00Z", "late")])
    apply(engine, [inventory("low_stock", "2024-01-01T10:00:00Z", "early")])
    assert rows(engine, Alert.created_at, Alert.resolved_at, Alert.event_id) == [
        (datetime(2024, 1, 1, 10), None, "early")
    ]


def test_a_recompute_reads_a_product_from_its_last_restock_before_the_batch(engine, monkeypatch):
    # Years of history must not make each batch dearer: what came before the last
    # restock before the batch's movements is settled, and is not read again.
    apply(
        engine,
        [
            inventory("low_stock", "2024-01-01T10:00:00Z", "old-low"),
            inventory("out_of_stock", "2024-01-01T11:00:00Z", "old-out"),
            inventory("restocked", "2024-01-01T12:00:00Z", "old-restock"),
            inventory("low_stock", "2024-01-02T10:00:00Z", "low"),
            inventory("restocked", "2024-01-03T10:00:00Z", "restock"),
            inventory("low_stock", "2024-01-03T10:00:00Z", "same-instant"),
            inventory("low_stock", "2024-01-04T10:00:00Z", "open"),
        ],
    )
    before = alerts(engine)
    read: list[str] = []
    history = alerts_module.stock_alert_history

    def recorded(key: Any, movements: Any) -> Any:
        movements = list(movements)
        read.extend(move.event_id for move in movements)
        return history(key, movements)

    monkeypatch.setattr(alerts_module, "stock_alert_history", recorded)
    apply(engine, [inventory("out_of_stock", "2024-01-05T10:00:00Z", "new-out")])
    # The restock of 01-03 resolved the low stock of its own instant too: the window
    # starts after that instant.
    assert sorted(read) == ["new-out", "open"]
    after = alerts(engine)
    assert [alert for alert in after if alert[7] != "new-out"] == before
    assert [(alert[2], alert[6]) for alert in after if alert[7] == "new-out"] == [
        ("out_of_stock", None)
    ]

    # A late event before that restock widens the window back to the restock before it.
    read.clear()
    apply(engine, [inventory("low_stock", "2024-01-02T09:00:00Z", "late")])
    assert sorted(read) == ["late", "low", "new-out", "open", "restock", "same-instant"]
    # The late low stock opened first and took over the alert "low" had opened; the
    # restock closed it.
    opened = {row[7]: row for row in alerts(engine)}
    assert "low" not in opened
    assert opened["late"][5:7] == (datetime(2024, 1, 2, 9), datetime(2024, 1, 3, 10))


def test_a_batch_of_many_products_recomputes_each(engine):
    # More keys than one statement reads on SQLite (WINDOWS_A_STATEMENT); on PostgreSQL
    # the keys go as arrays.
    count = alerts_module.WINDOWS_A_STATEMENT + 9
    products = [f"p{n:02d}" for n in range(count)]
    apply(
        engine,
        [inventory("restocked", "2024-01-01T09:00:00Z", f"r-{p}", product=p) for p in products],
    )
    apply(
        engine,
        [inventory("low_stock", "2024-01-01T10:00:00Z", f"l-{p}", product=p) for p in products],
    )
    apply(
        engine,
        [
            inventory("restocked", "2024-01-01T11:00:00Z", f"s-{p}", product=p)
            for p in products[::2]
        ],
    )
    stored = {row[7]: row[6] for row in alerts(engine)}
    assert stored == {
        f"l-{p}": datetime(2024, 1, 1, 11) if n % 2 == 0 else None for n, p in enumerate(products)
    }


# ------------------------------------------------------------------- property

KINDS = ("low_stock", "out_of_stock", "restocked", "adjusted")

histories = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.sampled_from(("tenant-a", "tenant-b")),
        st.sampled_from(("p1", "p2")),
        st.sampled_from(("l1", None)),
        st.integers(0, 5),  # minute: few values, so many ties
        st.integers(0, 9),  # quantity: part of the message
    ),
    min_size=1,
    max_size=14,
)


def history_events(history: list[tuple[Any, ...]], ids: list[int]) -> list[Event]:
    return [
        inventory(
            kind,
            f"2024-01-01T10:{minute:02d}:00Z",
            f"e{ids[n]:02d}",
            product=product,
            location=location,
            quantity=quantity,
            tenant=tenant,
        )
        for n, (kind, tenant, product, location, minute, quantity) in enumerate(history)
    ]


def batches_of(
    events: list[Event], by_type: bool, cuts: list[bool], redeliver: bool
) -> list[list[Event]]:
    """Split ``events`` (already in arrival order) into batches.

    ``by_type``: as the bridge does, one stream of batches per event type; else
    arbitrary slices of the arrival order. A ``True`` in ``cuts`` ends a batch.
    """
    streams: list[list[Event]] = [events]
    if by_type:
        by: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by[event.event_type].append(event)
        streams = list(by.values())
    batches: list[list[Event]] = []
    position = 0
    for stream in streams:
        batch: list[Event] = []
        for event in stream:
            batch.append(event)
            if cuts[position]:
                batches.append(batch)
                batch = []
            position += 1
        if batch:
            batches.append(batch)
    if redeliver:  # a task delivered twice changes nothing
        batches.append(batches[0])
    return batches


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories, data=st.data())
def test_any_batching_and_order_of_the_same_events_leaves_the_same_alerts(pg, history, data):
    ids = data.draw(st.permutations(range(len(history))), label="event ids")
    events = history_events(history, ids)
    truncate_all(pg)
    apply(pg, events)
    expected = alerts(pg)

    truncate_all(pg)
    arrival = data.draw(st.permutations(events), label="arrival order")
    by_type = data.draw(st.booleans(), label="by type")
    cuts = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    batches = batches_of(arrival, by_type, cuts, data.draw(st.booleans(), label="redeliver"))
    for batch in data.draw(st.permutations(batches), label="batch order"):
        apply(pg, batch)
    assert alerts(pg) == expected


def test_concurrent_batches_of_one_product_wait_for_each_other(pg):
    # Without the lock each transaction would compute from its own movements only
    # (the other's are not committed yet) and the low stock after the restock would
    # never raise its alert.
    waited, _ = apply_beside(
        pg,
        [
            inventory("low_stock", "2024-01-01T10:00:00Z", "low-1"),
            inventory("low_stock", "2024-01-01T12:00:00Z", "low-3"),
        ],
        [inventory("restocked", "2024-01-01T11:00:00Z", "restock-2")],
    )
    assert waited
    assert rows(pg, Alert.created_at, Alert.resolved_at) == [
        (datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11)),
        (datetime(2024, 1, 1, 12), None),
    ]


def test_rebuild_of_one_day_leaves_the_same_stock_alerts(engine):
    apply(
        engine,
        [
            inventory("low_stock", "2024-01-01T10:00:00Z", "a"),
            inventory("low_stock", "2024-01-02T12:00:00Z", "c", sku="SKU-2", quantity=1),
            inventory("out_of_stock", "2024-01-03T09:00:00Z", "d"),
        ],
    )
    apply(engine, [inventory("restocked", "2024-01-02T11:00:00Z", "b")])
    before = alerts(engine)
    assert len(before) == 3
    with Session(engine) as session, session.begin():
        rebuild(session, "tenant-a", date(2024, 1, 2), date(2024, 1, 2), Context())
    assert alerts(engine) == before


def test_migration_0007_gives_stored_movements_the_message_of_their_alert(tmp_path):
    from alembic import command
    from analytics.migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        for event_id, kind in (("a", "low_stock"), ("b", "low_stock"), ("c", "restocked")):
            conn.execute(
                text(
                    "INSERT INTO inventory_movements (tenant_id, event_id, product_id,"
                    " location_id, kind, occurred_at, quantity_after)"
                    " VALUES ('t', :event_id, 'p', 'l', :kind, '2024-01-01 10:00:00', 3)"
                ),
                {"event_id": event_id, "kind": kind},
            )
        conn.execute(
            text(
                "INSERT INTO alerts (tenant_id, alert_key, alert_type, severity, message,"
                " created_at, event_id) VALUES ('t', 'low_stock:p@l', 'low_stock', 'warning',"
                " 'Low stock alert: SKU at location l: 3 left', '2024-01-01 10:00:00', 'a')"
            )
        )
    command.upgrade(config, "0007")
    assert rows(engine, InventoryMovement.event_id, InventoryMovement.alert_message) == [
        ("a", "Low stock alert: SKU at location l: 3 left"),
        ("b", None),
        ("c", None),
    ]
    engine.dispose()


def test_a_batch_s_stock_alerts_ride_on_its_writes_round_trips_on_postgresql(pg):
    from tests.analytics.test_ingest import statements_sent

    # The raw events; the writes, then the locks and the windows' read, in one round trip;
    # the alert opened, held and sent with the dirty days.
    sent = statements_sent(pg, [inventory("low_stock", "2024-01-01T10:00:00Z", "low-1")])
    assert len(sent) == 3, sent
    writes = sent[1]
    assert writes.index("INSERT INTO inventory_movements") < writes.index("pg_advisory_xact_lock")
    assert writes.index("pg_advisory_xact_lock") < writes.index("WITH k AS MATERIALIZED")
    assert "INSERT INTO alerts" in sent[2] and "INSERT INTO rollup_dirty_days" in sent[2]
    # Closed by a restock, and a new one opened: an update and an insert, still held.
    sent = statements_sent(
        pg,
        [
            inventory("restocked", "2024-01-01T11:00:00Z", "restock-2"),
            inventory("low_stock", "2024-01-01T12:00:00Z", "low-3"),
        ],
    )
    assert len(sent) == 3, sent
    assert sent[2].index("UPDATE alerts") < sent[2].index("INSERT INTO alerts")
    assert rows(pg, Alert.created_at, Alert.resolved_at) == [
        (datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11)),
        (datetime(2024, 1, 1, 12), None),
    ]
    # A late low stock before the restock replaces the first alert: a delete goes first.
    sent = statements_sent(pg, [inventory("low_stock", "2024-01-01T09:00:00Z", "low-0")])
    assert len(sent) == 3, sent
    assert sent[2].index("DELETE FROM alerts") < sent[2].index("INSERT INTO alerts")
    assert rows(pg, Alert.event_id, Alert.created_at, Alert.resolved_at) == [
        ("low-0", datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 11)),
        ("low-3", datetime(2024, 1, 1, 12), None),
    ]
