"""A deterministic report-test dataset: a simulated stream plus deliberate edge cases.

``build(seed)`` returns the list of envelopes, in publish order, for two tenants
(``tenant-1``, ``tenant-2``) over the 10 UTC days 2024-03-04 (a Monday) .. 2024-03-13:

* the base is ``loadgen.Simulator(tenants=2, seed=seed, start=2024-03-04,
  days=10)`` with ``SIM_EVENTS`` events (all event types but, usually, out_of_stock);
* (a) multi-currency revenue: USD and EUR orders, every 4th USD order of the stream with
  NO ``currency`` key (-> USD), one EUR order with a lower-case ``"eur"`` and a GBP payment
  refunded on a day without GBP orders (a revenue 0 / orders 0 row);
* (b) refunds on a later day than their order (the simulator's, plus an EUR order refunded
  two days later), a refund whose ``order_id`` is unknown but whose ``payment_id`` has a
  processed EUR payment, one whose ``payment_id`` has a *failed* EUR payment and no
  ``order_id`` at all, and one with neither known (-> USD);
* (c) exact duplicates (same envelope, same ``event_id``) republished later in the list:
  ``DUPLICATES`` of them;
* (d) ``LATE_EVENTS`` late events: envelopes from the first four days moved into the last
  third of the list (their timestamps are days earlier than their neighbours');
* (e) ids colliding across tenants: ``shared-user-0001``, ``shared-order-0001``,
  ``shared-product-0001`` at ``shared-location-0001`` in both tenants, with different
  amounts, currencies, quantities and stock levels;
* (f) ``metadata.response_time_ms`` on about half of the events, none on the rest, and a
  few envelopes with no ``metadata`` at all;
* (g) ``order.updated`` before its ``order.created`` in list order (one simulated order,
  one hand-made);
* and more: stock-outs with restock cycles, a restock published before the low-stock it
  resolves, stock without a ``location_id``, never-sold stock (dead stock), payment-failure
  hours around the 20-payment / 25 % thresholds (one at exactly 25 %), an order paid after
  24 h and one paid exactly at 24 h, an ``order_id`` with two ``order.created`` events,
  items without ``total_price`` / ``quantity`` / ``name``, timestamps with a ``+02:00`` or
  ``-05:00`` offset that change the UTC day and one with nine fraction digits, and an
  unknown event type (``wishlist.added``) with a valid envelope.

``dead_letter_payloads()`` gives raw messages that must become dead letters.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from loadgen import Simulator, envelope

__all__ = [
    "DAYS",
    "DUPLICATES",
    "LATE_EVENTS",
    "SIM_EVENTS",
    "START",
    "TENANTS",
    "build",
    "dead_letter_payloads",
    "dead_letter_tenants",
]

START = datetime(2024, 3, 4, tzinfo=UTC)
DAYS = 10
TENANTS = ("tenant-1", "tenant-2")
SIM_EVENTS = 2600
DUPLICATES = 60
LATE_EVENTS = 36

SHARED_USER = "shared-user-0001"
SHARED_ORDER = "shared-order-0001"
SHARED_PRODUCT = "shared-product-0001"
SHARED_LOCATION = "shared-location-0001"


def _at(day: int, hour: int, minute: int = 0, second: int = 0, micros: int = 0) -> datetime:
    """2024-03-(day) hour:minute:second UTC."""
    return datetime(2024, 3, day, hour, minute, second, micros, tzinfo=UTC)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).astimezone(UTC)


class _Maker:
    """Hand-made envelopes with deterministic ids and metadata."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.made: list[dict[str, Any]] = []

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def __call__(
        self,
        event_type: str,
        tenant: str,
        user: str | None,
        when: datetime,
        data: dict[str, Any],
        *,
        response_ms: int | None = -1,
        metadata: bool = True,
    ) -> dict[str, Any]:
        """``response_ms``: -1 = about half of the events carry one, None = none."""
        meta: dict[str, Any] = {
            "ip_address": f"198.51.100.{self.rng.randrange(1, 255)}",
            "user_agent": "edge-case-publisher/1.0",
            "session_id": self.uid(),
            "request_id": self.uid(),
        }
        if response_ms == -1:  # about half carry one, as the simulator does
            if self.rng.random() < 0.5:
                meta["response_time_ms"] = self.rng.randrange(20, 900)
        elif response_ms is not None:
            meta["response_time_ms"] = response_ms
        event = envelope(
            event_type,
            data,
            tenant_id=tenant,
            user_id=user,
            timestamp=when,
            event_id=self.uid(),
            metadata=meta,
        )
        if not metadata:
            del event["metadata"]
        self.made.append(event)
        return event


