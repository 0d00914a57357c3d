"""Open alerts: the alerts report's rows of the alerts no event has resolved yet."""

from __future__ import annotations

from sqlalchemy.orm import Session

from analytics.reports import Query, run, stock
from tests.analytics.helpers import apply, make


def inventory(kind: str, ts: str, event_id: str, product: str = "p", **data: object):
    fields: dict[str, object] = {"product_id": product, "sku": f"SKU-{product}", "location_id": "l"}
    if kind == "low_stock":
        fields.update(current_quantity=3, reorder_point=10)
    elif kind == "restocked":
        fields.update(new_quantity=50, quantity_added=47)
    return make(f"inventory.{kind}", {**fields, **data}, ts, event_id)


def payment(kind: str, n: int, hour: int):
    return make(
        f"payment.{kind}", {"payment_id": f"{kind}{n}"}, f"2024-03-01T{hour:02d}:{n:02d}:00Z",
        f"{kind}-{hour}-{n}",
    )  # fmt: skip


def open_rows(engine, tenant: str = "tenant-a") -> list[dict]:
    with Session(engine) as session, session.begin():
        return stock.open_alerts(session, tenant)


def test_a_restock_closes_stock_alerts_and_a_later_one_stays_open(engine):
    apply(
        engine,
        [
            inventory("low_stock", "2024-01-01T10:00:00Z", "low-a"),
            inventory("out_of_stock", "2024-01-01T11:00:00Z", "out-a"),
            inventory("restocked", "2024-01-01T12:00:00Z", "re-a"),
            inventory("low_stock", "2024-01-02T09:00:00Z", "low-a2"),
            inventory("out_of_stock", "2024-01-01T08:00:00Z", "out-b", product="q"),
        ],
    )
    rows = open_rows(engine)
    assert [(r["created_at"], r["alert_type"], r["severity"]) for r in rows] == [
        ("2024-01-02T09:00:00Z", "low_stock", "warning"),
        ("2024-01-01T08:00:00Z", "out_of_stock", "critical"),
    ]
    with Session(engine) as session, session.begin():
        everything = run(session, "alerts", Query("tenant-a"))
    assert len(everything) == 4  # the report lists the resolved ones too
    assert all(row in everything for row in rows)
    assert open_rows(engine, "tenant-b") == []


def test_a_payment_failure_spike_is_open_until_an_hour_below_the_rate(engine):
    spike = [payment("failed", n, 10) for n in range(8)]
    spike += [payment("processed", n, 10) for n in range(12)]
    apply(engine, spike)
    assert [(r["alert_type"], r["created_at"]) for r in open_rows(engine)] == [
        ("payment_failure_rate", "2024-03-01T10:00:00Z")
    ]
    apply(engine, [payment("processed", n, 11) for n in range(25)])
    assert open_rows(engine) == []


def test_alert_times_are_written_to_the_second_as_every_report_writes_times(engine):
    # The database formats the alerts' times (tens of thousands of rows in a busy year):
    # its text must be iso_time's, fractions of a second dropped, not rounded.
    apply(engine, [inventory("low_stock", "2024-02-09T03:04:05.999Z", "low-frac")])
    with Session(engine) as session, session.begin():
        rows = run(session, "alerts", Query("tenant-a"))
    assert [row["created_at"] for row in rows] == ["2024-02-09T03:04:05Z"]
