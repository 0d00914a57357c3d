"""The contract's seed examples and envelopes exactly as the Rust services send them.

- ``EVENT_TYPES`` and ``SEED_EXAMPLES``: the 15 event types of the seed contract and the
  ``data`` object the contract shows for each.
- ``envelope``: one envelope exactly as the Rust services send it.
- ``seed_examples``: one envelope per event type carrying the seed's data.

Pure and deterministic (no I/O). Amounts are JSON numbers (floats with at most two decimals).
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics.events import REGISTRY

#: The 15 event types of the contract, in the order the seed document lists them.
EVENT_TYPES: tuple[str, ...] = tuple(REGISTRY)  # registered in that order

#: event type -> the ``data`` object exactly as the seed document shows it (the ``{ ... }``
#: placeholders of ``user.profile_updated`` filled with small realistic values). Read-only:
#: ``seed_examples`` hands out deep copies.
SEED_EXAMPLES: dict[str, dict[str, Any]] = {
    "user.registered": {
        "user_id": "uuid",
        "email": "user@example.com",
        "tenant_slug": "acme-corp",
        "registration_method": "email",
        "referral_source": "organic",
    },
    "user.logged_in": {
        "user_id": "uuid",
        "login_method": "password",
        "device_type": "web",
        "location": {"country": "US", "city": "San Francisco"},
    },
    "user.logged_out": {
        "user_id": "uuid",
        "session_duration_seconds": 3600,
    },
    "user.profile_updated": {
        "user_id": "uuid",
        "fields_updated": ["first_name", "last_name", "phone"],
        "previous_values": {"first_name": "Jane", "last_name": "Doe", "phone": "+1-555-0100"},
        "new_values": {"first_name": "Janet", "last_name": "Smith", "phone": "+1-555-0199"},
    },
    "order.created": {
        "order_id": "uuid",
        "order_number": "ORD-2024-001",
        "customer_id": "uuid",
        "location_id": "uuid",
        "items_count": 3,
        "subtotal": 149.99,
        "tax_amount": 15.00,
        "shipping_amount": 10.00,
        "total_amount": 174.99,
        "currency": "USD",
        "items": [
            {
                "product_id": "uuid",
                "sku": "PROD-001",
                "name": "Product Name",
                "quantity": 2,
                "unit_price": 49.99,
                "total_price": 99.98,
            }
        ],
    },
    "order.updated": {
        "order_id": "uuid",
        "order_number": "ORD-2024-001",
        "status": "processing",
        "previous_status": "pending",
        "updated_fields": ["status", "notes"],
    },
    "order.cancelled": {
        "order_id": "uuid",
        "order_number": "ORD-2024-001",
        "cancellation_reason": "customer_request",
        "cancelled_by": "uuid",
        "refund_amount": 174.99,
    },
    "order.fulfilled": {
        "order_id": "uuid",
        "order_number": "ORD-2024-001",
        "fulfillment_method": "shipping",
        "tracking_number": "1Z999AA10123456784",
        "carrier": "UPS",
        "estimated_delivery": "2024-01-05",
    },
    "payment.processed": {
        "payment_id": "uuid",
        "order_id": "uuid",
        "amount": 174.99,
        "currency": "USD",
        "payment_method": "credit_card",
        "gateway": "stripe",
        "transaction_id": "ch_1234567890",
        "card_last_four": "4242",
        "card_brand": "visa",
    },
    "payment.failed": {
        "payment_id": "uuid",
        "order_id": "uuid",
        "amount": 174.99,
        "currency": "USD",
        "failure_reason": "insufficient_funds",
        "error_code": "card_declined",
        "retry_count": 1,
    },
    "payment.refunded": {
        "payment_id": "uuid",
        "order_id": "uuid",
        "refund_amount": 174.99,
        "refund_reason": "customer_request",
        "refund_type": "full",
        "refund_transaction_id": "re_1234567890",
    },
    "inventory.low_stock": {
        "product_id": "uuid",
        "variant_id": "uuid",
        "sku": "PROD-001",
        "location_id": "uuid",
        "current_quantity": 5,
        "reorder_point": 10,
        "reorder_quantity": 50,
    },
    "inventory.out_of_stock": {
        "product_id": "uuid",
        "variant_id": "uuid",
        "sku": "PROD-001",
        "location_id": "uuid",
        "last_sold_at": "2024-01-01T00:00:00Z",
    },
    "inventory.restocked": {
        "product_id": "uuid",
        "variant_id": "uuid",
        "sku": "PROD-001",
        "location_id": "uuid",
        "quantity_added": 100,
        "new_quantity": 105,
        "restocked_by": "uuid",
        "supplier": "Supplier Name",
    },
    "inventory.adjusted": {
        "inventory_id": "uuid",
        "product_id": "uuid",
        "location_id": "uuid",
        "adjustment_type": "manual",
        "previous_quantity": 50,
        "new_quantity": 48,
        "adjustment_reason": "damaged_goods",
        "adjusted_by": "uuid",
    },
}

# The envelope user_id of each seed example: the acting user named in its data ("uuid"
# everywhere in the seed); the two inventory alerts are raised by the system, not a user.
SEED_ACTORS: dict[str, str | None] = {
    **dict.fromkeys(EVENT_TYPES, "uuid"),
    "inventory.low_stock": None,
    "inventory.out_of_stock": None,
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)
SEED_TIME = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


def envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    tenant_id: str,
    user_id: str | None,
    timestamp: datetime,
    event_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A full envelope as the Rust services send it.

    ``timestamp`` is written as chrono does for UTC with microseconds
    (``2024-01-01T00:00:00.123456Z``); a naive datetime is taken as UTC. ``user_id=None``
    is sent as JSON ``null``. A missing ``event_id`` (and the ``session_id`` and
    ``request_id`` of a missing ``metadata``) is derived from the other fields, so the
    same call always gives the same envelope; ids are UUID-4-shaped strings.
    """
    stamp = format_datetime(timestamp)
    if event_id is None or metadata is None:
        canonical = json.dumps(
            [event_type, tenant_id, user_id, stamp, data],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        digest = hashlib.sha512(canonical.encode()).digest()
        if event_id is None:
            event_id = str(uuid.UUID(bytes=digest[:16], version=4))
        if metadata is None:
            metadata = {
                "ip_address": "192.168.1.1",
                "user_agent": DEFAULT_USER_AGENT,
                "session_id": str(uuid.UUID(bytes=digest[16:32], version=4)),
                "request_id": str(uuid.UUID(bytes=digest[32:48], version=4)),
            }
    return make_envelope(event_type, data, tenant_id, user_id, stamp, event_id, metadata)


def seed_examples(
    tenant_id: str = "test-tenant", timestamp: datetime | None = None
) -> list[dict[str, Any]]:
    """One full envelope per event type: data = SEED_EXAMPLES[type], coherent ids.

    The event_ids are fresh (distinct) and deterministic. Envelopes come in
    ``EVENT_TYPES`` order, one second apart from ``timestamp`` (default
    2024-01-01T00:00:00Z, the seed's own date). The envelope ``user_id`` is the acting user
    the data names (``"uuid"``, as in the seed; ``None`` for the system-raised low-stock and
    out-of-stock alerts). Each ``data`` is a deep copy, so callers may mutate it.
    """
    base = SEED_TIME if timestamp is None else timestamp
    return [
        envelope(
            event_type,
            copy.deepcopy(SEED_EXAMPLES[event_type]),
            tenant_id=tenant_id,
            user_id=SEED_ACTORS[event_type],
            timestamp=base + timedelta(seconds=index),
        )
        for index, event_type in enumerate(EVENT_TYPES)
    ]


def format_datetime(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def format_micros(micros: int) -> str:
    moment = EPOCH_NAIVE + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds") + "Z"


def make_envelope(
    event_type: str,
    data: dict[str, Any],
    tenant_id: str,
    user_id: str | None,
    stamp: str,
    event_id: str,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "tenant_id": tenant_id,
        "user_id": user_id,
        "timestamp": stamp,
        "data": data,
        "metadata": metadata,
    }