def _order(
    make: _Maker,
    tenant: str,
    user: str,
    when: datetime,
    order_id: str,
    total: float,
    currency: str | None,
    items: list[dict[str, Any]],
    location: str | None = "edge-location-1",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": order_id,
        "order_number": f"ORD-EDGE-{order_id[-4:]}",
        "customer_id": user,
        "items_count": len(items),
        "subtotal": total,
        "tax_amount": 0.0,
        "shipping_amount": 0.0,
        "total_amount": total,
        "items": items,
    }
    if location is not None:
        data["location_id"] = location
    if currency is not None:
        data["currency"] = currency
    return make("order.created", tenant, user, when, data)


def _item(product: str, sku: str, name: str | None, quantity: int | None, unit: float, total=True):
    item: dict[str, Any] = {"product_id": product, "sku": sku, "unit_price": unit}
    if name is not None:
        item["name"] = name
    if quantity is not None:
        item["quantity"] = quantity
    if total:
        item["total_price"] = round((quantity or 1) * unit, 2)
    return item


def _payment(
    make: _Maker,
    kind: str,
    tenant: str,
    user: str | None,
    when: datetime,
    payment_id: str,
    order_id: str,
    amount: float,
    currency: str,
    reason: str | None = "insufficient_funds",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "order_id": order_id,
        "amount": amount,
        "currency": currency,
    }
    if kind == "payment.processed":
        data.update(payment_method="credit_card", gateway="stripe", transaction_id="ch_edge")
    elif reason is not None:
        data.update(failure_reason=reason, error_code="card_declined", retry_count=1)
    return make(kind, tenant, user, when, data)


def _refund(
    make: _Maker,
    tenant: str,
    user: str | None,
    when: datetime,
    amount: float,
    *,
    order_id: str | None,
    payment_id: str | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"refund_amount": amount, "refund_reason": "customer_request"}
    if order_id is not None:
        data["order_id"] = order_id
    if payment_id is not None:
        data["payment_id"] = payment_id
    data.update(refund_type="partial", refund_transaction_id="re_edge")
    return make("payment.refunded", tenant, user, when, data)


def _stock(
    make: _Maker,
    kind: str,
    tenant: str,
    when: datetime,
    product: str,
    location: str | None,
    sku: str | None,
    **fields: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"product_id": product, "variant_id": f"{product}-v"}
    if sku is not None:
        data["sku"] = sku
    if location is not None:
        data["location_id"] = location
    data.update(fields)
    actor = None if kind in ("inventory.low_stock", "inventory.out_of_stock") else "edge-staff"
    return make(f"inventory.{kind}", tenant, actor, when, data)


