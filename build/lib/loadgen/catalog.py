"""The simulator's reference data: names, places, prices, currencies and the traffic curve.

Everything is a constant (or a pure function of one), so that the simulated world is the
same on every run; time is kept in integer microseconds since the epoch.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from loadgen.seeds import DEFAULT_USER_AGENT

SECOND = 1_000_000  # the simulator keeps time in integer microseconds since the epoch
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

TENANT_SLUGS = (
    "acme-corp",
    "globex",
    "initech",
    "umbrella-retail",
    "stark-goods",
    "wayne-outfitters",
    "hooli-store",
    "vandelay-imports",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")
FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Lucas", "Mia", "Mateo",
    "Amelia", "Leo", "Isabella", "Hugo", "Chloe", "Yuki", "Priya", "Omar", "Ingrid", "Jonas",
    "Camille", "Diego", "Fatima", "Wei", "Anna", "Kofi", "Sara", "Marco", "Lena", "Ravi",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Müller", "Rossi", "Dubois", "Kowalski", "Nguyen", "Kim",
    "Tanaka", "Silva", "Brown", "Martin", "Jensen", "Patel", "Haddad", "Okafor", "Novak",
    "López", "Andersson", "Wilson", "Costa", "Schmidt", "Moreau",
)  # fmt: skip
TIMEZONES = (
    "America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
    "Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "Australia/Sydney",
)  # fmt: skip
# (country, city) pairs for login locations; the first ones are the most common.
CITIES = (
    ("US", "San Francisco"), ("US", "New York"), ("US", "Austin"), ("US", "Chicago"),
    ("US", "Seattle"), ("GB", "London"), ("DE", "Berlin"), ("DE", "Munich"), ("FR", "Paris"),
    ("NL", "Amsterdam"), ("ES", "Madrid"), ("CA", "Toronto"), ("AU", "Sydney"),
    ("JP", "Tokyo"), ("BR", "São Paulo"), ("IN", "Bengaluru"),
)  # fmt: skip
CITY_CUM_WEIGHTS = tuple(
    float(sum(1.0 / (rank + 2) for rank in range(upto + 1))) for upto in range(len(CITIES))
)
WEB_AGENTS = (
    DEFAULT_USER_AGENT,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
)
DEVICE_AGENTS: dict[str, tuple[str, ...]] = {
    "web": WEB_AGENTS,
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
DEVICES = ("web", "web", "web", "ios", "ios", "android")
INVENTORY_AGENT = "inventory-service/2.4.1 (rust; reqwest 0.11)"
REGISTRATION_METHODS = ("email",) * 12 + ("google",) * 5 + ("apple",) * 2 + ("facebook",)
REFERRAL_SOURCES = (
    ("organic",) * 8 + ("google_ads",) * 4 + ("social",) * 3 + ("referral",) * 3
    + ("newsletter",) * 2 + ("partner",)
)  # fmt: skip
PAYMENT_METHODS = ("credit_card",) * 6 + ("debit_card",) * 2 + ("apple_pay", "google_pay")
GATEWAYS = ("stripe",) * 8 + ("adyen", "braintree")
CARD_BRANDS = ("visa",) * 5 + ("mastercard",) * 3 + ("amex", "discover")
# failure_reason -> error_code, as a card gateway reports them
FAILURES = (
    ("insufficient_funds", "card_declined"),
    ("insufficient_funds", "card_declined"),
    ("card_declined", "do_not_honor"),
    ("card_declined", "generic_decline"),
    ("expired_card", "expired_card"),
    ("incorrect_cvc", "incorrect_cvc"),
    ("fraud_suspected", "fraudulent"),
    ("processing_error", "gateway_timeout"),
)
CARRIERS = ("UPS",) * 4 + ("FedEx",) * 3 + ("USPS",) * 2 + ("DHL",)
SUPPLIERS = (
    "Northwind Traders",
    "Contoso Supply Co.",
    "Fabrikam Wholesale",
    "Tailspin Distribution",
    "Wide World Importers",
    "Adventure Works Supply",
)
ADJUSTMENTS = (  # (adjustment_type, adjustment_reason, smallest delta, largest delta)
    ("manual", "damaged_goods", -3, -1),
    ("manual", "damaged_goods", -2, -1),
    ("manual", "correction", -2, 2),
    ("cycle_count", "count_discrepancy", -4, 3),
    ("cycle_count", "count_discrepancy", -2, 2),
    ("shrinkage", "theft", -2, -1),
    ("return", "customer_return", 1, 2),
    ("manual", "expired", -5, -1),
)
REFUND_REASONS = ("customer_request", "damaged_item", "not_as_described", "wrong_item", "late")
ADJECTIVES = (
    "Classic", "Organic", "Premium", "Eco", "Vintage", "Compact", "Deluxe", "Everyday",
    "Ultra", "Smart", "Nordic", "Studio",
)  # fmt: skip
NOUNS = (  # (noun, base price in US cents)
    ("Cotton T-Shirt", 1999), ("Coffee Beans 1kg", 2450), ("Water Bottle", 1495),
    ("Wireless Mouse", 2999), ("Yoga Mat", 3999), ("Desk Lamp", 4499), ("Backpack", 6999),
    ("Running Shoes", 8999), ("Headphones", 12999), ("Notebook", 699), ("Ceramic Mug", 1250),
    ("Scented Candle", 1800), ("Hoodie", 4999), ("Phone Case", 1599), ("Sunglasses", 7999),
    ("Chef Knife", 5999), ("Throw Blanket", 3499), ("Green Tea 100g", 899),
    ("Bluetooth Speaker", 5499), ("Wall Clock", 2799),
)  # fmt: skip
# currency -> (price factor against USD, tax rates in basis points, shipping fees in cents)
CURRENCY_RULES: dict[str, tuple[float, tuple[int, ...], tuple[int, ...]]] = {
    "USD": (1.0, (0, 600, 725, 800, 875), (499, 599, 999)),
    "EUR": (0.92, (1900, 2000, 2100), (399, 490, 790)),
    "GBP": (0.79, (2000,), (399, 495)),
    "CAD": (1.36, (500, 1300), (799, 999)),
    "AUD": (1.52, (1000,), (895, 1095)),
    "JPY": (148.0, (1000,), (50000, 80000)),
}
OTHER_CURRENCY = (1.0, (1000,), (500, 900))
# Relative traffic per UTC hour: quiet nights, a broad afternoon/evening peak.
HOURLY_INTENSITY = tuple(
    0.3 + 0.7 * math.exp(-(((hour - 16 + 12) % 24 - 12) ** 2) / 18.0) for hour in range(24)
)
# Cumulative intensity at the start of each UTC hour (in intensity-hours; index 24 = a day).
INTENSITY_BEFORE = tuple(sum(HOURLY_INTENSITY[:hour]) for hour in range(25))
# Median API response time in ms by event type (metadata.response_time_ms).
LATENCY_MS = {
    "user.registered": 220.0,
    "user.logged_in": 120.0,
    "order.created": 180.0,
    "payment.processed": 450.0,
    "payment.failed": 380.0,
    "payment.refunded": 420.0,
}
UNITS_PER_EVENT = 0.35  # units sold per event of the whole stream, for stock sizing
LATE_DELIVERY = 0.01  # share of events delivered a few positions late (out of order)


def busy_time(micros: int) -> float:
    """Traffic-weighted hours since the epoch: the integral of the hourly intensity."""
    days, within = divmod(micros, DAY)
    hour, into_hour = divmod(within, HOUR)
    return (
        days * INTENSITY_BEFORE[24]
        + INTENSITY_BEFORE[hour]
        + HOURLY_INTENSITY[hour] * into_hour / HOUR
    )


def from_busy_time(busy: float) -> int:
    """The inverse of ``busy_time`` (to the microsecond)."""
    days, within = divmod(busy, INTENSITY_BEFORE[24])
    hour = min(23, bisect_right(INTENSITY_BEFORE, within) - 1)
    into_hour = (within - INTENSITY_BEFORE[hour]) / HOURLY_INTENSITY[hour]
    return int(days) * DAY + hour * HOUR + int(into_hour * HOUR)
