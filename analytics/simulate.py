"""Synthetic events: the contract's seed examples, channel names, envelopes and a stream simulator.

Everything here is pure and deterministic (stdlib only, no I/O): the same arguments give
the same events, byte for byte, on every run. The one exception is ``Simulator``'s default
``start``, which is "today 00:00 UTC minus ``days``"; pass ``start`` for a fixed stream.

- ``EVENT_TYPES`` and ``SEED_EXAMPLES``: the 15 event types of the seed contract and the
  ``data`` object the contract shows for each.
- ``channel_for``: the Redis channel a Rust service publishes an event type on.
- ``envelope``: one envelope exactly as the Rust services send it.
- ``seed_examples``: one envelope per event type carrying the seed's data.
- ``Simulator``: a realistic mixed stream of all 15 types with coherent state (users
  register before they act, payments match their orders, refunds never exceed their
  payment, stock levels follow sales), used by ``analytics simulate``, tests and benchmarks.

Amounts are JSON numbers (floats with at most two decimals), computed in integer cents.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import json
import math
import random
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics.events import REGISTRY

__all__ = [
    "EVENT_TYPES",
    "SEED_EXAMPLES",
    "Simulator",
    "channel_for",
    "envelope",
    "seed_examples",
]

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
_SEED_ACTORS: dict[str, str | None] = {
    **dict.fromkeys(EVENT_TYPES, "uuid"),
    "inventory.low_stock": None,
    "inventory.out_of_stock": None,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_SEED_TIME = datetime(2024, 1, 1, tzinfo=UTC)
_DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


# ------------------------------------------------------------------------ public helpers


def channel_for(event_type: str, prefix: str = "events") -> str:
    """'order.created' -> 'events:order:created' (prefix replaces 'events').

    The category is the text before the first dot, the action everything after it
    (``prefix="staging:events"`` gives ``staging:events:order:created``; an empty prefix
    gives ``order:created``). Raises ``ValueError`` for a type without both parts.
    """
    category, dot, action = event_type.partition(".")
    if not dot or not category or not action:
        raise ValueError(f"event type must look like 'category.action', got {event_type!r}")
    prefix = prefix.rstrip(":")
    return f"{prefix}:{category}:{action}" if prefix else f"{category}:{action}"


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
    stamp = _format_datetime(timestamp)
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
                "user_agent": _DEFAULT_USER_AGENT,
                "session_id": str(uuid.UUID(bytes=digest[16:32], version=4)),
                "request_id": str(uuid.UUID(bytes=digest[32:48], version=4)),
            }
    return _envelope(event_type, data, tenant_id, user_id, stamp, event_id, metadata)


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
    base = _SEED_TIME if timestamp is None else timestamp
    return [
        envelope(
            event_type,
            copy.deepcopy(SEED_EXAMPLES[event_type]),
            tenant_id=tenant_id,
            user_id=_SEED_ACTORS[event_type],
            timestamp=base + timedelta(seconds=index),
        )
        for index, event_type in enumerate(EVENT_TYPES)
    ]


def _format_datetime(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _format_micros(micros: int) -> str:
    moment = _EPOCH_NAIVE + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds") + "Z"


def _envelope(
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


# ---------------------------------------------------------------------- reference data

_SECOND = 1_000_000  # the simulator keeps time in integer microseconds since the epoch
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

_TENANT_SLUGS = (
    "acme-corp",
    "globex",
    "initech",
    "umbrella-retail",
    "stark-goods",
    "wayne-outfitters",
    "hooli-store",
    "vandelay-imports",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")
_FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Lucas", "Mia", "Mateo",
    "Amelia", "Leo", "Isabella", "Hugo", "Chloe", "Yuki", "Priya", "Omar", "Ingrid", "Jonas",
    "Camille", "Diego", "Fatima", "Wei", "Anna", "Kofi", "Sara", "Marco", "Lena", "Ravi",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Müller", "Rossi", "Dubois", "Kowalski", "Nguyen", "Kim",
    "Tanaka", "Silva", "Brown", "Martin", "Jensen", "Patel", "Haddad", "Okafor", "Novak",
    "López", "Andersson", "Wilson", "Costa", "Schmidt", "Moreau",
)  # fmt: skip
_TIMEZONES = (
    "America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
    "Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "Australia/Sydney",
)  # fmt: skip
# (country, city) pairs for login locations; the first ones are the most common.
_CITIES = (
    ("US", "San Francisco"), ("US", "New York"), ("US", "Austin"), ("US", "Chicago"),
    ("US", "Seattle"), ("GB", "London"), ("DE", "Berlin"), ("DE", "Munich"), ("FR", "Paris"),
    ("NL", "Amsterdam"), ("ES", "Madrid"), ("CA", "Toronto"), ("AU", "Sydney"),
    ("JP", "Tokyo"), ("BR", "São Paulo"), ("IN", "Bengaluru"),
)  # fmt: skip
_CITY_CUM_WEIGHTS = tuple(
    float(sum(1.0 / (rank + 2) for rank in range(upto + 1))) for upto in range(len(_CITIES))
)
_WEB_AGENTS = (
    _DEFAULT_USER_AGENT,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
)
_DEVICE_AGENTS: dict[str, tuple[str, ...]] = {
    "web": _WEB_AGENTS,
    "ios": (
        "ShopApp/3.14.0 (iPhone; iOS 17.2; Scale/3.00)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    ),
    "android": (
        "ShopApp/3.14.0 (Android 14; Pixel 8)",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
    ),
}
_DEVICES = ("web", "web", "web", "ios", "ios", "android")
_INVENTORY_AGENT = "inventory-service/2.4.1 (rust; reqwest 0.11)"
_REGISTRATION_METHODS = ("email",) * 12 + ("google",) * 5 + ("apple",) * 2 + ("facebook",)
_REFERRAL_SOURCES = (
    ("organic",) * 8 + ("google_ads",) * 4 + ("social",) * 3 + ("referral",) * 3
    + ("newsletter",) * 2 + ("partner",)
)  # fmt: skip
_PAYMENT_METHODS = ("credit_card",) * 6 + ("debit_card",) * 2 + ("apple_pay", "google_pay")
_GATEWAYS = ("stripe",) * 8 + ("adyen", "braintree")
_CARD_BRANDS = ("visa",) * 5 + ("mastercard",) * 3 + ("amex", "discover")
# failure_reason -> error_code, as a card gateway reports them
_FAILURES = (
    ("insufficient_funds", "card_declined"),
    ("insufficient_funds", "card_declined"),
    ("card_declined", "do_not_honor"),
    ("card_declined", "generic_decline"),
    ("expired_card", "expired_card"),
    ("incorrect_cvc", "incorrect_cvc"),
    ("fraud_suspected", "fraudulent"),
    ("processing_error", "gateway_timeout"),
)
_CARRIERS = ("UPS",) * 4 + ("FedEx",) * 3 + ("USPS",) * 2 + ("DHL",)
_SUPPLIERS = (
    "Northwind Traders",
    "Contoso Supply Co.",
    "Fabrikam Wholesale",
    "Tailspin Distribution",
    "Wide World Importers",
    "Adventure Works Supply",
)
_ADJUSTMENTS = (  # (adjustment_type, adjustment_reason, smallest delta, largest delta)
    ("manual", "damaged_goods", -3, -1),
    ("manual", "damaged_goods", -2, -1),
    ("manual", "correction", -2, 2),
    ("cycle_count", "count_discrepancy", -4, 3),
    ("cycle_count", "count_discrepancy", -2, 2),
    ("shrinkage", "theft", -2, -1),
    ("return", "customer_return", 1, 2),
    ("manual", "expired", -5, -1),
)
_REFUND_REASONS = ("customer_request", "damaged_item", "not_as_described", "wrong_item", "late")
_ADJECTIVES = (
    "Classic", "Organic", "Premium", "Eco", "Vintage", "Compact", "Deluxe", "Everyday",
    "Ultra", "Smart", "Nordic", "Studio",
)  # fmt: skip
_NOUNS = (  # (noun, base price in US cents)
    ("Cotton T-Shirt", 1999), ("Coffee Beans 1kg", 2450), ("Water Bottle", 1495),
    ("Wireless Mouse", 2999), ("Yoga Mat", 3999), ("Desk Lamp", 4499), ("Backpack", 6999),
    ("Running Shoes", 8999), ("Headphones", 12999), ("Notebook", 699), ("Ceramic Mug", 1250),
    ("Scented Candle", 1800), ("Hoodie", 4999), ("Phone Case", 1599), ("Sunglasses", 7999),
    ("Chef Knife", 5999), ("Throw Blanket", 3499), ("Green Tea 100g", 899),
    ("Bluetooth Speaker", 5499), ("Wall Clock", 2799),
)  # fmt: skip
# currency -> (price factor against USD, tax rates in basis points, shipping fees in cents)
_CURRENCY_RULES: dict[str, tuple[float, tuple[int, ...], tuple[int, ...]]] = {
    "USD": (1.0, (0, 600, 725, 800, 875), (499, 599, 999)),
    "EUR": (0.92, (1900, 2000, 2100), (399, 490, 790)),
    "GBP": (0.79, (2000,), (399, 495)),
    "CAD": (1.36, (500, 1300), (799, 999)),
    "AUD": (1.52, (1000,), (895, 1095)),
    "JPY": (148.0, (1000,), (50000, 80000)),
}
_OTHER_CURRENCY = (1.0, (1000,), (500, 900))
# Relative traffic per UTC hour: quiet nights, a broad afternoon/evening peak.
_HOURLY_INTENSITY = tuple(
    0.3 + 0.7 * math.exp(-(((hour - 16 + 12) % 24 - 12) ** 2) / 18.0) for hour in range(24)
)
# Cumulative intensity at the start of each UTC hour (in intensity-hours; index 24 = a day).
_INTENSITY_BEFORE = tuple(sum(_HOURLY_INTENSITY[:hour]) for hour in range(25))
# Median API response time in ms by event type (metadata.response_time_ms).
_LATENCY_MS = {
    "user.registered": 220.0,
    "user.logged_in": 120.0,
    "order.created": 180.0,
    "payment.processed": 450.0,
    "payment.failed": 380.0,
    "payment.refunded": 420.0,
}
_UNITS_PER_EVENT = 0.35  # units sold per event of the whole stream, for stock sizing
_LATE_DELIVERY = 0.01  # share of events delivered a few positions late (out of order)


def _busy_time(micros: int) -> float:
    """Traffic-weighted hours since the epoch: the integral of the hourly intensity."""
    days, within = divmod(micros, _DAY)
    hour, into_hour = divmod(within, _HOUR)
    return (
        days * _INTENSITY_BEFORE[24]
        + _INTENSITY_BEFORE[hour]
        + _HOURLY_INTENSITY[hour] * into_hour / _HOUR
    )


def _from_busy_time(busy: float) -> int:
    """The inverse of ``_busy_time`` (to the microsecond)."""
    days, within = divmod(busy, _INTENSITY_BEFORE[24])
    hour = min(23, bisect_right(_INTENSITY_BEFORE, within) - 1)
    into_hour = (within - _INTENSITY_BEFORE[hour]) / _HOURLY_INTENSITY[hour]
    return int(days) * _DAY + hour * _HOUR + int(into_hour * _HOUR)


# ----------------------------------------------------------------------- simulator state


@dataclass(slots=True, eq=False)
class _Location:
    location_id: str
    currency: str
    tax_bp: int
    shipping_fees: tuple[int, ...]
    free_shipping_cents: int


@dataclass(slots=True, eq=False)
class _Product:
    product_id: str
    variant_id: str
    sku: str
    name: str
    prices: dict[str, int]  # currency -> unit price in cents
    supplier: str


@dataclass(slots=True, eq=False)
class _Stock:
    product: _Product
    location: _Location
    inventory_id: str
    on_hand: int
    reorder_point: int
    reorder_quantity: int
    low: bool = False  # a low-stock alert is out and no restock has cleared it
    restock_pending: bool = False
    last_sold: int | None = None


@dataclass(slots=True, eq=False)
class _Session:
    session_id: str
    ip: str
    user_agent: str
    device_type: str
    started: int
    ends: int


@dataclass(slots=True, eq=False)
class _User:
    user_id: str
    first_name: str
    last_name: str
    email: str
    phone: str
    timezone: str
    home: tuple[str, str]
    ip: str
    device_type: str
    user_agent: str
    registration_method: str
    referral_source: str
    activity: float
    card_brand: str
    card_last_four: str
    store: _Location
    is_staff: bool
    registered_at: int = -1
    session: _Session | None = None


@dataclass(slots=True, eq=False)
class _Tenant:
    index: int
    tenant_id: str
    slug: str
    staff: list[_User]
    pending: list[_User]  # not registered yet, next to register last
    locations: list[_Location]
    products: list[_Product]
    product_cum_weights: list[float]
    stock: dict[tuple[int, int], _Stock]
    customer_count: int
    registered: list[_User] = field(default_factory=list)
    online: list[_User] = field(default_factory=list)  # customers who logged in (pruned lazily)
    order_seq: int = 0


@dataclass(slots=True, eq=False)
class _Order:
    order_id: str
    order_number: str
    tenant: _Tenant
    customer: _User
    currency: str
    total_cents: int
    ctx: tuple[str, str, str]
    status: str = "pending"
    payment_id: str | None = None
    paid_cents: int = 0
    refunded_cents: int = 0


class Simulator:
    """A deterministic, realistic mixed stream of the 15 contract event types.

    Each tenant (``tenant-1``, ``tenant-2``, ...) has ``users_per_tenant`` users (the first
    one to three are staff who restock, adjust stock and ship orders), ``products_per_tenant``
    products stocked at ``max(2, len(currencies))`` locations (location *i* sells in
    ``currencies[i % len(currencies)]``), and a popularity-skewed catalogue. Users register
    through the period (10% at the start), log in, browse in sessions and order; orders
    are paid (or fail and are retried or abandoned), processed, shipped, fulfilled, cancelled
    and refunded; sales draw stock down into low-stock and out-of-stock alerts and restocks.
    Traffic follows a day/night curve over ``days`` days from ``start``.
    """

    def __init__(
        self,
        tenants: int = 2,
        seed: int = 0,
        start: datetime | None = None,
        days: int = 1,
        users_per_tenant: int = 50,
        products_per_tenant: int = 20,
        currencies: tuple[str, ...] = ("USD", "EUR"),
    ) -> None:
        if tenants < 1:
            raise ValueError("tenants must be at least 1")
        if days <= 0:
            raise ValueError("days must be positive")
        if users_per_tenant < 2:
            raise ValueError("users_per_tenant must be at least 2 (one staff, one customer)")
        if products_per_tenant < 1:
            raise ValueError("products_per_tenant must be at least 1")
        if not currencies or any(len(code) != 3 or not code.isalpha() for code in currencies):
            raise ValueError("currencies must be a non-empty tuple of 3-letter codes")
        if start is None:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            start = today - timedelta(days=days)
        elif start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.tenants = tenants
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.days = days
        self.users_per_tenant = users_per_tenant
        self.products_per_tenant = products_per_tenant
        self.currencies = tuple(code.upper() for code in currencies)

    @property
    def tenant_ids(self) -> list[str]:
        """The tenant ids the stream uses: ``tenant-1`` .. ``tenant-N``."""
        return [f"tenant-{index + 1}" for index in range(self.tenants)]

    @property
    def end(self) -> datetime:
        """Every event's timestamp is before this (``start + days``)."""
        return self.start + timedelta(days=self.days)

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        """Yield `count` envelopes: a realistic mix of all 15 types with coherent state.

        Every call replays the simulation from the seed, so it always yields the same
        stream; the count sets the pace (the events fill the whole period), so a shorter
        stream is not a prefix of a longer one. Timestamps never decrease except for ~1%
        of events (never a registration) that are delivered a few positions late.
        """
        if count < 0:
            raise ValueError("count must not be negative")
        return _World(self, count).run()