def _user_events(make: _Maker) -> None:
    # (e) the same user id in both tenants, with different activity.
    for tenant, day, hour, seconds in (("tenant-1", 4, 9, 1200), ("tenant-2", 6, 15, 75)):
        data = {
            "user_id": SHARED_USER,
            "email": f"shared@{tenant}.example",
            "tenant_slug": tenant,
            "registration_method": "email",
            "referral_source": "organic",
        }
        make("user.registered", tenant, SHARED_USER, _at(day, hour), data)
        location = {"country": "NZ", "city": "Wellington"}
        login = {"user_id": SHARED_USER, "login_method": "password", "device_type": "web"}
        make(
            "user.logged_in",
            tenant,
            SHARED_USER,
            _at(day, hour, 1),
            {**login, "location": location},
        )
        logout = {"user_id": SHARED_USER, "session_duration_seconds": seconds}
        make("user.logged_out", tenant, SHARED_USER, _at(day, hour, 21), logout)
    # A login without location (-> unknown/unknown) and one with only a data.user_id.
    make("user.logged_in", "tenant-2", None, _at(9, 12), {"user_id": "edge-data-only-user"})
    make("user.logged_in", "tenant-2", "edge-user-noloc", _at(9, 12, 5), {"login_method": "sso"})
    # A logout without a duration (not a session) and a registration whose data names
    # another user than the envelope.
    make("user.logged_out", "tenant-1", "edge-user-2", _at(8, 7), {"user_id": "edge-user-2"})
    registration = {"user_id": "edge-user-registered-by-admin", "email": "x@example.com"}
    make("user.registered", "tenant-1", "edge-admin", _at(5, 11), registration)
    make("user.logged_in", "tenant-1", "edge-user-registered-by-admin", _at(12, 9), {})
    # Offsets that move the UTC day, nine fraction digits, no metadata at all.
    early = make(
        "user.logged_in",
        "tenant-1",
        "edge-user-offset",
        _at(7, 23, 30),
        {"user_id": "edge-user-offset", "location": {"country": "DE", "city": "Berlin"}},
    )
    early["timestamp"] = "2024-03-08T01:30:00.000+02:00"  # 2024-03-07T23:30:00Z
    nanos = make(
        "user.logged_out",
        "tenant-1",
        "edge-user-offset",
        _at(9, 10, 11, 12, 123456),
        {"user_id": "edge-user-offset", "session_duration_seconds": 4321},
    )
    nanos["timestamp"] = "2024-03-09T10:11:12.123456789Z"
    make(
        "user.profile_updated",
        "tenant-2",
        SHARED_USER,
        _at(7, 8),
        {"user_id": SHARED_USER, "fields_updated": ["phone"]},
        metadata=False,
    )
    # An unknown event type with a valid envelope: stored and counted in activity and
    # operations only.
    for index, (day, hour) in enumerate(((5, 3), (8, 16), (11, 22))):
        make(
            "wishlist.added",
            "tenant-1",
            f"edge-wisher-{index}",
            _at(day, hour, 7),
            {"product_id": SHARED_PRODUCT},
            metadata=index != 1,
            response_ms=250 + index,
        )


