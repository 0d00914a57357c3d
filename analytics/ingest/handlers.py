"""The handlers: one pure function per event type, from a validated event to its changes.

A handler never touches a database, and this module imports none (an import
contract holds it): it builds the plain :mod:`analytics.ingest.changes` that the
writer applies. Every registered event type has exactly one handler, checked at
import.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from analytics import events as ev
from analytics.errors import DuplicateRegistration
from analytics.events import Event
from analytics.ingest.changes import (
    ACTIVITY,
    ALL_EVENTS,
    CITY_LOGINS,
    COHORTS,
    COUNTERS,
    DAILY_REVENUE,
    HOURLY_METRICS,
    INVENTORY,
    LOGINS,
    MOVEMENTS,
    ORDERS,
    PAYMENT_FAILED,
    PAYMENT_OUTCOMES,
    PAYMENT_PROCESSED,
    PAYMENTS,
    PRODUCT_MONTHS,
    PRODUCT_SALES,
    REFUNDS,
    SESSIONS,
    Append,
    Change,
    Context,
    StockAlerts,
    Upsert,
    stock_alert_message,
)

ZERO = Decimal(0)
#: Stands for a place a login did not report.
UNKNOWN_PLACE = "unknown"


Handler = Callable[[Event, Context], list[Change]]
HANDLERS: dict[str, Handler] = {}


def handles(event_type: str) -> Callable[[Handler], Handler]:
    """Register the handler of a known event type; a second one for the same type is refused."""
    if event_type not in ev.REGISTRY:
        raise DuplicateRegistration(f"{event_type!r} is not a registered event type")

    def register(handler: Handler) -> Handler:
        if event_type in HANDLERS:
            raise DuplicateRegistration(f"A handler for {event_type!r} is already registered.")
        HANDLERS[event_type] = handler
        return handler

    return register


def counter(
    event: Event, metric: str, dimension: str | None = "", total: Decimal | None = None
) -> Upsert:
    return Upsert(
        COUNTERS,
        {
            "tenant_id": event.tenant_id,
            "metric": metric,
            "hour": event.hour if metric in HOURLY_METRICS else event.hour.replace(hour=0),
            "dimension": dimension or "",
            "count": 1,
            "total": total if total is not None else ZERO,
        },
    )


def common_changes(event: Event) -> list[Change]:
    """What every stored event changes, known type or not: activity counts.

    Two counters: the hour's events (the heatmap reads hours, never types) and the
    day's events of the type (nothing reads them by hour). One counter by hour and
    type held ~15 rows an hour; these hold one an hour and ~15 a day.
    """
    changes: list[Change] = [
        counter(event, ALL_EVENTS),
        counter(event, "events_by_type", event.event_type),
    ]
    if event.user_id:
        changes.append(
            Upsert(
                ACTIVITY,
                {
                    "tenant_id": event.tenant_id,
                    "hour": event.hour,
                    "user_id": event.user_id,
                },
            )
        )
    return changes


# ----------------------------------------------------------------------- user.*


@handles("user.registered")
def user_registered(event: Event, ctx: Context) -> list[Change]:
    data: ev.UserRegistered = event.data
    changes: list[Change] = [
        counter(event, "registrations"),
        counter(event, "registrations_by_source", data.referral_source),
        counter(event, "registrations_by_method", data.registration_method),
    ]
    user_id = data.user_id or event.user_id
    if user_id:
        changes.append(
            Upsert(
                COHORTS,
                {
                    "tenant_id": event.tenant_id,
                    "user_id": user_id,
                    "registered_at": event.timestamp,
                    "registration_method": data.registration_method,
                    "referral_source": data.referral_source,
                },
            )
        )
    return changes


@handles("user.logged_in")
def user_logged_in(event: Event, ctx: Context) -> list[Change]:
    data: ev.UserLoggedIn = event.data
    country, city = data.country or UNKNOWN_PLACE, data.city or UNKNOWN_PLACE
    user_id = event.user_id or data.user_id or ""
    changes: list[Change] = [
        counter(event, "logins", data.login_method),
        counter(event, "logins_by_device", data.device_type),
        Upsert(
            LOGINS,
            {
                "tenant_id": event.tenant_id,
                "day": event.day,
                "country": country,
                "city": city,
                "user_id": user_id,
            },
        ),
        Upsert(
            CITY_LOGINS,
            {
                "tenant_id": event.tenant_id,
                "day": event.day,
                "country": country,
                "city": city,
                "logins": 1,
            },
        ),
    ]
    return changes


@handles("user.logged_out")
def user_logged_out(event: Event, ctx: Context) -> list[Change]:
    data: ev.UserLoggedOut = event.data
    changes: list[Change] = [counter(event, "logouts", total=data.session_duration_seconds)]
    if data.session_duration_seconds is not None:
        changes.append(
            Append(
                SESSIONS,
                {
                    "tenant_id": event.tenant_id,
                    "ended_at": event.timestamp,
                    "duration_seconds": data.session_duration_seconds,
                },
            )
        )
    return changes


@handles("user.profile_updated")
def user_profile_updated(event: Event, ctx: Context) -> list[Change]:
    data: ev.UserProfileUpdated = event.data
    changes: list[Change] = [counter(event, "profile_updates")]
    changes += [counter(event, "profile_fields_updated", name) for name in set(data.fields_updated)]
    return changes


# ---------------------------------------------------------------------- order.*


def order_row(event: Event, order_id: str, **values: Any) -> Upsert:
    row: dict[str, Any] = {"tenant_id": event.tenant_id, "order_id": order_id}
    row.update(values)
    return Upsert(ORDERS, row)


@handles("order.created")
def order_created(event: Event, ctx: Context) -> list[Change]:
    data: ev.OrderCreated = event.data
    currency = data.currency or ctx.default_currency
    location = data.location_id or ""
    changes: list[Change] = [
        counter(event, "revenue", currency, data.total_amount),
        order_row(
            event,
            data.order_id,
            status="created",
            status_at=event.timestamp,
            created_at=event.timestamp,
            total_amount=data.total_amount,
            currency=currency,
            items_count=data.items_count if data.items_count is not None else len(data.items),
        ),
        Upsert(
            DAILY_REVENUE,
            {
                "tenant_id": event.tenant_id,
                "day": event.day,
                "currency": currency,
                "orders": 1,
                "revenue": data.total_amount,
                "refunds": ZERO,
            },
        ),
    ]
    month = event.day.replace(day=1)
    for item in data.items:
        sale = {
            "tenant_id": event.tenant_id,
            "product_id": item.product_id,
            "currency": currency,
            "location_id": location,
            "units": item.quantity,
            "revenue": item.total_price,
            "name": item.name,
            "last_sold_at": event.timestamp,
        }
        changes.append(Upsert(PRODUCT_SALES, {**sale, "day": event.day}))
        name_at = event.timestamp if item.name is not None else None
        changes.append(Upsert(PRODUCT_MONTHS, {**sale, "month": month, "name_at": name_at}))
    return changes


@handles("order.updated")
def order_updated(event: Event, ctx: Context) -> list[Change]:
    data: ev.OrderUpdated = event.data
    stamp = event.timestamp if data.status else None
    return [
        counter(event, "order_updates", data.status),
        order_row(event, data.order_id, status=data.status, status_at=stamp),
    ]


@handles("order.cancelled")
def order_cancelled(event: Event, ctx: Context) -> list[Change]:
    data: ev.OrderCancelled = event.data
    return [
        # refund_amount of a cancellation is not a refund (payment.refunded is):
        # it is kept as the counter's total for what it says, nothing more.
        counter(event, "orders_cancelled", data.cancellation_reason, data.refund_amount),
        order_row(
            event,
            data.order_id,
            status="cancelled",
            status_at=event.timestamp,
            cancelled_at=event.timestamp,
        ),
    ]


@handles("order.fulfilled")
def order_fulfilled(event: Event, ctx: Context) -> list[Change]:
    data: ev.OrderFulfilled = event.data
    return [
        counter(event, "orders_fulfilled", data.fulfillment_method),
        order_row(
            event,
            data.order_id,
            status="fulfilled",
            status_at=event.timestamp,
            fulfilled_at=event.timestamp,
        ),
    ]


# -------------------------------------------------------------------- payment.*


def payment_row(event: Event, payment_id: str | None, **values: Any) -> Upsert:
    # A payment without an id is still one payment: the event stands for it.
    row: dict[str, Any] = {
        "tenant_id": event.tenant_id,
        "payment_id": payment_id or event.event_id,
        "refunded_amount": ZERO,
    }
    row.update(values)
    return Upsert(PAYMENTS, row)


@handles("payment.processed")
def payment_processed(event: Event, ctx: Context) -> list[Change]:
    data: ev.PaymentProcessed = event.data
    changes: list[Change] = [
        counter(event, "payments_processed", data.currency, data.amount),
        counter(event, PAYMENT_OUTCOMES, PAYMENT_PROCESSED),
        payment_row(
            event,
            data.payment_id,
            status="processed",
            status_at=event.timestamp,
            amount=data.amount,
            currency=data.currency,
            payment_method=data.payment_method,
        ),
    ]
    if data.order_id:
        changes.append(order_row(event, data.order_id, paid_at=event.timestamp))
    return changes


@handles("payment.failed")
def payment_failed(event: Event, ctx: Context) -> list[Change]:
    data: ev.PaymentFailed = event.data
    return [
        counter(event, "payments_failed", data.failure_reason, data.amount),
        counter(event, PAYMENT_OUTCOMES, PAYMENT_FAILED),
        payment_row(
            event,
            data.payment_id,
            status="failed",
            status_at=event.timestamp,
            amount=data.amount,
            currency=data.currency,
            failure_reason=data.failure_reason,
        ),
    ]


@handles("payment.refunded")
def payment_refunded(event: Event, ctx: Context) -> list[Change]:
    data: ev.PaymentRefunded = event.data
    return [
        counter(event, "payments_refunded", data.refund_reason, data.refund_amount),
        payment_row(
            event,
            data.payment_id,
            status="refunded",
            status_at=event.timestamp,
            refunded_amount=data.refund_amount,
        ),
        Append(
            REFUNDS,
            {
                "tenant_id": event.tenant_id,
                "event_id": event.event_id,
                "refunded_at": event.timestamp,
                "order_id": data.order_id,
                "payment_id": data.payment_id,
                "amount": data.refund_amount,
                "reason": data.refund_reason,
                # The order's currency, when the writer finds the order stored.
                "currency": None,
            },
        ),
    ]


# ------------------------------------------------------------------ inventory.*


def inventory_changes(
    event: Event,
    kind: str,
    product_id: str,
    location_id: str,
    sku: str | None,
    on_hand: int | None,
    change: int | None = None,
    reason: str | None = None,
    alert_message: str | None = None,
    **counts: Any,
) -> list[Change]:
    row: dict[str, Any] = {
        "tenant_id": event.tenant_id,
        "product_id": product_id,
        "location_id": location_id,
        "sku": sku,
        "on_hand": on_hand,
        "level_at": event.timestamp if on_hand is not None else None,
        "low_stock_events": 0,
        "out_of_stock_events": 0,
        "restock_events": 0,
        "adjustment_events": 0,
    }
    row.update(counts)
    return [
        counter(event, kind),
        Upsert(INVENTORY, row),
        Append(
            MOVEMENTS,
            {
                "tenant_id": event.tenant_id,
                "event_id": event.event_id,
                "product_id": product_id,
                "location_id": location_id,
                "kind": kind,
                "occurred_at": event.timestamp,
                "quantity_change": change,
                "quantity_after": on_hand,
                "reason": reason,
                "alert_message": alert_message,
            },
        ),
    ]


@handles("inventory.low_stock")
def inventory_low_stock(event: Event, ctx: Context) -> list[Change]:
    data: ev.InventoryLowStock = event.data
    return [
        *inventory_changes(
            event,
            "low_stock",
            data.product_id,
            data.location_id,
            data.sku,
            data.current_quantity,
            alert_message=stock_alert_message(
                "low_stock",
                data.sku,
                data.product_id,
                data.location_id,
                data.current_quantity,
                data.reorder_point,
            ),
            low_stock_events=1,
        ),
        StockAlerts(event.tenant_id, data.product_id, data.location_id, event.timestamp),
    ]


@handles("inventory.out_of_stock")
def inventory_out_of_stock(event: Event, ctx: Context) -> list[Change]:
    data: ev.InventoryOutOfStock = event.data
    return [
        *inventory_changes(
            event,
            "out_of_stock",
            data.product_id,
            data.location_id,
            data.sku,
            0,
            alert_message=stock_alert_message(
                "out_of_stock", data.sku, data.product_id, data.location_id
            ),
            out_of_stock_events=1,
            last_sold_at=data.last_sold_at,
        ),
        StockAlerts(event.tenant_id, data.product_id, data.location_id, event.timestamp),
    ]


@handles("inventory.restocked")
def inventory_restocked(event: Event, ctx: Context) -> list[Change]:
    data: ev.InventoryRestocked = event.data
    return [
        *inventory_changes(
            event,
            "restocked",
            data.product_id,
            data.location_id,
            data.sku,
            data.new_quantity,
            data.quantity_added,
            restock_events=1,
        ),
        StockAlerts(event.tenant_id, data.product_id, data.location_id, event.timestamp),
    ]


@handles("inventory.adjusted")
def inventory_adjusted(event: Event, ctx: Context) -> list[Change]:
    data: ev.InventoryAdjusted = event.data
    delta = None
    if data.new_quantity is not None and data.previous_quantity is not None:
        delta = data.new_quantity - data.previous_quantity
    return inventory_changes(
        event,
        "adjusted",
        data.product_id,
        data.location_id,
        data.sku,
        data.new_quantity,
        delta,
        data.adjustment_reason,
        adjustment_events=1,
    )


missing = set(ev.REGISTRY) - set(HANDLERS)
if missing:  # pragma: no cover - caught at import by every test run
    raise DuplicateRegistration(f"event types without a handler: {sorted(missing)}")


def changes_for(event: Event, ctx: Context) -> list[Change]:
    """Everything one event changes: the common counts plus its type's handler, if known."""
    changes = common_changes(event)
    handler = HANDLERS.get(event.event_type)
    if handler is not None:
        changes.extend(handler(event, ctx))
    return changes
