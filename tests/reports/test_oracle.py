"""Tests of the report oracle itself, on small hand-written event lists (no database).

Every expected value is worked out by hand in the comments next to it, from the rules of
docs/reports.md, so that the oracle can be trusted as the reference the project's reports
are checked against.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pytest

from tests.reports import dataset
from tests.reports.oracle import REPORTS, expected, parse_timestamp

_ids = itertools.count(1)


def ev(
    event_type: str,
    ts: str,
    user: str | None = None,
    *,
    tenant: str = "t1",
    event_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """An envelope; ``ts`` like "03-04 10:00" means 2024-03-04T10:00:00Z."""
    if len(ts) == len("03-04 10:00"):
        ts = f"2024-{ts[:5]}T{ts[6:]}:00Z"
    return {
        "event_id": event_id or f"e{next(_ids)}",
        "event_type": event_type,
        "tenant_id": tenant,
        "user_id": user,
        "timestamp": ts,
        "data": data,
        "metadata": metadata if metadata is not None else {"ip_address": "192.0.2.1"},
    }


# ------------------------------------------------------------------ timestamps


def test_timestamps_accept_offsets_and_nine_fraction_digits():
    assert parse_timestamp("2024-03-08T01:30:00+02:00") == datetime(2024, 3, 7, 23, 30, tzinfo=UTC)
    assert parse_timestamp("2024-03-09T10:11:12.123456789Z") == datetime(
        2024, 3, 9, 10, 11, 12, 123456, tzinfo=UTC
    )
    assert parse_timestamp("2024-03-06T21:15:00-05:00").date() == date(2024, 3, 7)


# ------------------------------------------------------------------ dau / wau / mau


def _activity() -> list[dict[str, Any]]:
    return [
        ev("user.logged_in", "03-01 10:00", "u1"),  # before --since
        ev("user.logged_in", "03-04 09:00", "u2"),
        ev("order.created", "03-04 10:00", "u2", order_id="o", total_amount=1),  # u2 again
        ev("user.logged_in", "03-05 09:00", "u3", event_id="dup"),
        ev("user.logged_in", "03-05 11:00", "u8", event_id="dup"),  # duplicate id: ignored
        ev("inventory.low_stock", "03-06 09:00", None, product_id="p"),  # no active user
        ev("user.logged_in", "03-05 09:00", "u9", tenant="t2"),  # other tenant
        ev("wishlist.added", "03-07 09:00", "u1"),  # unknown type: still activity
    ]


def test_dau_counts_distinct_users_per_day_and_drops_days_without_any():
    rows = expected("dau", _activity(), tenant="t1", since=date(2024, 3, 4), until=date(2024, 3, 8))
    # 03-04 {u2}; 03-05 {u3} (u8's envelope repeats event id "dup": the first wins);
    # 03-06 only a user-less event -> no row; 03-07 {u1}; 03-08 nothing -> no row.
    assert rows == [
        {"date": "2024-03-04", "active_users": 1},
        {"date": "2024-03-05", "active_users": 1},
        {"date": "2024-03-07", "active_users": 1},
    ]


def test_wau_and_mau_count_users_active_before_since():
    events = _activity()
    since, until = date(2024, 3, 4), date(2024, 3, 8)
    # wau(d) = users on d-6..d (2024 is a leap year: 03-04 - 6 = 02-27).
    # 03-04: u1 (03-01), u2 = 2; 03-05..03-07: u1, u2, u3 = 3; 03-08: 03-02..03-08 = u2, u3,
    # u1 (03-07) = 3.
    assert expected("wau", events, tenant="t1", since=since, until=until) == [
        {"date": "2024-03-04", "active_users": 2},
        {"date": "2024-03-05", "active_users": 3},
        {"date": "2024-03-06", "active_users": 3},
        {"date": "2024-03-07", "active_users": 3},
        {"date": "2024-03-08", "active_users": 3},
    ]
    # mau(d) = d-29..d: the same sets here.
    assert expected("mau", events, tenant="t1", since=since, until=until) == expected(
        "wau", events, tenant="t1", since=since, until=until
    )


def test_wau_defaults_to_first_and_last_day_with_an_active_user():
    rows = expected("wau", _activity(), tenant="t1")
    # From 03-01 (u1's first day) to 03-07 (the last day with an active user):
    # 03-01..03-03 {u1}; 03-04 {u1, u2}; 03-05..03-07 {u1, u2, u3}.
    assert rows == [
        {"date": "2024-03-01", "active_users": 1},
        {"date": "2024-03-02", "active_users": 1},
        {"date": "2024-03-03", "active_users": 1},
        {"date": "2024-03-04", "active_users": 2},
        {"date": "2024-03-05", "active_users": 3},
        {"date": "2024-03-06", "active_users": 3},
        {"date": "2024-03-07", "active_users": 3},
    ]


# ------------------------------------------------------------------ retention


def _cohorts() -> list[dict[str, Any]]:
    return [
        # Cohort 2024-03-04 (Mon): a1 registers Tue 03-05, a2 Sun 03-10 by data.user_id
        # only (the registration has no envelope user, so it is not a2's activity).
        ev("user.registered", "03-05 10:00", "a1", user_id="a1"),
        ev("user.registered", "03-10 22:00", None, user_id="a2"),
        ev("user.logged_in", "03-20 08:00", "a1"),  # a1: week 2 (03-18..03-24)
        ev("user.logged_in", "03-25 08:00", "a2"),  # a2: week 3 (03-25..03-31)
        # Cohort 2024-03-11: b1 registers Wed 03-13 (and again on 03-19: the earliest
        # registration counts), b2 Sun 03-17.
        ev("user.registered", "03-13 12:00", "b1", user_id="b1"),
        ev("user.registered", "03-19 12:00", "b1", user_id="b1"),  # b1: week 1
        ev("user.registered", "03-17 23:59", "b2", user_id="b2"),
        ev("user.logged_in", "03-26 07:00", "b2"),  # b2: week 2 (03-25..03-31); last day
        ev("user.registered", "03-05 10:00", "z9", tenant="t2", user_id="z9"),
    ]


def test_retention_two_cohorts_with_a_zero_week_in_the_middle():
    rows = expected("retention", _cohorts(), tenant="t1")
    # --until defaults to 03-26 (last stored event), in the week of Mon 03-25.
    # 2024-03-04: weeks 0..3: [a1 (registration), nobody, a1, a2] = [1, 0, 1, 1].
    # 2024-03-11: weeks 0..2: [b1 + b2 (registrations), b1, b2] = [2, 1, 1].
    assert rows == [
        {"cohort_week": "2024-03-04", "size": 2, "retained": [1, 0, 1, 1]},
        {"cohort_week": "2024-03-11", "size": 2, "retained": [2, 1, 1]},
    ]


def test_retention_range_filters_on_registration_day():
    rows = expected("retention", _cohorts(), tenant="t1", since=date(2024, 3, 11))
    # a1 (03-05) and a2 (03-10) registered before --since: only cohort 2024-03-11.
    assert rows == [{"cohort_week": "2024-03-11", "size": 2, "retained": [2, 1, 1]}]


def test_retention_last_week_window_is_not_capped_at_until():
    rows = expected("retention", _cohorts(), tenant="t1", until=date(2024, 3, 19))
    # --until 03-19 is in the week of Mon 03-18: weeks up to 2 for 03-04, up to 1 for
    # 03-11. a1's login on 03-20 is after --until but inside week 2 (03-18..03-24) of its
    # cohort: counted (the window is the whole week).
    assert rows == [
        {"cohort_week": "2024-03-04", "size": 2, "retained": [1, 0, 1]},
        {"cohort_week": "2024-03-11", "size": 2, "retained": [2, 1]},
    ]


# ------------------------------------------------------------------ revenue / aov


def _revenue() -> list[dict[str, Any]]:
    return [
        ev("order.created", "03-04 10:00", "c", order_id="o1", total_amount=100.10, currency="EUR"),
        ev("order.created", "03-04 11:00", "c", order_id="o2", total_amount=50.00),  # USD
        ev("order.created", "03-05 09:00", "c", order_id="o3", total_amount=20.00, currency="eur"),
        ev(
            "payment.processed",
            "03-01 09:00",
            "c",
            payment_id="p9",
            order_id="gone",
            amount=3.00,
            currency="EUR",
        ),
        # Refund of o1 two days later: EUR, on 03-06 (no order that day).
        ev(
            "payment.refunded",
            "03-06 08:00",
            "s",
            order_id="o1",
            payment_id="px",
            refund_amount=25.05,
        ),
        # Unknown order, payment p9 processed in EUR: EUR on 03-05.
        ev(
            "payment.refunded",
            "03-05 12:00",
            "s",
            order_id="nope",
            payment_id="p9",
            refund_amount=3.00,
        ),
        # Neither known: USD on 03-05 (a day without USD orders).
        ev(
            "payment.refunded",
            "03-05 13:00",
            "s",
            order_id="nope",
            payment_id="nope",
            refund_amount=5.00,
        ),
        # order.cancelled.refund_amount is not a refund.
        ev("order.cancelled", "03-05 14:00", "s", order_id="o3", refund_amount=20.00),
        # Other tenant: its own o1 in GBP and a refund of it.
        ev(
            "order.created",
            "03-04 10:00",
            "c",
            tenant="t2",
            order_id="o1",
            total_amount=9.99,
            currency="GBP",
        ),
        ev("payment.refunded", "03-05 10:00", "s", tenant="t2", order_id="o1", refund_amount=9.99),
    ]


def test_revenue_by_day_books_a_later_refund_in_its_orders_currency():
    rows = expected("revenue-by-day", _revenue(), tenant="t1")
    # date desc, then currency:
    # 03-06 EUR: o1's refund 25.05, no orders -> revenue 0, net -25.05
    # 03-05 EUR: o3 ("eur") 20.00, refund via payment p9 3.00 -> net 17.00
    # 03-05 USD: refund with nothing known 5.00 -> net -5.00
    # 03-04 EUR: o1 100.10; 03-04 USD: o2 (no currency key) 50.00
    assert rows == [
        {
            "date": "2024-03-06",
            "currency": "EUR",
            "revenue": 0.0,
            "orders": 0,
            "refunds": 25.05,
            "net_revenue": -25.05,
        },
        {
            "date": "2024-03-05",
            "currency": "EUR",
            "revenue": 20.0,
            "orders": 1,
            "refunds": 3.0,
            "net_revenue": 17.0,
        },
        {
            "date": "2024-03-05",
            "currency": "USD",
            "revenue": 0.0,
            "orders": 0,
            "refunds": 5.0,
            "net_revenue": -5.0,
        },
        {
            "date": "2024-03-04",
            "currency": "EUR",
            "revenue": 100.1,
            "orders": 1,
            "refunds": 0.0,
            "net_revenue": 100.1,
        },
        {
            "date": "2024-03-04",
            "currency": "USD",
            "revenue": 50.0,
            "orders": 1,
            "refunds": 0.0,
            "net_revenue": 50.0,
        },
    ]
    one_day = expected(
        "revenue-by-day", _revenue(), tenant="t1", since=date(2024, 3, 5), until=date(2024, 3, 5)
    )
    assert [(r["date"], r["currency"]) for r in one_day] == [
        ("2024-03-05", "EUR"),
        ("2024-03-05", "USD"),
    ]


def test_aov_rounds_half_up_per_day_and_currency():
    events = [
        ev("order.created", "03-04 10:00", "c", order_id="a", total_amount=10.00),
        ev("order.created", "03-04 11:00", "c", order_id="b", total_amount=10.01),
        ev("order.created", "03-04 12:00", "c", order_id="c", total_amount=7, currency="EUR"),
    ]
    # USD: 20.01 / 2 = 10.005 -> 10.01 (half up); EUR: 7 / 1 = 7.00.
    assert expected("aov", events, tenant="t1") == [
        {"date": "2024-03-04", "currency": "EUR", "orders": 1, "aov": 7.0},
        {"date": "2024-03-04", "currency": "USD", "orders": 2, "aov": 10.01},
    ]


def test_top_products_per_currency_with_defaults_and_latest_name():
    events = [
        ev(
            "order.created",
            "03-04 10:00",
            "c",
            order_id="1",
            total_amount=13.5,
            items=[
                {
                    "product_id": "A",
                    "name": "Apple",
                    "quantity": 2,
                    "unit_price": 5.0,
                    "total_price": 10.0,
                },
                {"product_id": "B", "name": "Banana", "unit_price": 3.5},  # 1 x 3.50
            ],
        ),
        ev(
            "order.created",
            "03-05 10:00",
            "c",
            order_id="2",
            total_amount=7,
            currency="EUR",
            items=[{"product_id": "A", "name": "Apple EU", "quantity": 1, "total_price": 7.0}],
        ),
        ev(
            "order.created",
            "03-06 10:00",
            "c",
            order_id="3",
            total_amount=25,
            items=[
                {"product_id": "A", "quantity": 1, "unit_price": 5.0},  # no name: keeps "Apple"
                {"product_id": "C", "name": "Cherry", "quantity": 4, "total_price": 20.0},
            ],
        ),
    ]
    # USD: C 20.00 (4 units), A 10.00 + 5.00 = 15.00 (3 units), B 3.50 -> top 2: C, A.
    # EUR: A 7.00 (1 unit, "Apple EU").
    assert expected("top-products", events, tenant="t1", limit=2) == [
        {"product_id": "A", "name": "Apple EU", "currency": "EUR", "units_sold": 1, "revenue": 7.0},
        {"product_id": "C", "name": "Cherry", "currency": "USD", "units_sold": 4, "revenue": 20.0},
        {"product_id": "A", "name": "Apple", "currency": "USD", "units_sold": 3, "revenue": 15.0},
    ]


# ------------------------------------------------------------------ conversion


def _orders() -> list[dict[str, Any]]:
    return [
        ev("order.created", "03-04 10:00", "c", order_id="o1", total_amount=1),
        ev("payment.processed", "03-04 10:05", "c", order_id="o1", payment_id="p1"),
        ev("order.created", "03-04 12:00", "c", order_id="o2", total_amount=1),
        ev("payment.processed", "03-05 12:00", "c", order_id="o2", payment_id="p2"),  # 24 h
        ev("order.created", "03-04 13:00", "c", order_id="o3", total_amount=1),
        ev("payment.processed", "2024-03-05T13:00:01Z", "c", order_id="o3", payment_id="p3"),
        ev("order.created", "03-04 20:00", "c", order_id="o4", total_amount=1),
        ev("payment.failed", "03-04 20:01", "c", order_id="o4", payment_id="p4"),
        ev("order.created", "03-05 09:00", "c", order_id="o5", total_amount=1),
        ev("order.created", "03-06 09:00", "c", order_id="o5", total_amount=1),  # same order
    ]


def test_conversion_abandonment_across_24_hours():
    now = datetime(2024, 3, 6, 8, 0, tzinfo=UTC)
    # 03-04: o1 paid after 5 min; o2 paid exactly 24 h later (at or before: not abandoned);
    # o3 paid 24 h + 1 s later (paid, but abandoned); o4 only failed (abandoned, its 24 h
    # ended 03-05 20:00 <= now). 4 orders, 3 paid, 0.75, 2 abandoned.
    # 03-05: o5 (its earliest order.created; the 03-06 one is the same order), unpaid, its
    # 24 h end 03-06 09:00 > now: not counted as abandoned yet. No 03-06 row.
    assert expected("conversion", _orders(), tenant="t1", now=now) == [
        {
            "date": "2024-03-04",
            "orders": 4,
            "paid_orders": 3,
            "conversion_rate": 0.75,
            "abandoned": 2,
        },
        {
            "date": "2024-03-05",
            "orders": 1,
            "paid_orders": 0,
            "conversion_rate": 0.0,
            "abandoned": 0,
        },
    ]
    # Once 03-06 09:00 has passed, o5 is abandoned.
    later = expected("conversion", _orders(), tenant="t1", now=datetime(2024, 3, 6, 9, 0))
    assert later[1]["abandoned"] == 1
    # Before 03-05 13:00 neither o3 nor o4 has had its 24 hours.
    earlier = expected("conversion", _orders(), tenant="t1", now=datetime(2024, 3, 5, 12, 59))
    assert earlier[0]["abandoned"] == 0


# ------------------------------------------------------------------ sessions


def test_sessions_percentiles_interpolate_linearly():
    durations = {"03-04": [40, 10, 100, 30, 20], "03-05": [8, 7], "03-06": [2, 1, 2]}
    events = [
        ev("user.logged_out", f"{day} 12:00", "u", session_duration_seconds=seconds)
        for day, values in durations.items()
        for seconds in values
    ]
    events.append(ev("user.logged_out", "03-04 13:00", "u"))  # no duration: not a session
    events.append(ev("user.logged_out", "03-07 13:00", "u", session_duration_seconds=None))
    # 03-04 sorted [10, 20, 30, 40, 100]: mean 200/5 = 40; p50 at 4*0.5 = 2 -> 30;
    #   p90 at 4*0.9 = 3.6 -> 40 + 0.6*(100-40) = 76.
    # 03-05 [7, 8]: mean 7.5; p50 at 0.5 -> 7.5; p90 at 0.9 -> 7.9.
    # 03-06 [1, 2, 2]: mean 5/3 = 1.666.. -> 1.67; p50 at 1 -> 2; p90 at 1.8 -> 2.
    assert expected("sessions", events, tenant="t1") == [
        {
            "date": "2024-03-04",
            "sessions": 5,
            "avg_duration_seconds": 40.0,
            "p50_seconds": 30.0,
            "p90_seconds": 76.0,
        },
        {
            "date": "2024-03-05",
            "sessions": 2,
            "avg_duration_seconds": 7.5,
            "p50_seconds": 7.5,
            "p90_seconds": 7.9,
        },
        {
            "date": "2024-03-06",
            "sessions": 3,
            "avg_duration_seconds": 1.67,
            "p50_seconds": 2.0,
            "p90_seconds": 2.0,
        },
    ]


# ------------------------------------------------------------------ inventory / dead stock


def _stock() -> list[dict[str, Any]]:
    def inv(kind: str, ts: str, product: str, location: str | None = "L1", **data: Any):
        if location is not None:
            data["location_id"] = location
        return ev(f"inventory.{kind}", ts, None, product_id=product, **data)

    def sale(ts: str, location: str, *items: dict[str, Any]):
        return ev(
            "order.created",
            ts,
            "c",
            order_id=f"o-{ts}-{location}",
            total_amount=1,
            location_id=location,
            items=list(items),
        )

    return [
        inv("restocked", "03-04 00:00", "P", sku="SKU-P", new_quantity=20),  # level 20
        inv("low_stock", "03-04 06:00", "P", sku="SKU-P", current_quantity=4),  # 4
        inv("out_of_stock", "03-04 08:00", "P", sku="SKU-P"),  # 0, opens a cycle
        inv("out_of_stock", "03-04 09:00", "P", sku="SKU-P"),  # 0, one is already open
        inv("restocked", "03-04 14:00", "P", sku="SKU-P", new_quantity=30),  # 30, closes: 6 h
        inv("adjusted", "03-05 10:00", "P", new_quantity=28),  # 28
        inv(
            "out_of_stock", "03-06 00:00", "P", sku="SKU-P", last_sold_at="2024-03-05T23:59:59Z"
        ),  # 0, opens
        inv("restocked", "03-06 01:30", "P", sku="SKU-P", new_quantity=12),  # 12, closes: 1.5 h
        inv("low_stock", "03-07 12:00", "P", sku="SKU-P2", current_quantity=5),  # 5
        inv("restocked", "03-08 09:00", "P", new_quantity=99),  # after --until below
        inv("adjusted", "03-04 12:00", "Q", None, new_quantity=0),  # location ""
        inv("restocked", "03-04 07:00", "R", sku="SKU-R", new_quantity=5),  # never sold
        sale(
            "03-04 12:00",
            "L1",
            {"product_id": "P", "quantity": 3},
            {"product_id": "P", "quantity": 1},
            {"product_id": "X", "quantity": 9},
        ),
        sale("03-05 10:00", "L1", {"product_id": "P"}),  # quantity defaults to 1
        sale("03-05 11:00", "L2", {"product_id": "P", "quantity": 5}),  # other location
        sale("03-08 10:00", "L1", {"product_id": "P", "quantity": 2}),  # after --until
    ]


def test_inventory_restock_cycles_turnover_and_on_hand():
    rows = expected("inventory", _stock(), tenant="t1", until=date(2024, 3, 7))
    # P/L1: sku of the latest event carrying one (any time) = SKU-P2; on_hand = level of
    # the latest event up to 03-07 = 5; 2 low-stock, 3 out-of-stock events; cycles 6 h and
    # 1.5 h -> 3.75; units sold at L1 up to 03-07: 3 + 1 + 1 = 5; levels in range
    # 20, 4, 0, 0, 30, 28, 0, 12, 5 = 99 / 9 = 11 -> turnover 5 / 11 = 0.4545.
    # R/L1: on hand 5, nothing sold -> turnover 0 / 5 = 0.
    # Q/"": no sku (sorted last), on hand 0, average on-hand 0 -> turnover null.
    # No row for P/L2: sales alone make no inventory row.
    assert rows == [
        {
            "product_id": "P",
            "sku": "SKU-P2",
            "location_id": "L1",
            "on_hand": 5,
            "low_stock_events": 2,
            "out_of_stock_events": 3,
            "avg_restock_hours": 3.75,
            "turnover": 0.4545,
        },
        {
            "product_id": "R",
            "sku": "SKU-R",
            "location_id": "L1",
            "on_hand": 5,
            "low_stock_events": 0,
            "out_of_stock_events": 0,
            "avg_restock_hours": None,
            "turnover": 0.0,
        },
        {
            "product_id": "Q",
            "sku": None,
            "location_id": "",
            "on_hand": 0,
            "low_stock_events": 0,
            "out_of_stock_events": 0,
            "avg_restock_hours": None,
            "turnover": None,
        },
    ]


def test_inventory_range_counts_only_cycles_closing_in_it():
    rows = expected(
        "inventory", _stock(), tenant="t1", since=date(2024, 3, 6), until=date(2024, 3, 6)
    )
    # Only P/L1 has events on 03-06: out_of_stock 00:00 (0) and restocked 01:30 (12):
    # on hand 12, one cycle of 1.5 h, nothing sold that day -> 0 / ((0 + 12) / 2) = 0.
    assert rows == [
        {
            "product_id": "P",
            "sku": "SKU-P2",
            "location_id": "L1",
            "on_hand": 12,
            "low_stock_events": 0,
            "out_of_stock_events": 1,
            "avg_restock_hours": 1.5,
            "turnover": 0.0,
        },
    ]
    # Without --until the 03-08 restock sets P/L1's on hand to 99.
    assert expected("inventory", _stock(), tenant="t1")[0]["on_hand"] == 99


def test_dead_stock_uses_latest_sale_or_out_of_stock_last_sold_at():
    until = date(2024, 3, 7)
    # End of --until: 03-08 00:00; --days 2 -> cutoff 03-06 00:00. P/L1: latest sale at L1
    # 03-05 10:00, out_of_stock last_sold_at 03-05 23:59:59 -> before the cutoff: dead.
    # R: never sold -> dead with null. Q: on hand 0 -> not listed.
    assert expected("dead-stock", _stock(), tenant="t1", until=until, days=2) == [
        {
            "product_id": "P",
            "sku": "SKU-P2",
            "location_id": "L1",
            "on_hand": 5,
            "last_sold_at": "2024-03-05T23:59:59Z",
        },
        {
            "product_id": "R",
            "sku": "SKU-R",
            "location_id": "L1",
            "on_hand": 5,
            "last_sold_at": None,
        },
    ]
    # --days 3 -> cutoff 03-05 00:00: P's last sale is after it.
    rows = expected("dead-stock", _stock(), tenant="t1", until=until, days=3)
    assert [row["product_id"] for row in rows] == ["R"]


# ------------------------------------------------------------------ alerts


def _payments(hour: str, processed: int, failed: int) -> list[dict[str, Any]]:
    return [
        ev(kind, f"2024-03-05T{hour}:{minute:02d}:00Z", "c", payment_id=f"{hour}-{minute}")
        for minute, kind in enumerate(
            ["payment.processed"] * processed + ["payment.failed"] * failed
        )
    ]


def test_alerts_open_once_per_product_location_and_resolve_on_restock():
    restock = ev("inventory.restocked", "03-04 12:00", "s", product_id="P", location_id="L1")
    events = [
        restock,  # published first, but 12:00 is after the alerts below: it resolves them
        ev("inventory.low_stock", "03-04 10:00", product_id="P", location_id="L1"),  # raise
        ev("inventory.low_stock", "03-04 10:30", product_id="P", location_id="L1"),  # open
        ev("inventory.out_of_stock", "03-04 11:00", product_id="P", location_id="L1"),  # raise
        ev("inventory.low_stock", "03-04 13:00", product_id="P", location_id="L1"),  # raise
        ev("inventory.low_stock", "03-04 10:00", product_id="P", location_id="L2"),  # raise
        # Payments per hour (processed, failed):
        *_payments("14", 15, 5),  # 20 at exactly 25 %: raise at 14:00
        *_payments("15", 2, 1),  # 33 % but only 3: no change
        *_payments("16", 20, 10),  # still open: no new alert
        *_payments("17", 1, 0),  # 0 %: resolves
        *_payments("18", 14, 5),  # 19 payments: no alert
        *_payments("19", 10, 10),  # raise at 19:00
        *_payments("20", 20, 6),  # 23 %: resolves
    ]
    rows = expected("alerts", events, tenant="t1")
    assert rows == [
        {
            "created_at": "2024-03-05T19:00:00Z",
            "alert_type": "payment_failure_rate",
            "severity": "critical",
        },
        {
            "created_at": "2024-03-05T14:00:00Z",
            "alert_type": "payment_failure_rate",
            "severity": "critical",
        },
        {"created_at": "2024-03-04T13:00:00Z", "alert_type": "low_stock", "severity": "warning"},
        {
            "created_at": "2024-03-04T11:00:00Z",
            "alert_type": "out_of_stock",
            "severity": "critical",
        },
        {"created_at": "2024-03-04T10:00:00Z", "alert_type": "low_stock", "severity": "warning"},
        {"created_at": "2024-03-04T10:00:00Z", "alert_type": "low_stock", "severity": "warning"},
    ]
    assert all("message" not in row for row in rows)
    since = expected("alerts", events, tenant="t1", since=date(2024, 3, 5))
    assert [row["created_at"] for row in since] == ["2024-03-05T19:00:00Z", "2024-03-05T14:00:00Z"]


# ------------------------------------------------------------------ smaller reports


def test_payments_failure_reasons_geo_logins_and_heatmap():
    events = [
        ev("payment.processed", "03-04 10:00", "a", payment_id="1"),
        ev("payment.failed", "03-04 10:10", "a", payment_id="2", failure_reason="expired_card"),
        ev("payment.failed", "03-04 11:10", "b", payment_id="3"),  # reason unknown
        ev("payment.refunded", "03-05 09:00", "s", payment_id="1", refund_amount=1),
        ev("user.logged_in", "03-04 10:00", "a", location={"country": "US", "city": "Austin"}),
        ev("user.logged_in", "03-04 11:00", "a", location={"country": "US", "city": "Austin"}),
        ev("user.logged_in", "03-04 11:30", None, user_id="b"),  # data.user_id, no location
        ev("user.logged_in", "03-05 10:00", "c", location={"country": "DE"}),  # city unknown
    ]
    # 03-04: 1 processed, 2 failed -> 2/3 = 0.6667; 03-05: only a refund -> rate 0.
    assert expected("payments", events, tenant="t1") == [
        {"date": "2024-03-04", "processed": 1, "failed": 2, "refunded": 0, "failure_rate": 0.6667},
        {"date": "2024-03-05", "processed": 0, "failed": 0, "refunded": 1, "failure_rate": 0.0},
    ]
    assert expected("failure-reasons", events, tenant="t1") == [
        {"failure_reason": "expired_card", "count": 1},
        {"failure_reason": "unknown", "count": 1},
    ]
    assert expected("geo", events, tenant="t1") == [
        {"country": "US", "city": "Austin", "logins": 2, "users": 1},
        {"country": "DE", "city": "unknown", "logins": 1, "users": 1},
        {"country": "unknown", "city": "unknown", "logins": 1, "users": 1},
    ]
    # 03-04: 3 logins by a, a, b -> 2 users, 1.5; 03-05: 1 by c.
    assert expected("logins", events, tenant="t1") == [
        {"date": "2024-03-04", "logins": 3, "users": 2, "logins_per_user": 1.5},
        {"date": "2024-03-05", "logins": 1, "users": 1, "logins_per_user": 1.0},
    ]
    # Hour 9: the refund (s). Hour 10: payment, payment, login of a and c's login on 03-05
    # -> 4 events, users a, c. Hour 11: b's payment, a's login, the login without an
    # envelope user -> 3 events, users a, b.
    assert expected("activity-heatmap", events, tenant="t1") == [
        {"hour": 9, "active_users": 1, "events": 1},
        {"hour": 10, "active_users": 2, "events": 4},
        {"hour": 11, "active_users": 2, "events": 3},
    ]


def test_operations_counts_dead_letters_and_response_time_percentiles():
    events = [
        ev("user.logged_in", "03-04 10:00", "a", metadata={"response_time_ms": ms})
        for ms in (100, 200, 300, 400)
    ]
    events.append(ev("user.logged_in", "03-04 11:00", "a", metadata={}))
    events.append(ev("wishlist.added", "03-05 11:00", "a", metadata=None))
    letters: list[dict[str, Any]] = [
        {"tenant_id": "t1", "received_at": datetime(2024, 3, 4, 23, 59)},
        {"tenant_id": "t1", "received_at": datetime(2024, 3, 6, 1, 0, tzinfo=UTC)},
        {"tenant_id": "t2", "received_at": datetime(2024, 3, 4, 12, 0)},
        {"tenant_id": None, "received_at": datetime(2024, 3, 4, 12, 0)},
    ]
    # 03-04: 5 events, 1 dead letter -> 1/6 = 0.1667; ms [100, 200, 300, 400]: p50 at 1.5
    #   -> 250; p95 at 2.85 -> 300 + 0.85*100 = 385.
    # 03-05: 1 event (unknown type), no response times -> null.
    # 03-06: dead letter only -> events 0, rate 1.
    assert expected("operations", events, tenant="t1", dead_letters=letters) == [
        {
            "date": "2024-03-04",
            "events": 5,
            "dead_letters": 1,
            "error_rate": 0.1667,
            "p50_response_ms": 250.0,
            "p95_response_ms": 385.0,
        },
        {
            "date": "2024-03-05",
            "events": 1,
            "dead_letters": 0,
            "error_rate": 0.0,
            "p50_response_ms": None,
            "p95_response_ms": None,
        },
        {
            "date": "2024-03-06",
            "events": 0,
            "dead_letters": 1,
            "error_rate": 1.0,
            "p50_response_ms": None,
            "p95_response_ms": None,
        },
    ]


def test_unknown_report_is_rejected():
    with pytest.raises(ValueError):
        expected("nope", [], tenant="t1")


# ------------------------------------------------------------------ the dataset


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return dataset.build()


def test_dataset_has_size_tenants_types_duplicates_and_ten_days(events):
    assert len(events) >= 2000
    assert {e["tenant_id"] for e in events} == set(dataset.TENANTS)
    contract_types = {
        "user.registered",
        "user.logged_in",
        "user.logged_out",
        "user.profile_updated",
        "order.created",
        "order.updated",
        "order.cancelled",
        "order.fulfilled",
        "payment.processed",
        "payment.failed",
        "payment.refunded",
        "inventory.low_stock",
        "inventory.out_of_stock",
        "inventory.restocked",
        "inventory.adjusted",
    }
    assert contract_types <= {e["event_type"] for e in events}
    ids = Counter((e["tenant_id"], e["event_id"]) for e in events)
    repeats = sum(count - 1 for count in ids.values())
    assert repeats >= 50
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:  # duplicates are exact and published after their original
        key = (event["tenant_id"], event["event_id"])
        if key in first:
            assert event == first[key] and event is not first[key]
        first.setdefault(key, event)
    days = {parse_timestamp(e["timestamp"]).date() for e in events}
    assert sorted(days) == [date(2024, 3, day) for day in range(4, 14)]
    assert dataset.build() == events  # deterministic


def test_dataset_has_the_edge_cases(events):
    orders = [e for e in events if e["event_type"] == "order.created"]
    currencies = Counter(e["data"].get("currency", "<none>") for e in orders)
    assert currencies["USD"] and currencies["EUR"] and currencies["<none>"] >= 5
    # (b) refunds later than their orders, by order and by payment only.
    created = {
        (e["tenant_id"], e["data"]["order_id"]): parse_timestamp(e["timestamp"]) for e in orders
    }
    refunds = [e for e in events if e["event_type"] == "payment.refunded"]
    later = [
        e
        for e in refunds
        if (key := (e["tenant_id"], e["data"].get("order_id"))) in created
        and parse_timestamp(e["timestamp"]).date() > created[key].date()
    ]
    assert len(later) >= 3
    assert any(e["data"].get("payment_id") == "edge-pay-eur-2" for e in refunds)
    # (d) late events: at least 30 envelopes two or more days older than the one before.
    times = [parse_timestamp(e["timestamp"]) for e in events]
    late = sum(1 for a, b in itertools.pairwise(times) if (a - b).days >= 2)
    assert late >= 30
    # (e) the same ids in both tenants.
    for id_key in ("order_id", "product_id"):
        owners = {
            e["tenant_id"] for e in events if e["data"].get(id_key) == f"shared-{id_key[:-3]}-0001"
        }
        assert owners == set(dataset.TENANTS)
    assert {e["tenant_id"] for e in events if e["user_id"] == dataset.SHARED_USER} == set(
        dataset.TENANTS
    )
    # (f) with and without response times, and without metadata at all.
    with_ms = sum(1 for e in events if "response_time_ms" in (e.get("metadata") or {}))
    assert 0 < with_ms < len(events)
    assert any("metadata" not in e for e in events)
    # (g) order.updated before its order.created in list order.
    position = {
        ("created", e["data"]["order_id"]): i
        for i, e in enumerate(events)
        if e["event_type"] == "order.created"
    }
    early_updates = [
        e
        for i, e in enumerate(events)
        if e["event_type"] == "order.updated"
        and i < position.get(("created", e["data"]["order_id"]), -1)
    ]
    assert len(early_updates) >= 2


def test_every_report_runs_on_the_dataset(events):
    now = datetime(2024, 3, 20, tzinfo=UTC)
    for tenant in dataset.TENANTS:
        for report in REPORTS:
            rows = expected(report, events, tenant=tenant, now=now)
            json.dumps(rows)  # JSON-ready
            assert rows or report == "dead-stock", report


def test_dead_letter_payloads_are_not_valid_envelopes():
    payloads = dataset.dead_letter_payloads()
    assert len(payloads) == len(dataset.dead_letter_tenants()) >= 3
    for raw in payloads:
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            continue
        assert (
            not isinstance(value, dict)
            or not isinstance(value.get("tenant_id"), str)
            or not isinstance(value.get("data"), dict)
            or value["event_type"] == "order.created"  # non-numeric total_amount
            or value["timestamp"] == "yesterday at noon"
        )