def _order_events(make: _Maker) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Orders, payments and refunds; returns (updated, created) pairs to put out of order."""
    pairs = []
    mug = _item(SHARED_PRODUCT, "SHARED-001", "Shared Mug", 2, 29.99)
    _order(
        make,
        "tenant-1",
        SHARED_USER,
        _at(5, 12),
        SHARED_ORDER,
        59.98,
        "EUR",
        [mug],
        SHARED_LOCATION,
    )
    _payment(
        make,
        "payment.processed",
        "tenant-1",
        SHARED_USER,
        _at(5, 12, 1),
        "shared-payment-0001",
        SHARED_ORDER,
        59.98,
        "EUR",
    )
    mug2 = _item(SHARED_PRODUCT, "SHARED-001", "Shared Mug (T2)", 1, 15.0)
    _order(
        make,
        "tenant-2",
        SHARED_USER,
        _at(6, 15, 10),
        SHARED_ORDER,
        15.0,
        "USD",
        [mug2],
        SHARED_LOCATION,
    )
    # tenant-2's refund of its own shared-order-0001: USD (its order), not tenant-1's EUR.
    _refund(make, "tenant-2", "edge-staff", _at(8, 9), 5.0, order_id=SHARED_ORDER, payment_id=None)

    # (b) an EUR order refunded two days later.
    item = _item("edge-product-eur", "EDGE-EUR", "Euro Lamp", 1, 120.5)
    _order(make, "tenant-1", "edge-user-1", _at(5, 10), "edge-order-eur-1", 120.5, "EUR", [item])
    _payment(
        make,
        "payment.processed",
        "tenant-1",
        "edge-user-1",
        _at(5, 10, 1),
        "edge-pay-eur-1",
        "edge-order-eur-1",
        120.5,
        "EUR",
    )
    _refund(
        make,
        "tenant-1",
        "edge-staff",
        _at(7, 9),
        40.25,
        order_id="edge-order-eur-1",
        payment_id="edge-pay-eur-1",
    )
    # (b) unknown order_id, payment_id of a processed EUR payment (of an order never created).
    _payment(
        make,
        "payment.processed",
        "tenant-1",
        "edge-user-1",
        _at(6, 13),
        "edge-pay-eur-2",
        "edge-order-ghost-x",
        15.0,
        "EUR",
    )
    _refund(
        make,
        "tenant-1",
        "edge-staff",
        _at(8, 14),
        15.0,
        order_id="edge-order-ghost",
        payment_id="edge-pay-eur-2",
    )
    # (b) no order_id at all, payment_id of a *failed* EUR payment.
    _payment(
        make,
        "payment.failed",
        "tenant-1",
        "edge-user-1",
        _at(6, 13, 30),
        "edge-pay-failed-eur",
        "edge-order-ghost-y",
        7.5,
        "eur",
        reason=None,
    )
    _refund(
        make,
        "tenant-1",
        "edge-staff",
        _at(9, 8),
        7.5,
        order_id=None,
        payment_id="edge-pay-failed-eur",
    )
    # (b) neither known -> USD.
    _refund(
        make,
        "tenant-1",
        "edge-staff",
        _at(9, 15),
        9.99,
        order_id="edge-order-unknown-2",
        payment_id="edge-pay-unknown",
    )
    # A GBP payment refunded on a day with no GBP order: a revenue 0 / orders 0 row.
    _payment(
        make,
        "payment.processed",
        "tenant-2",
        "edge-user-gbp",
        _at(12, 18),
        "edge-pay-gbp",
        "edge-order-ghost-gbp",
        30.0,
        "GBP",
    )
    _refund(
        make,
        "tenant-2",
        "edge-staff",
        _at(13, 23, 59, 59),
        12.34,
        order_id=None,
        payment_id="edge-pay-gbp",
    )

    # Items: no total_price (3 x 4.50), no quantity (1), latest sale without a name.
    items = [
        _item("edge-product-items", "EDGE-ITM", "Item Box", 3, 4.5, total=False),
        _item("edge-product-single", "EDGE-ONE", "Single", None, 2.25),
    ]
    _order(make, "tenant-1", "edge-user-3", _at(6, 9), "edge-order-items-1", 15.75, None, items)
    later = [_item("edge-product-items", "EDGE-ITM", None, 1, 4.5)]
    _order(make, "tenant-1", "edge-user-3", _at(11, 9), "edge-order-items-2", 4.5, "usd", later)
    # An order without location_id (-> "") selling stock that has no location either.
    noloc = [_item("edge-product-noloc", "EDGE-NOLOC", "Nowhere Bag", 2, 10.0)]
    _order(
        make, "tenant-2", "edge-user-4", _at(8, 11), "edge-order-noloc", 20.0, "EUR", noloc, None
    )

    # Conversion: paid after 24 h (paid, abandoned); paid exactly at 24 h (not abandoned);
    # unpaid late on the last day; the same order_id created twice (counted once, on its
    # earliest day, by conversion; twice by revenue).
    item = _item("edge-product-conv", "EDGE-CONV", "Conversion Kit", 1, 50.0)
    _order(make, "tenant-1", "edge-user-5", _at(6, 8), "edge-order-slowpay", 50.0, "USD", [item])
    _payment(
        make,
        "payment.processed",
        "tenant-1",
        "edge-user-5",
        _at(7, 9),
        "edge-pay-slow",
        "edge-order-slowpay",
        50.0,
        "USD",
    )
    _order(make, "tenant-1", "edge-user-5", _at(7, 10), "edge-order-24h", 50.0, "USD", [item])
    _payment(
        make,
        "payment.processed",
        "tenant-1",
        "edge-user-5",
        _at(8, 10),
        "edge-pay-24h",
        "edge-order-24h",
        50.0,
        "USD",
    )
    _order(make, "tenant-2", "edge-user-6", _at(13, 23), "edge-order-lastday", 50.0, "EUR", [item])
    _order(make, "tenant-1", "edge-user-7", _at(8, 10), "edge-order-twice", 50.0, "USD", [item])
    _order(make, "tenant-1", "edge-user-7", _at(9, 11), "edge-order-twice", 50.0, "USD", [item])
    # An order placed at 21:15 in New York: 02:15 UTC the next day.
    shifted = _order(
        make, "tenant-2", "edge-user-6", _at(7, 2, 15), "edge-order-offset", 50.0, "EUR", [item]
    )
    shifted["timestamp"] = "2024-03-06T21:15:00-05:00"

    # (g) an order.updated published before its order.created.
    created = _order(
        make, "tenant-1", "edge-user-8", _at(10, 16), "edge-order-early-update", 25.0, "EUR", [item]
    )
    updated = make(
        "order.updated",
        "tenant-1",
        "edge-staff",
        _at(10, 16, 30),
        {
            "order_id": "edge-order-early-update",
            "status": "processing",
            "previous_status": "pending",
            "updated_fields": ["status"],
        },
    )
    pairs.append((updated, created))
    make(
        "order.cancelled",
        "tenant-1",
        "edge-user-8",
        _at(11, 8),
        {
            "order_id": "edge-order-early-update",
            "cancellation_reason": "customer_request",
            "refund_amount": 25.0,
        },
    )
    make(
        "order.fulfilled",
        "tenant-2",
        "edge-staff",
        _at(9, 9),
        {"order_id": SHARED_ORDER, "fulfillment_method": "shipping", "carrier": "UPS"},
    )
    return pairs


def _inventory_events(make: _Maker) -> None:
    # (e) the shared product and location, different levels per tenant.
    t1 = ("tenant-1", SHARED_PRODUCT, SHARED_LOCATION, "SHARED-001")
    _stock(make, "low_stock", t1[0], _at(5, 13), *t1[1:], current_quantity=3, reorder_point=10)
    _stock(make, "out_of_stock", t1[0], _at(6, 2), *t1[1:], last_sold_at="2024-03-05T12:00:00Z")
    _stock(
        make, "out_of_stock", t1[0], _at(6, 5), *t1[1:], last_sold_at="2024-03-05T12:00:00.000000Z"
    )
    _stock(make, "restocked", t1[0], _at(6, 20, 30), *t1[1:], quantity_added=40, new_quantity=40)
    _stock(
        make,
        "adjusted",
        t1[0],
        _at(9, 10),
        t1[1],
        t1[2],
        None,
        previous_quantity=40,
        new_quantity=38,
        adjustment_reason="damaged_goods",
    )
    _stock(make, "low_stock", t1[0], _at(12, 8), *t1[1:], current_quantity=4, reorder_point=10)
    t2 = ("tenant-2", SHARED_PRODUCT, SHARED_LOCATION, "SHARED-001-B")
    _stock(make, "low_stock", t2[0], _at(7, 6), *t2[1:], current_quantity=7, reorder_point=8)
    _stock(make, "restocked", t2[0], _at(7, 18), *t2[1:], quantity_added=23, new_quantity=30)
    _stock(make, "low_stock", t2[0], _at(8, 4), *t2[1:], current_quantity=2, reorder_point=8)
    _stock(make, "low_stock", t2[0], _at(8, 6), *t2[1:], current_quantity=1, reorder_point=8)
    _stock(make, "out_of_stock", t2[0], _at(9, 1, 15), *t2[1:], last_sold_at="2024-03-09T01:14:59Z")
    _stock(make, "restocked", t2[0], _at(11, 7, 45), *t2[1:], quantity_added=25, new_quantity=25)

    # A restock published before the low-stock it resolves (event time decides).
    late = ("tenant-1", "edge-product-late", "edge-location-1", "EDGE-LATE")
    restock = _stock(
        make, "restocked", late[0], _at(10, 12), *late[1:], quantity_added=50, new_quantity=55
    )
    low = _stock(make, "low_stock", late[0], _at(10, 11), *late[1:], current_quantity=5)
    make.made.remove(low)
    make.made.insert(make.made.index(restock) + 1, low)
    _stock(make, "low_stock", late[0], _at(10, 13), *late[1:], current_quantity=4)

    # Stock without a location_id, sold by an order without one.
    noloc = ("tenant-2", "edge-product-noloc", None, "EDGE-NOLOC")
    _stock(
        make,
        "adjusted",
        noloc[0],
        _at(5, 9),
        noloc[1],
        None,
        None,
        new_quantity=12,
        previous_quantity=11,
    )
    _stock(make, "low_stock", noloc[0], _at(8, 12), *noloc[1:], current_quantity=3)

    # Never sold (dead stock with last_sold_at null), and sold only long ago.
    dead = ("tenant-1", "edge-product-dead", "edge-location-2", "EDGE-DEAD")
    _stock(make, "restocked", dead[0], _at(4, 1), *dead[1:], quantity_added=50, new_quantity=50)
    dead2 = ("tenant-2", "edge-product-dead2", "edge-location-2", "EDGE-DEAD2")
    _stock(
        make, "out_of_stock", dead2[0], _at(4, 3), *dead2[1:], last_sold_at="2024-02-20T08:15:30.5Z"
    )
    _stock(make, "restocked", dead2[0], _at(4, 9), *dead2[1:], quantity_added=10, new_quantity=10)
    # Out of stock and never restocked in the period: an open cycle.
    open_ = ("tenant-1", "edge-product-open", "edge-location-1", "EDGE-OPEN")
    _stock(make, "restocked", open_[0], _at(11, 6), *open_[1:], quantity_added=5, new_quantity=5)
    _stock(
        make, "out_of_stock", open_[0], _at(13, 20), *open_[1:], last_sold_at="2024-03-13T19:59:00Z"
    )


def _payment_hours(make: _Maker, base: list[dict[str, Any]]) -> None:
    """Payment bursts around the alert thresholds, topped up against the simulated ones."""
    counts: dict[tuple[str, datetime], list[int]] = {}
    for event in base:
        if event["event_type"] in ("payment.processed", "payment.failed"):
            hour = _parse(event["timestamp"]).replace(minute=0, second=0, microsecond=0)
            slot = counts.setdefault((event["tenant_id"], hour), [0, 0])
            slot[event["event_type"] == "payment.failed"] += 1
    serial = iter(range(1, 10_000))

    def burst(tenant: str, hour: datetime, processed: int, failed: int) -> None:
        kinds = ["payment.processed"] * processed + ["payment.failed"] * failed
        make.rng.shuffle(kinds)
        for position, kind in enumerate(kinds):
            number = next(serial)
            when = hour + timedelta(seconds=5 + position * (3500 // max(1, len(kinds))))
            _payment(
                make,
                kind,
                tenant,
                f"burst-user-{number % 5}",
                when,
                f"burst-pay-{number:04d}",
                f"burst-order-{number:04d}",
                10.0,
                "USD",
                reason=("card_declined", "expired_card", None)[number % 3] or None,
            )

    def existing(tenant: str, hour: datetime) -> tuple[int, int]:
        processed, failed = counts.get((tenant, hour), [0, 0])
        return processed, failed

    # tenant-1: a clear burst at 2024-03-09 14:00, resolved by the quieter hours after it.
    p0, f0 = existing("tenant-1", _at(9, 14))
    burst("tenant-1", _at(9, 14), max(0, 16 - p0), 10)
    # tenant-2, 2024-03-10 02:00-06:00: exactly 25 % of >= 20 (raises); few payments, most
    # failed (no change); 30 % of 20+ (still open, no new alert); below 25 % (resolves);
    # 50 % of 20+ (raises again).
    p0, f0 = existing("tenant-2", _at(10, 2))
    total = 20
    while total < p0 + f0 or total // 4 < f0 or total - total // 4 < p0:
        total += 4
    burst("tenant-2", _at(10, 2), total - total // 4 - p0, total // 4 - f0)
    p0, f0 = existing("tenant-2", _at(10, 3))
    burst("tenant-2", _at(10, 3), 0, 3 + p0)
    p0, f0 = existing("tenant-2", _at(10, 4))
    burst("tenant-2", _at(10, 4), max(0, 14 - p0), max(0, 6 - f0) + 2)
    p0, f0 = existing("tenant-2", _at(10, 5))
    burst("tenant-2", _at(10, 5), 4 * f0 + 3, 0)
    p0, f0 = existing("tenant-2", _at(10, 6))
    burst("tenant-2", _at(10, 6), max(0, 10 - p0), 10 + p0)


def build(seed: int = 1) -> list[dict[str, Any]]:
    """The dataset's envelopes in publish order (deterministic for a given seed)."""
    rng = random.Random(f"report-dataset-{seed}")
    simulator = Simulator(tenants=len(TENANTS), seed=seed, start=START, days=DAYS)
    base = list(simulator.events(SIM_EVENTS))

    # (a) every 4th USD order without a currency key; one EUR order in lower case.
    usd_orders = [
        e for e in base if e["event_type"] == "order.created" and e["data"]["currency"] == "USD"
    ]
    for event in usd_orders[::4]:
        del event["data"]["currency"]
    eur = next(
        e for e in base if e["event_type"] == "order.created" and e["data"].get("currency") == "EUR"
    )
    eur["data"]["currency"] = "eur"

    make = _Maker(rng)
    _user_events(make)
    pairs = _order_events(make)
    _inventory_events(make)
    _payment_hours(make, base)

    # Merge the hand-made events into the stream by timestamp (stable, the simulator's
    # first), then put the deliberate disorder in.
    extra = sorted(make.made, key=_event_time)  # stable: equal times keep their order
    events: list[dict[str, Any]] = []
    for event in base:
        moment = _event_time(event)
        while extra and _event_time(extra[0]) < moment:
            events.append(extra.pop(0))
        events.append(event)
    events.extend(extra)
    pinned: set[int] = set()
    # Keep the hand-made restock-before-low-stock pair in its publish order.
    restock_first = [e for e in make.made if e["data"].get("product_id") == "edge-product-late"]
    for event in restock_first[:2]:
        events.remove(event)
    anchor = next(
        i
        for i, e in enumerate(events)
        if _event_time(e) > _event_time(restock_first[0])  # after the restock's time
    )
    events[anchor:anchor] = restock_first[:2]
    pinned.update(id(e) for e in restock_first)

    # (g) order.updated before its order.created: the hand-made pair and a simulated one.
    sim_created = next(
        e
        for e in base
        if e["event_type"] == "order.created"
        and any(
            o["event_type"] == "order.updated" and o["data"]["order_id"] == e["data"]["order_id"]
            for o in base
        )
    )
    sim_updated = next(
        e
        for e in base
        if e["event_type"] == "order.updated"
        and e["data"]["order_id"] == sim_created["data"]["order_id"]
    )
    for updated, created in [*pairs, (sim_updated, sim_created)]:
        events.remove(updated)
        events.insert(events.index(created), updated)
        pinned.update((id(updated), id(created)))

    # (d) late events: envelopes of the first four days moved into the last third.
    early = [e for e in base if _event_time(e) < START + timedelta(days=4) and id(e) not in pinned]
    for event in rng.sample(early, LATE_EVENTS):
        events.remove(event)
        low = len(events) * 2 // 3
        events.insert(rng.randrange(low, len(events) + 1), event)

    # (c) exact duplicates republished later (a deep copy: same event_id, same payload).
    originals = rng.sample(events, DUPLICATES)
    for event in originals:
        position = events.index(event)
        events.insert(rng.randrange(position + 1, len(events) + 1), copy.deepcopy(event))
    return events