class _World:
    """One run of the simulation: all mutable state, driven by one seeded RNG."""

    def __init__(self, config: Simulator, count: int) -> None:
        self.rng = rng = random.Random(config.seed)
        self.count = count
        self.start = (config.start - _EPOCH) // timedelta(microseconds=1)
        self.end = self.start + round(config.days * _DAY)
        self.produced = 0
        self.spontaneous_actions = 0
        self.out: list[dict[str, Any]] = []
        self.heap: list[tuple[int, int, Callable[..., object], tuple[Any, ...]]] = []
        self.seq = 0
        weights = [1.0 / (1.0 + 0.5 * index) for index in range(config.tenants)]
        total = sum(weights)
        self.tenant_cum_weights = [sum(weights[: i + 1]) / total for i in range(len(weights))]
        # Units sold per day per tenant (about one unit per three events), so that stock
        # levels, reorder points and restocks fit the traffic whatever the density.
        daily_units = count / config.days * _UNITS_PER_EVENT
        self.tenants = [
            self._make_tenant(index, config, daily_units * weights[index] / total)
            for index in range(config.tenants)
        ]
        self.next_spontaneous = self.start + int(rng.random() * 5 * _SECOND)

    # ------------------------------------------------------------------ building blocks

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _ip(self) -> str:
        rng = self.rng
        if rng.random() < 0.06:
            groups = ":".join(f"{rng.getrandbits(16):x}" for _ in range(3))
            return f"2001:db8:{groups}::{rng.randrange(1, 0xFFFF):x}"
        prefix = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
        return f"{prefix}.{rng.randrange(1, 255)}"

    def _make_tenant(self, index: int, config: Simulator, daily_units: float) -> _Tenant:
        rng = self.rng
        slug = _TENANT_SLUGS[index] if index < len(_TENANT_SLUGS) else f"shop-{index + 1}"
        locations = []
        for position in range(max(2, len(config.currencies))):
            currency = config.currencies[position % len(config.currencies)]
            _factor, taxes, fees = _CURRENCY_RULES.get(currency, _OTHER_CURRENCY)
            locations.append(
                _Location(
                    location_id=self.uid(),
                    currency=currency,
                    tax_bp=rng.choice(taxes),
                    shipping_fees=fees,
                    free_shipping_cents=round(
                        7500 * _CURRENCY_RULES.get(currency, _OTHER_CURRENCY)[0]
                    ),
                )
            )
        names = [(a, n) for a in _ADJECTIVES for n in _NOUNS]
        rng.shuffle(names)
        products = []
        for number in range(config.products_per_tenant):
            (adjective, (noun, base_cents)) = names[number % len(names)]
            name = f"{adjective} {noun}"
            if number >= len(names):
                name = f"{name} {number // len(names) + 1}"
            base = base_cents * rng.choice((0.8, 0.9, 1.0, 1.0, 1.1, 1.25))
            prices = {}
            for currency in config.currencies:
                factor = _CURRENCY_RULES.get(currency, _OTHER_CURRENCY)[0]
                prices[currency] = max(99, int(base * factor) // 100 * 100 + 99)
            products.append(
                _Product(
                    product_id=self.uid(),
                    variant_id=self.uid(),
                    sku=f"PROD-{number + 1:03d}",
                    name=name,
                    prices=prices,
                    supplier=rng.choice(_SUPPLIERS),
                )
            )
        popularity = [1.0 / (rank + 1) ** 0.9 for rank in range(len(products))]
        rng.shuffle(popularity)
        cum, running = [], 0.0
        for weight in popularity:
            running += weight
            cum.append(running)
        stock = {}
        for p, product in enumerate(products):
            # Expected daily demand at one location sets what a buyer would configure:
            # a reorder point covering a restock's lead time (~6 h), orders for 1-3 days.
            demand = daily_units * popularity[p] / running / len(locations)
            for li, location in enumerate(locations):
                reorder_point = max(rng.randint(4, 8), round(demand * rng.uniform(0.15, 0.4)))
                reorder_quantity = max(rng.choice((20, 25, 30, 40, 50)), demand * rng.uniform(1, 3))
                stock[(p, li)] = _Stock(
                    product=product,
                    location=location,
                    inventory_id=self.uid(),
                    on_hand=reorder_point + rng.randint(0, max(40, round(demand * 1.5))),
                    reorder_point=reorder_point,
                    reorder_quantity=int(reorder_quantity) // 5 * 5,
                )
        staff_count = min(3, max(1, config.users_per_tenant // 25))
        users = [
            self._make_user(slug, locations, is_staff=number < staff_count)
            for number in range(config.users_per_tenant)
        ]
        return _Tenant(
            index=index,
            tenant_id=f"tenant-{index + 1}",
            slug=slug,
            staff=users[:staff_count],
            pending=users[::-1],
            locations=locations,
            products=products,
            product_cum_weights=cum,
            stock=stock,
            customer_count=config.users_per_tenant - staff_count,
        )

    def _make_user(self, slug: str, locations: list[_Location], *, is_staff: bool) -> _User:
        rng = self.rng
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        local = f"{first}.{last}".lower().replace("ü", "ue").replace("é", "e").replace("ó", "o")
        if is_staff:
            email = f"{local}@{slug}.example"
            method, referral = "invite", "internal"
        else:
            email = f"{local}{rng.randrange(1, 1000)}@{rng.choice(_EMAIL_DOMAINS)}"
            method, referral = rng.choice(_REGISTRATION_METHODS), rng.choice(_REFERRAL_SOURCES)
        device = "web" if is_staff else rng.choice(_DEVICES)
        home = rng.choices(_CITIES, cum_weights=_CITY_CUM_WEIGHTS)[0]
        return _User(
            user_id=self.uid(),
            first_name=first,
            last_name=last,
            email=email,
            phone=f"+1-555-01{rng.randrange(100):02d}",
            timezone=rng.choice(_TIMEZONES),
            home=home,
            ip=f"10.20.{rng.randrange(256)}.{rng.randrange(1, 255)}" if is_staff else self._ip(),
            device_type=device,
            user_agent=rng.choice(_DEVICE_AGENTS[device]),
            registration_method=method,
            referral_source=referral,
            activity=rng.choice((0.15, 0.35, 0.6, 1.0)),
            card_brand=rng.choice(_CARD_BRANDS),
            card_last_four=f"{rng.randrange(10000):04d}",
            store=rng.choice(locations),
            is_staff=is_staff,
        )

    def later(self, when: int, action: Callable[..., object], *args: Any) -> None:
        """Schedule ``action(when, *args)``; events at or after the end never happen."""
        if when < self.end:
            self.seq += 1
            heapq.heappush(self.heap, (when, self.seq, action, args))

    def emit(
        self,
        when: int,
        tenant: _Tenant,
        event_type: str,
        user_id: str | None,
        data: dict[str, Any],
        ctx: tuple[str, str, str],
    ) -> None:
        rng = self.rng
        ip, agent, session_id = ctx
        metadata: dict[str, Any] = {
            "ip_address": ip,
            "user_agent": agent,
            "session_id": session_id,
            "request_id": self.uid(),
        }
        if rng.random() < 0.5:
            median = _LATENCY_MS.get(event_type, 45.0)
            metadata["response_time_ms"] = max(1, int(rng.lognormvariate(math.log(median), 0.6)))
        self.out.append(
            _envelope(
                event_type,
                data,
                tenant.tenant_id,
                user_id,
                _format_micros(when),
                self.uid(),
                metadata,
            )
        )

    def user_ctx(self, user: _User, now: int) -> tuple[str, str, str]:
        session = user.session
        if session is not None and session.ends > now:
            return (session.ip, session.user_agent, session.session_id)
        return (user.ip, user.user_agent, self.uid())

    def service_ctx(self, tenant: _Tenant) -> tuple[str, str, str]:
        """Who raises system alerts: the inventory service, one request at a time."""
        ip = f"10.0.{tenant.index % 256}.{self.rng.randrange(2, 30)}"
        return (ip, _INVENTORY_AGENT, self.uid())

    def staff_member(self, tenant: _Tenant) -> _User | None:
        staff = [user for user in tenant.staff if user.registered_at >= 0]
        return self.rng.choice(staff) if staff else None

    @staticmethod
    def money(cents: int) -> float:
        return cents / 100

    # ------------------------------------------------------------------------ main loop

    def run(self) -> Iterator[dict[str, Any]]:
        rng, out, heap = self.rng, self.out, self.heap
        held: list[tuple[int, dict[str, Any]]] = []  # (deliver after this many, envelope)
        delivered = 0
        while self.produced < self.count:
            if heap and heap[0][0] <= self.next_spontaneous:
                when, _seq, action, args = heapq.heappop(heap)
                action(when, *args)
            else:
                now = self.next_spontaneous
                self.spontaneous(now)
                self.spontaneous_actions += 1
                self.next_spontaneous = self.advance(now)
            for event in out:
                if self.produced >= self.count:
                    break
                self.produced += 1
                if event["event_type"] != "user.registered" and rng.random() < _LATE_DELIVERY:
                    held.append((delivered + rng.randint(2, 25), event))
                    continue
                yield event
                delivered += 1
                while held:
                    due = next((i for i, item in enumerate(held) if item[0] <= delivered), None)
                    if due is None:
                        break
                    yield held.pop(due)[1]
                    delivered += 1
            out.clear()
        for _deliver_after, event in held:
            yield event

    def advance(self, now: int) -> int:
        """The time of the next spontaneous action, paced so the stream fills the period.

        Actions are a Poisson process in "busy time" (the day/night curve integrated), with
        the rate re-estimated at each step from the events still to produce, the events each
        action has led to so far and the follow-ups already scheduled inside the period.
        """
        pending = len(self.heap)
        per_action = (self.produced + pending + 30.0) / (self.spontaneous_actions + 10.0)
        actions_left = max(1.0, (self.count - self.produced - pending) / per_action)
        busy_now = _busy_time(now)
        mean_gap = (_busy_time(self.end) - busy_now) / (actions_left + 1.0)
        following = max(now + 1, _from_busy_time(busy_now + self.rng.expovariate(1.0) * mean_gap))
        if following >= self.end:
            following = now + (self.end - now) // 2
        return following

    def spontaneous(self, now: int) -> None:
        rng = self.rng
        tenant = self.tenants[bisect_right(self.tenant_cum_weights, rng.random() * 0.999999)]
        if tenant.pending:
            progress = (now - self.start) / (self.end - self.start)
            customers = tenant.customer_count
            target = len(tenant.staff) + max(min(3, customers), customers * (0.1 + 0.9 * progress))
            if len(tenant.registered) < target:
                self.register(now, tenant)
                return
        roll = rng.random()
        if roll < 0.52:
            done = self.login(now, tenant, None)
        elif roll < 0.90:
            done = self.create_order(now, tenant)
        elif roll < 0.95:
            done = self.update_profile(now, tenant)
        else:
            done = self.adjust_stock(now, tenant)
        if not done and not self.login(now, tenant, None) and not self.create_order(now, tenant):
            self.adjust_stock(now, tenant)

    # ---------------------------------------------------------------------------- users

    def register(self, now: int, tenant: _Tenant) -> None:
        rng = self.rng
        user = tenant.pending.pop()
        user.registered_at = now
        tenant.registered.append(user)
        data = {
            "user_id": user.user_id,
            "email": user.email,
            "tenant_slug": tenant.slug,
            "registration_method": user.registration_method,
            "referral_source": user.referral_source,
        }
        self.emit(now, tenant, "user.registered", user.user_id, data, self.user_ctx(user, now))
        if rng.random() < (0.5 if user.is_staff else 0.8):
            self.later(now + rng.randint(5 * _SECOND, 3 * _MINUTE), self.login, tenant, user)

    def pick_returning_user(self, now: int, tenant: _Tenant) -> _User | None:
        """A registered user without a session, favouring active and recently joined users."""
        rng = self.rng
        registered = tenant.registered
        for _attempt in range(12):
            user = rng.choice(registered)
            session = user.session
            if session is not None and session.ends > now:
                continue
            age_days = (now - user.registered_at) / _DAY
            if rng.random() < user.activity / (1.0 + age_days / 14.0):
                return user
        return None

    def login(self, now: int, tenant: _Tenant, user: _User | None) -> bool:
        rng = self.rng
        if user is None:
            user = self.pick_returning_user(now, tenant)
            if user is None:
                # Everyone likely to log in is online already (a dense stream for the
                # number of users): someone leaves now, so sessions shorten rather than
                # the stream turning into one endless session per user.
                leaving = self.online_customer(now, tenant)
                if leaving is None or leaving.session is None:
                    return False
                if now - leaving.session.started < _MINUTE:
                    return False
                self.logout(now, tenant, leaving, leaving.session)
                return True
        elif user.session is not None and user.session.ends > now:
            return False
        if rng.random() < 0.85:
            device, agent = user.device_type, user.user_agent
        else:
            device = rng.choice(_DEVICES)
            agent = rng.choice(_DEVICE_AGENTS[device])
        ip = user.ip if rng.random() < 0.8 else self._ip()
        seconds = min(6 * 3600.0, max(20.0, rng.lognormvariate(math.log(900.0), 0.9)))
        session = _Session(self.uid(), ip, agent, device, now, now + int(seconds * _SECOND))
        user.session = session
        if user.is_staff:
            method = "sso" if rng.random() < 0.5 else "password"
        elif user.registration_method in ("google", "apple", "facebook"):
            method = user.registration_method
        else:
            method = "password" if rng.random() < 0.85 else "magic_link"
        country, city = user.home if rng.random() < 0.85 else rng.choice(_CITIES)
        data = {
            "user_id": user.user_id,
            "login_method": method,
            "device_type": device,
            "location": {"country": country, "city": city},
        }
        ctx = (ip, agent, session.session_id)
        self.emit(now, tenant, "user.logged_in", user.user_id, data, ctx)
        if not user.is_staff:
            tenant.online.append(user)
        if rng.random() < 0.82:  # the rest let the session expire without a logout
            self.later(session.ends, self.logout, tenant, user, session)
        return True

    def logout(self, now: int, tenant: _Tenant, user: _User, session: _Session) -> None:
        if user.session is not session:
            return
        user.session = None
        data = {
            "user_id": user.user_id,
            "session_duration_seconds": (now - session.started) // _SECOND,
        }
        ctx = (session.ip, session.user_agent, session.session_id)
        self.emit(now, tenant, "user.logged_out", user.user_id, data, ctx)

    def online_customer(self, now: int, tenant: _Tenant) -> _User | None:
        rng, online = self.rng, tenant.online
        for _attempt in range(8):
            if not online:
                return None
            index = rng.randrange(len(online))
            user = online[index]
            session = user.session
            if session is not None and session.ends > now:
                return user
            online[index] = online[-1]
            online.pop()
        return None

    def update_profile(self, now: int, tenant: _Tenant) -> bool:
        rng = self.rng
        user = self.online_customer(now, tenant)
        if user is None:
            return False
        fields = [
            name for name in ("first_name", "last_name", "phone", "timezone") if rng.random() < 0.45
        ] or [rng.choice(("phone", "last_name", "timezone"))]
        previous: dict[str, str] = {}
        new: dict[str, str] = {}
        for name in fields:
            previous[name] = getattr(user, name)
            if name == "first_name":
                value = rng.choice(_FIRST_NAMES)
            elif name == "last_name":
                value = rng.choice(_LAST_NAMES)
            elif name == "phone":
                value = f"+1-555-01{rng.randrange(100):02d}"
            else:
                value = rng.choice(_TIMEZONES)
            setattr(user, name, value)
            new[name] = value
        data = {
            "user_id": user.user_id,
            "fields_updated": fields,
            "previous_values": previous,
            "new_values": new,
        }
        self.emit(now, tenant, "user.profile_updated", user.user_id, data, self.user_ctx(user, now))
        return True

    # --------------------------------------------------------------------------- orders

    def create_order(self, now: int, tenant: _Tenant) -> bool:
        rng = self.rng
        customer = self.online_customer(now, tenant)
        if customer is None:
            return False
        location_index = (
            tenant.locations.index(customer.store)
            if rng.random() < 0.8
            else rng.randrange(len(tenant.locations))
        )
        location = tenant.locations[location_index]
        currency = location.currency
        lines = rng.choices((1, 2, 3, 4), weights=(45, 30, 15, 10))[0]
        picked = rng.choices(
            range(len(tenant.products)), cum_weights=tenant.product_cum_weights, k=lines
        )
        items: list[dict[str, Any]] = []
        sold: list[tuple[_Stock, int]] = []
        subtotal = 0
        for product_index in dict.fromkeys(picked):  # distinct, in pick order
            stock = tenant.stock[(product_index, location_index)]
            if stock.on_hand <= 0:
                continue
            quantity = min(
                stock.on_hand, rng.choices((1, 2, 3, 4, 5), weights=(60, 24, 9, 4, 3))[0]
            )
            product = stock.product
            unit = product.prices[currency]
            line_total = unit * quantity
            subtotal += line_total
            items.append(
                {
                    "product_id": product.product_id,
                    "sku": product.sku,
                    "name": product.name,
                    "quantity": quantity,
                    "unit_price": self.money(unit),
                    "total_price": self.money(line_total),
                }
            )
            sold.append((stock, quantity))
        if not items:
            return False
        tax = (subtotal * location.tax_bp + 5000) // 10000
        shipping = (
            0 if subtotal >= location.free_shipping_cents else rng.choice(location.shipping_fees)
        )
        total = subtotal + tax + shipping
        tenant.order_seq += 1
        year = (_EPOCH_NAIVE + timedelta(microseconds=now)).year
        ctx = self.user_ctx(customer, now)
        order = _Order(
            order_id=self.uid(),
            order_number=f"ORD-{year}-{tenant.order_seq:05d}",
            tenant=tenant,
            customer=customer,
            currency=currency,
            total_cents=total,
            ctx=ctx,
        )
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "customer_id": customer.user_id,
            "location_id": location.location_id,
            "items_count": len(items),
            "subtotal": self.money(subtotal),
            "tax_amount": self.money(tax),
            "shipping_amount": self.money(shipping),
            "total_amount": self.money(total),
            "currency": currency,
            "items": items,
        }
        self.emit(now, tenant, "order.created", customer.user_id, data, ctx)
        for stock, quantity in sold:
            self.sell(now, tenant, stock, quantity)
        roll = rng.random()
        first_try = now + rng.randint(3 * _SECOND, 40 * _SECOND)
        if roll < 0.86:
            self.later(first_try, self.payment_processed, order)
        elif roll < 0.95:
            self.later(first_try, self.payment_failed, order, 1)
        elif rng.random() < 0.5:  # abandoned at checkout; some are cancelled later
            reason = rng.choice(("customer_request", "payment_timeout"))
            self.later(now + rng.randint(_HOUR, 12 * _HOUR), self.cancel, order, reason)
        return True

    def payment_processed(self, now: int, order: _Order) -> None:
        rng = self.rng
        if order.status == "cancelled" or order.payment_id is not None:
            return
        customer = order.customer
        gateway = rng.choice(_GATEWAYS)
        order.payment_id = self.uid()
        order.paid_cents = order.total_cents
        if gateway == "stripe":
            transaction = f"ch_{rng.getrandbits(96):024x}"
        elif gateway == "adyen":
            transaction = f"{rng.randrange(10**15, 10**16)}"
        else:
            transaction = f"{rng.getrandbits(32):08x}"
        data = {
            "payment_id": order.payment_id,
            "order_id": order.order_id,
            "amount": self.money(order.total_cents),
            "currency": order.currency,
            "payment_method": rng.choice(_PAYMENT_METHODS),
            "gateway": gateway,
            "transaction_id": transaction,
            "card_last_four": customer.card_last_four,
            "card_brand": customer.card_brand,
        }
        self.emit(now, order.tenant, "payment.processed", customer.user_id, data, order.ctx)
        self.later(
            now + rng.randint(2 * _MINUTE, 45 * _MINUTE), self.set_status, order, "processing"
        )
        if rng.random() < 0.05:
            reason = rng.choice(("customer_request",) * 6 + ("out_of_stock", "duplicate_order"))
            self.later(now + rng.randint(5 * _MINUTE, 8 * _HOUR), self.cancel, order, reason)

    def payment_failed(self, now: int, order: _Order, retry_count: int) -> None:
        rng = self.rng
        if order.status == "cancelled" or order.payment_id is not None:
            return
        reason, code = rng.choice(_FAILURES)
        data = {
            "payment_id": self.uid(),
            "order_id": order.order_id,
            "amount": self.money(order.total_cents),
            "currency": order.currency,
            "failure_reason": reason,
            "error_code": code,
            "retry_count": retry_count,
        }
        self.emit(now, order.tenant, "payment.failed", order.customer.user_id, data, order.ctx)
        roll = rng.random()
        retry_at = now + rng.randint(30 * _SECOND, 15 * _MINUTE)
        if reason == "fraud_suspected" or roll < 0.3:
            self.later(
                now + rng.randint(30 * _MINUTE, 6 * _HOUR), self.cancel, order, "payment_failed"
            )
        elif roll < (0.85 if retry_count == 1 else 0.6):
            self.later(retry_at, self.payment_processed, order)
        elif retry_count < 3:
            self.later(retry_at, self.payment_failed, order, retry_count + 1)

    def set_status(self, now: int, order: _Order, status: str) -> None:
        rng = self.rng
        previous = {"processing": "pending", "shipped": "processing"}[status]
        if order.status != previous:
            return
        staff = self.staff_member(order.tenant)
        if staff is None:
            return
        order.status = status
        updated = rng.choice(
            (["status"], ["status"], ["status", "notes"], ["status", "shipping_address"])
        )
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "status": status,
            "previous_status": previous,
            "updated_fields": updated,
        }
        self.emit(
            now, order.tenant, "order.updated", staff.user_id, data, self.user_ctx(staff, now)
        )
        if status == "processing":
            self.later(now + rng.randint(_HOUR, 16 * _HOUR), self.set_status, order, "shipped")
        else:
            self.later(now + rng.randint(_MINUTE, 30 * _MINUTE), self.fulfil, order)

    def fulfil(self, now: int, order: _Order) -> None:
        rng = self.rng
        if order.status != "shipped":
            return
        staff = self.staff_member(order.tenant)
        if staff is None:
            return
        order.status = "fulfilled"
        roll = rng.random()
        if roll < 0.85:
            method, carrier = "shipping", rng.choice(_CARRIERS)
        elif roll < 0.95:
            method, carrier = "express", rng.choice(("UPS", "FedEx", "DHL"))
        else:
            method, carrier = "local_delivery", "Local Courier"
        if carrier == "UPS":
            tracking = f"1Z{rng.getrandbits(64):016X}"
        elif carrier == "USPS":
            tracking = f"9400{rng.randrange(10**17, 10**18)}"
        elif carrier == "Local Courier":
            tracking = f"LC{rng.randrange(10**9, 10**10)}"
        else:
            tracking = f"{rng.randrange(10**11, 10**12)}"
        transit_days = {"shipping": (2, 6), "express": (1, 2), "local_delivery": (0, 1)}[method]
        delivery = _EPOCH_NAIVE + timedelta(microseconds=now, days=rng.randint(*transit_days))
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "fulfillment_method": method,
            "tracking_number": tracking,
            "carrier": carrier,
            "estimated_delivery": delivery.date().isoformat(),
        }
        self.emit(
            now, order.tenant, "order.fulfilled", staff.user_id, data, self.user_ctx(staff, now)
        )
        if rng.random() < 0.07:
            self.later(now + rng.randint(2 * _HOUR, 3 * _DAY), self.refund_after_delivery, order)

    def cancel(self, now: int, order: _Order, reason: str) -> None:
        rng = self.rng
        if order.status not in ("pending", "processing"):
            return
        tenant = order.tenant
        by_customer = reason in ("customer_request", "duplicate_order")
        actor = order.customer if by_customer else self.staff_member(tenant)
        if actor is None:
            return
        order.status = "cancelled"
        refund = order.paid_cents - order.refunded_cents
        data = {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "cancellation_reason": reason,
            "cancelled_by": actor.user_id,
            "refund_amount": self.money(refund),
        }
        self.emit(now, tenant, "order.cancelled", actor.user_id, data, self.user_ctx(actor, now))
        if refund > 0:
            when = now + rng.randint(_MINUTE, 30 * _MINUTE)
            self.later(when, self.refund, order, refund, "order_cancelled", actor)

    def refund_after_delivery(self, now: int, order: _Order) -> None:
        rng = self.rng
        staff = self.staff_member(order.tenant)
        if staff is None:
            return
        remaining = order.paid_cents - order.refunded_cents
        if rng.random() < 0.55:
            amount = max(1, min(remaining, round(order.paid_cents * rng.uniform(0.1, 0.8))))
        else:
            amount = remaining
        self.refund(now, order, amount, rng.choice(_REFUND_REASONS), staff)

    def refund(self, now: int, order: _Order, cents: int, reason: str, actor: _User) -> None:
        remaining = order.paid_cents - order.refunded_cents
        cents = min(cents, remaining)
        if order.payment_id is None or cents <= 0:
            return
        order.refunded_cents += cents
        data = {
            "payment_id": order.payment_id,
            "order_id": order.order_id,
            "refund_amount": self.money(cents),
            "refund_reason": reason,
            "refund_type": "full" if cents == order.paid_cents else "partial",
            "refund_transaction_id": f"re_{self.rng.getrandbits(96):024x}",
        }
        self.emit(
            now, order.tenant, "payment.refunded", actor.user_id, data, self.user_ctx(actor, now)
        )

    # ------------------------------------------------------------------------ inventory

    def sell(self, now: int, tenant: _Tenant, stock: _Stock, quantity: int) -> None:
        stock.on_hand -= quantity
        stock.last_sold = now
        self.check_levels(now, tenant, stock)

    def check_levels(self, now: int, tenant: _Tenant, stock: _Stock) -> None:
        """Raise the alerts a level change calls for, a moment later, and order a restock."""
        rng = self.rng
        if stock.on_hand < stock.reorder_point and not stock.low:
            stock.low = True
            self.later(now + rng.randint(50_000, 2 * _SECOND), self.low_stock, tenant, stock)
            if not stock.restock_pending:
                stock.restock_pending = True
                lead = min(48 * 3600.0, max(1800.0, rng.lognormvariate(math.log(6 * 3600.0), 0.7)))
                self.later(now + int(lead * _SECOND), self.restock, tenant, stock)
        if stock.on_hand == 0:
            self.later(now + rng.randint(50_000, 2 * _SECOND), self.out_of_stock, tenant, stock)

    def low_stock(self, now: int, tenant: _Tenant, stock: _Stock) -> None:
        if stock.on_hand >= stock.reorder_point:  # an adjustment lifted it in the meantime
            stock.low = False
            return
        product = stock.product
        data = {
            "product_id": product.product_id,
            "variant_id": product.variant_id,
            "sku": product.sku,
            "location_id": stock.location.location_id,
            "current_quantity": stock.on_hand,
            "reorder_point": stock.reorder_point,
            "reorder_quantity": stock.reorder_quantity,
        }
        self.emit(now, tenant, "inventory.low_stock", None, data, self.service_ctx(tenant))

    def out_of_stock(self, now: int, tenant: _Tenant, stock: _Stock) -> None:
        if stock.on_hand != 0 or stock.last_sold is None:
            return
        # The buyer reacts to a stock-out: reorder earlier and more next time.
        stock.reorder_point = min(500, stock.reorder_point + max(2, stock.reorder_point // 2))
        stock.reorder_quantity = min(5000, stock.reorder_quantity * 2)
        product = stock.product
        data = {
            "product_id": product.product_id,
            "variant_id": product.variant_id,
            "sku": product.sku,
            "location_id": stock.location.location_id,
            "last_sold_at": _format_micros(stock.last_sold),
        }
        self.emit(now, tenant, "inventory.out_of_stock", None, data, self.service_ctx(tenant))

    def restock(self, now: int, tenant: _Tenant, stock: _Stock) -> None:
        staff = self.staff_member(tenant)
        stock.restock_pending = False
        if staff is None:
            return
        added = stock.reorder_quantity
        if self.rng.random() < 0.3:  # partial or generous deliveries happen
            added = max(1, round(added * self.rng.choice((0.5, 0.8, 1.2, 1.5))))
        stock.on_hand += added
        stock.low = False  # check_levels below raises a fresh alert if it is still low
        product = stock.product
        data = {
            "product_id": product.product_id,
            "variant_id": product.variant_id,
            "sku": product.sku,
            "location_id": stock.location.location_id,
            "quantity_added": added,
            "new_quantity": stock.on_hand,
            "restocked_by": staff.user_id,
            "supplier": product.supplier,
        }
        self.emit(
            now, tenant, "inventory.restocked", staff.user_id, data, self.user_ctx(staff, now)
        )
        self.check_levels(now, tenant, stock)

    def adjust_stock(self, now: int, tenant: _Tenant) -> bool:
        rng = self.rng
        staff = self.staff_member(tenant)
        if staff is None:
            return False
        for _attempt in range(3):  # counts happen on shelves with goods on them, mostly
            product_index = rng.randrange(len(tenant.products))
            location_index = rng.randrange(len(tenant.locations))
            stock = tenant.stock[(product_index, location_index)]
            if stock.on_hand > 0:
                break
        kind, reason, low, high = rng.choice(_ADJUSTMENTS)
        if stock.on_hand == 0:
            kind, reason, low, high = "return", "customer_return", 1, 2
        delta = rng.randint(low, high) or 1
        previous = stock.on_hand
        stock.on_hand = max(1, previous + delta) if previous > 0 else previous + max(1, delta)
        if stock.on_hand == previous:
            stock.on_hand += 1
        if stock.on_hand >= stock.reorder_point:
            stock.low = False
        data = {
            "inventory_id": stock.inventory_id,
            "product_id": stock.product.product_id,
            "location_id": stock.location.location_id,
            "adjustment_type": kind,
            "previous_quantity": previous,
            "new_quantity": stock.on_hand,
            "adjustment_reason": reason,
            "adjusted_by": staff.user_id,
        }
        self.emit(now, tenant, "inventory.adjusted", staff.user_id, data, self.user_ctx(staff, now))
        self.check_levels(now, tenant, stock)
        return True