def _event_time(event: dict[str, Any]) -> datetime:
    # Python 3.11 reads "Z", offsets and more than six fraction digits (truncated).
    return datetime.fromisoformat(event["timestamp"]).astimezone(UTC)


def dead_letter_payloads() -> list[bytes]:
    """Raw messages that must become dead letters (and never events)."""
    when = "2024-03-08T10:00:00Z"
    return [
        b'{"event_type": "order.created", "tenant_id": "tenant-1", "data": {',  # bad JSON
        b"\xff\xfe\x00not utf-8",  # not UTF-8
        b"[1, 2, 3]",  # JSON, not an object
        json.dumps(  # no tenant_id
            {"event_id": "dl-1", "event_type": "user.logged_in", "timestamp": when, "data": {}}
        ).encode(),
        json.dumps(  # tenant_id of the wrong type
            {"event_id": "dl-2", "event_type": "user.logged_in", "tenant_id": 42, "data": {}}
        ).encode(),
        json.dumps(  # data not an object; the envelope names tenant-1
            {
                "event_id": "dl-3",
                "event_type": "order.created",
                "tenant_id": "tenant-1",
                "timestamp": when,
                "data": "not-an-object",
            }
        ).encode(),
        json.dumps(  # non-numeric total_amount; names tenant-2
            {
                "event_id": "dl-4",
                "event_type": "order.created",
                "tenant_id": "tenant-2",
                "timestamp": when,
                "data": {"order_id": "dl-order", "total_amount": "abc"},
            }
        ).encode(),
        json.dumps(  # an unparseable timestamp; names tenant-1
            {
                "event_id": "dl-5",
                "event_type": "user.logged_in",
                "tenant_id": "tenant-1",
                "timestamp": "yesterday at noon",
                "data": {},
            }
        ).encode(),
    ]


def dead_letter_tenants() -> list[str | None]:
    """The tenant each of ``dead_letter_payloads()`` names in a readable envelope, if any."""
    return [None, None, None, None, None, "tenant-1", "tenant-2", "tenant-1"]
