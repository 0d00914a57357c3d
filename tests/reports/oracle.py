"""Independent oracle for every report of docs/reports.md, computed from the raw envelopes.

This module deliberately imports nothing from ``analytics``: it re-derives each report row
straight from the list of published envelopes, in plain Python, so that it can check the
project's implementation (``analytics report NAME --format json``) without sharing any code
or any reading of the rules with it.

``expected(report, events, tenant=..., ...)`` returns the list of row dicts, with the row
keys of docs/reports.md in the documented order, exactly as the JSON output must hold them:
dates ``"YYYY-MM-DD"``, money/seconds/hours/ms as floats rounded to 2 decimals (half up),
rates and ratios as floats rounded to 4 decimals (half up), counts as ints, ``None`` for
null. All sums and divisions are done in ``decimal.Decimal`` (an amount ``174.99`` is read
as ``Decimal("174.99")``) and only the rounded result becomes a float.

Common rules applied to every report
------------------------------------
* Stored events: the envelopes of ``tenant`` after dropping every repeat of a
  ``(tenant_id, event_id)`` pair (the first in list order wins). Every input envelope must
  carry ``event_id``, ``event_type``, ``tenant_id`` and ``timestamp`` (the datasets this
  oracle is used with have them all; envelopes without them are rejected with ValueError).
  Unknown event types are stored events (they count in activity and operations only).
* Event time: the envelope ``timestamp`` converted to UTC (any number of fraction digits,
  ``Z`` or an offset; more than 6 fraction digits are truncated to microseconds; a
  timestamp without an offset is taken as UTC). Day = UTC date, hour = UTC hour.
* ``since``/``until`` are inclusive dates filtering on the day the row is keyed by.
* Ties in event time are broken by position in the (deduplicated) input list wherever an
  order of events matters ("latest", "first", walking in time order).
* Currency of an order: ``data.currency`` upper-cased; missing, null or ``""`` means
  ``default_currency``.
* Active user: envelope ``user_id`` when it is a non-empty string (``None``/missing/``""``
  means no active user). Login users: envelope ``user_id``, else ``data.user_id``.
* Numbers that are JSON booleans are not numbers (treated as missing).

Choices made where docs/reports.md can be read more than one way (each is repeated next to
its report below):

1. revenue-by-day / top-products: every stored ``order.created`` *event* counts (``orders``
   is "how many such events"), even if two events share an ``order_id``. When an
   ``order_id`` has several ``order.created`` events the order's currency for refunds is the
   one of its earliest (event time) ``order.created``. A payment found by ``payment_id``
   gives its ``data.currency`` (upper-cased, ``USD`` when it has none); when several
   payments share the id, the earliest one (event time) is used.
2. top-products: ``name`` is taken from the latest in-range sale carrying one (the report is
   "over the items of order.created events in range"); ``None`` if no in-range sale has one.
   An item without ``total_price`` and without ``unit_price`` contributes revenue 0.
3. retention: the week ``N`` windows are full weeks ``[cw + 7N, cw + 7N + 7)`` even when
   ``--until`` falls inside the last one (no capping at ``--until``); activity before the
   registration inside week 0 counts (the window is literal).
4. conversion: a ``payment.processed`` *before* the order's creation also counts as "at or
   before created + 24 h"; "once those 24 hours have passed" means ``now >= created + 24h``.
5. inventory: rows are sorted by ``sku`` with ``None`` last (PostgreSQL's ``ASC`` default),
   then ``product_id``, ``location_id``; "at or before the end of --until" means a UTC day
   ``<= until``. ``turnover`` is a ratio (4 decimals); ``0.0`` when nothing was sold but the
   average on-hand is positive.
6. dead-stock: ``--since`` is ignored (rows are "of inventory (any time up to --until)");
   sales and ``out_of_stock`` events after the end of ``--until`` are ignored; the cutoff is
   ``end - days`` where ``end`` is the start of the day after ``until`` (or ``now``); a row
   is dead when ``last_sold_at`` is null or strictly before the cutoff (full precision);
   ``last_sold_at`` is printed truncated to whole seconds.
7. alerts: the ``message`` key is implementation-defined text, so the oracle's rows have
   NO ``message`` key; callers must drop ``message`` from the report rows before comparing.
   Stock alerts are per ``(product_id, location_id)`` *and per alert type* (an open
   ``low_stock`` does not stop an ``out_of_stock`` alert); a ``restocked`` resolves both;
   events of a product+location are walked in event-time order with, at equal times,
   ``low_stock``/``out_of_stock`` before ``restocked`` (so "a restocked at or after it"
   resolves an alert raised at the same instant). ``created_at`` of a stock alert is the
   raising event's time. (Among raising events of the same instant the spec picks the
   smallest ``event_id``; only the ``message`` shows which, and it is not compared.) ``payment_failure_rate``: UTC hours that have payments are walked
   in order (over all time, not only the range); an hour with >= 20 processed + failed and
   ``failed / (processed + failed) >= 0.25`` raises an alert if none is open, with
   ``created_at`` = the start of that hour (``HH:00:00Z``); an hour with payments whose rate
   is below 0.25 (whatever its count) resolves it; an hour with fewer than 20 payments but a
   rate >= 0.25 changes nothing. Rows are ordered ``created_at`` desc; the spec gives no order
   among equal ``created_at``, the oracle then sorts by ``alert_type`` (compare such ties as
   a multiset).
8. logins: ``logins_per_user`` is a ratio (4 decimals), ``None`` when a day's logins carry no
   user at all.
9. operations: a day with dead letters but no stored events is a row (events 0, error_rate
   1.0, null percentiles); ``received_at`` of a dead letter is converted to UTC (naive = UTC).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["REPORTS", "expected", "parse_timestamp"]

REPORTS = (
    "revenue-by-day",
    "top-products",
    "activity-heatmap",
    "dau",
    "wau",
    "mau",
    "retention",
    "aov",
    "conversion",
    "sessions",
    "payments",
    "failure-reasons",
    "geo",
    "inventory",
    "dead-stock",
    "alerts",
    "logins",
    "operations",
)

PAYMENT_ALERT_MIN_PAYMENTS = 20
PAYMENT_ALERT_FAILURE_RATE = Decimal("0.25")

_CENT = Decimal("0.01")
_RATE = Decimal("0.0001")
_HOUR_MICROS = Decimal(3600 * 1_000_000)

_TS = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)

_INVENTORY_TYPES = (
    "inventory.low_stock",
    "inventory.out_of_stock",
    "inventory.restocked",
    "inventory.adjusted",
)


# --------------------------------------------------------------------------- helpers


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp (any fraction digits, Z or offset) as an aware UTC datetime."""
    match = _TS.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"unparseable timestamp: {value!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "")[:6].ljust(6, "0")
    moment = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=UTC)
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        moment = moment - offset if match.group(9) == "+" else moment + offset
    return moment


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _num(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal of its printed form; anything else is None."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return Decimal(str(value))


def _money(value: Decimal) -> float:
    return float(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _ratio(value: Decimal) -> float:
    return float(value.quantize(_RATE, rounding=ROUND_HALF_UP))


def _percentile(values: Iterable[Decimal], q: Decimal) -> Decimal:
    """Linear interpolation between closest ranks (numpy's default, percentile_cont)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)  # position >= 0, so int() is floor
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _mean(values: list[Decimal]) -> Decimal:
    return sum(values, Decimal(0)) / len(values)


def _iso_day(day: date) -> str:
    return day.isoformat()


def _iso_seconds(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _in_range(day: date, since: date | None, until: date | None) -> bool:
    return (since is None or day >= since) and (until is None or day <= until)


def _end_of(day: date) -> datetime:
    """The first instant after ``day`` (UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


@dataclass(frozen=True, slots=True)
class _Event:
    index: int  # position among the stored events (list order after dedupe)
    event_type: str
    user_id: str | None  # the active user (envelope user_id)
    ts: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def day(self) -> date:
        return self.ts.date()

    @property
    def order_key(self) -> tuple[datetime, int]:
        return (self.ts, self.index)


def _stored(events: Iterable[dict[str, Any]], tenant: str) -> list[_Event]:
    """The tenant's stored events: first of each (tenant_id, event_id), in list order."""
    seen: set[tuple[str, str]] = set()
    out: list[_Event] = []
    for envelope in events:
        for key in ("event_id", "event_type", "tenant_id", "timestamp"):
            if not envelope.get(key):
                raise ValueError(f"the oracle needs envelopes with {key}: {envelope!r}")
        pair = (envelope["tenant_id"], envelope["event_id"])
        if pair in seen:
            continue
        seen.add(pair)
        if envelope["tenant_id"] != tenant:
            continue
        data = envelope.get("data")
        metadata = envelope.get("metadata")
        out.append(
            _Event(
                index=len(out),
                event_type=envelope["event_type"],
                user_id=_text(envelope.get("user_id")),
                ts=parse_timestamp(envelope["timestamp"]),
                data=data if isinstance(data, dict) else {},
                metadata=metadata if isinstance(metadata, dict) else {},
            )
        )
    return out


def _of(stored: list[_Event], *types: str) -> list[_Event]:
    return [event for event in stored if event.event_type in types]


def _currency(data: dict[str, Any], default: str) -> str:
    value = data.get("currency")
    return value.upper() if isinstance(value, str) and value else default


def _login_user(event: _Event) -> str | None:
    return event.user_id or _text(event.data.get("user_id"))


def _location(data: dict[str, Any]) -> str:
    value = data.get("location_id")
    return value if isinstance(value, str) else ""


def _items(event: _Event) -> list[dict[str, Any]]:
    items = event.data.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _quantity(item: dict[str, Any]) -> int:
    quantity = item.get("quantity")
    return quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 1


@dataclass(slots=True)
class _Args:
    tenant: str
    since: date | None
    until: date | None
    limit: int
    days: int
    now: datetime
    dead_letters: list[dict[str, Any]]
    default_currency: str


# --------------------------------------------------------------------------- reports


def _revenue_by_day(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 1: each order.created event counts; order currency = earliest order.created."""
    order_currency: dict[str, str] = {}
    for event in sorted(_of(stored, "order.created"), key=lambda e: e.order_key):
        order_id = _text(event.data.get("order_id"))
        if order_id is not None and order_id not in order_currency:
            order_currency[order_id] = _currency(event.data, a.default_currency)
    payment_currency: dict[str, str] = {}
    payments = _of(stored, "payment.processed", "payment.failed")
    for event in sorted(payments, key=lambda e: e.order_key):
        payment_id = _text(event.data.get("payment_id"))
        if payment_id is not None and payment_id not in payment_currency:
            payment_currency[payment_id] = _currency(event.data, a.default_currency)

    groups: dict[tuple[date, str], dict[str, Any]] = {}

    def group(day: date, currency: str) -> dict[str, Any]:
        return groups.setdefault(
            (day, currency), {"revenue": Decimal(0), "orders": 0, "refunds": Decimal(0)}
        )

    for event in _of(stored, "order.created"):
        if not _in_range(event.day, a.since, a.until):
            continue
        row = group(event.day, _currency(event.data, a.default_currency))
        row["revenue"] += _num(event.data.get("total_amount")) or Decimal(0)
        row["orders"] += 1
    for event in _of(stored, "payment.refunded"):
        if not _in_range(event.day, a.since, a.until):
            continue
        order_id = _text(event.data.get("order_id"))
        payment_id = _text(event.data.get("payment_id"))
        if order_id is not None and order_id in order_currency:
            currency = order_currency[order_id]
        elif payment_id is not None and payment_id in payment_currency:
            currency = payment_currency[payment_id]
        else:
            currency = a.default_currency
        group(event.day, currency)["refunds"] += _num(event.data.get("refund_amount")) or 0
    keys = sorted(groups, key=lambda key: key[1])
    keys.sort(key=lambda key: key[0], reverse=True)
    return [
        {
            "date": _iso_day(day),
            "currency": currency,
            "revenue": _money(groups[day, currency]["revenue"]),
            "orders": groups[day, currency]["orders"],
            "refunds": _money(groups[day, currency]["refunds"]),
            "net_revenue": _money(
                groups[day, currency]["revenue"] - groups[day, currency]["refunds"]
            ),
        }
        for day, currency in keys
    ]


def _top_products(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 2: name from the latest in-range sale carrying one; no price at all -> 0."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    orders = sorted(_of(stored, "order.created"), key=lambda e: e.order_key)
    for event in orders:
        if not _in_range(event.day, a.since, a.until):
            continue
        currency = _currency(event.data, a.default_currency)
        for item in _items(event):
            product_id = _text(item.get("product_id"))
            if product_id is None:
                continue
            quantity = _quantity(item)
            revenue = _num(item.get("total_price"))
            if revenue is None:
                unit = _num(item.get("unit_price"))
                revenue = quantity * unit if unit is not None else Decimal(0)
            row = groups.setdefault(
                (product_id, currency), {"name": None, "units": 0, "revenue": Decimal(0)}
            )
            row["units"] += quantity
            row["revenue"] += revenue
            name = _text(item.get("name"))
            if name is not None:  # walking in time order: the last one seen is the latest
                row["name"] = name
    out: list[dict[str, Any]] = []
    for currency in sorted({key[1] for key in groups}):
        ranked = sorted(
            (key for key in groups if key[1] == currency),
            key=lambda key: (-groups[key]["revenue"], key[0]),
        )
        for product_id, _ in ranked[: a.limit]:
            row = groups[product_id, currency]
            out.append(
                {
                    "product_id": product_id,
                    "name": row["name"],
                    "currency": currency,
                    "units_sold": row["units"],
                    "revenue": _money(row["revenue"]),
                }
            )
    return out


def _activity_heatmap(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    counts: dict[int, int] = defaultdict(int)
    users: dict[int, set[str]] = defaultdict(set)
    for event in stored:
        if not _in_range(event.day, a.since, a.until):
            continue
        counts[event.ts.hour] += 1
        if event.user_id is not None:
            users[event.ts.hour].add(event.user_id)
    return [
        {"hour": hour, "active_users": len(users[hour]), "events": counts[hour]}
        for hour in sorted(counts)
    ]


def _window_users(stored: list[_Event], a: _Args, width: int) -> list[dict[str, Any]]:
    by_day: dict[date, set[str]] = defaultdict(set)
    for event in stored:
        if event.user_id is not None:
            by_day[event.day].add(event.user_id)
    if not by_day:
        return []
    first = a.since if a.since is not None else min(by_day)
    last = a.until if a.until is not None else max(by_day)
    rows = []
    day = first
    while day <= last:
        active: set[str] = set()
        for back in range(width):
            active |= by_day.get(day - timedelta(days=back), set())
        if active:
            rows.append({"date": _iso_day(day), "active_users": len(active)})
        day += timedelta(days=1)
    return rows


def _retention(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 3: full week windows, not capped at --until."""
    registered: dict[str, datetime] = {}
    for event in sorted(_of(stored, "user.registered"), key=lambda e: e.order_key):
        user = _text(event.data.get("user_id")) or event.user_id
        if user is not None and user not in registered:
            registered[user] = event.ts
    if not stored:
        return []
    last_day = a.until if a.until is not None else max(event.day for event in stored)
    active_days: dict[str, set[date]] = defaultdict(set)
    for event in stored:
        if event.user_id is not None:
            active_days[event.user_id].add(event.day)
    cohorts: dict[date, list[str]] = defaultdict(list)
    for user, moment in registered.items():
        if _in_range(moment.date(), a.since, a.until):
            cohorts[_monday(moment.date())].append(user)
    rows = []
    for week in sorted(cohorts):
        members = cohorts[week]
        weeks = (_monday(last_day) - week).days // 7
        retained = []
        for n in range(weeks + 1):
            start = week + timedelta(days=7 * n)
            window = {start + timedelta(days=offset) for offset in range(7)}
            retained.append(sum(1 for user in members if active_days[user] & window))
        rows.append({"cohort_week": _iso_day(week), "size": len(members), "retained": retained})
    return rows


def _aov(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    groups: dict[tuple[date, str], list[Decimal]] = defaultdict(list)
    for event in _of(stored, "order.created"):
        if _in_range(event.day, a.since, a.until):
            amount = _num(event.data.get("total_amount")) or Decimal(0)
            groups[event.day, _currency(event.data, a.default_currency)].append(amount)
    return [
        {
            "date": _iso_day(day),
            "currency": currency,
            "orders": len(groups[day, currency]),
            "aov": _money(_mean(groups[day, currency])),
        }
        for day, currency in sorted(groups)
    ]


def _conversion(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 4: a payment before creation counts as within 24 h; due when now >= +24 h."""
    created: dict[str, datetime] = {}
    for event in sorted(_of(stored, "order.created"), key=lambda e: e.order_key):
        order_id = _text(event.data.get("order_id"))
        if order_id is not None and order_id not in created:
            created[order_id] = event.ts
    paid_at: dict[str, list[datetime]] = defaultdict(list)
    for event in _of(stored, "payment.processed"):
        order_id = _text(event.data.get("order_id"))
        if order_id is not None:
            paid_at[order_id].append(event.ts)
    groups: dict[date, dict[str, int]] = {}
    for order_id, moment in created.items():
        if not _in_range(moment.date(), a.since, a.until):
            continue
        row = groups.setdefault(moment.date(), {"orders": 0, "paid": 0, "abandoned": 0})
        row["orders"] += 1
        payments = paid_at.get(order_id, [])
        if payments:
            row["paid"] += 1
        deadline = moment + timedelta(hours=24)
        if a.now >= deadline and not any(ts <= deadline for ts in payments):
            row["abandoned"] += 1
    return [
        {
            "date": _iso_day(day),
            "orders": groups[day]["orders"],
            "paid_orders": groups[day]["paid"],
            "conversion_rate": _ratio(Decimal(groups[day]["paid"]) / groups[day]["orders"]),
            "abandoned": groups[day]["abandoned"],
        }
        for day in sorted(groups)
    ]


def _sessions(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    groups: dict[date, list[Decimal]] = defaultdict(list)
    for event in _of(stored, "user.logged_out"):
        seconds = _num(event.data.get("session_duration_seconds"))
        if seconds is not None and _in_range(event.day, a.since, a.until):
            groups[event.day].append(seconds)
    return [
        {
            "date": _iso_day(day),
            "sessions": len(groups[day]),
            "avg_duration_seconds": _money(_mean(groups[day])),
            "p50_seconds": _money(_percentile(groups[day], Decimal("0.5"))),
            "p90_seconds": _money(_percentile(groups[day], Decimal("0.9"))),
        }
        for day in sorted(groups)
    ]


def _payments(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    names = {
        "payment.processed": "processed",
        "payment.failed": "failed",
        "payment.refunded": "refunded",
    }
    groups: dict[date, dict[str, int]] = {}
    for event in _of(stored, *names):
        if _in_range(event.day, a.since, a.until):
            row = groups.setdefault(event.day, dict.fromkeys(names.values(), 0))
            row[names[event.event_type]] += 1
    rows = []
    for day in sorted(groups):
        row = groups[day]
        attempts = row["processed"] + row["failed"]
        rate = Decimal(row["failed"]) / attempts if attempts else Decimal(0)
        rows.append({"date": _iso_day(day), **row, "failure_rate": _ratio(rate)})
    return rows


def _failure_reasons(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    counts: dict[str, int] = defaultdict(int)
    for event in _of(stored, "payment.failed"):
        if _in_range(event.day, a.since, a.until):
            counts[_text(event.data.get("failure_reason")) or "unknown"] += 1
    return [
        {"failure_reason": reason, "count": counts[reason]}
        for reason in sorted(counts, key=lambda reason: (-counts[reason], reason))
    ]


def _geo(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    logins: dict[tuple[str, str], int] = defaultdict(int)
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event in _of(stored, "user.logged_in"):
        if not _in_range(event.day, a.since, a.until):
            continue
        location = event.data.get("location")
        location = location if isinstance(location, dict) else {}
        key = (
            _text(location.get("country")) or "unknown",
            _text(location.get("city")) or "unknown",
        )
        logins[key] += 1
        user = _login_user(event)
        if user is not None:
            users[key].add(user)
    return [
        {
            "country": country,
            "city": city,
            "logins": logins[country, city],
            "users": len(users[country, city]),
        }
        for country, city in sorted(logins, key=lambda key: (-logins[key], key))
    ]


def _inventory_rows(
    stored: list[_Event], since: date | None, until: date | None
) -> list[dict[str, Any]]:
    """Choice 5: sku None sorts last; turnover is a ratio."""
    by_key: dict[tuple[str, str], list[_Event]] = defaultdict(list)
    for event in sorted(_of(stored, *_INVENTORY_TYPES), key=lambda e: e.order_key):
        product_id = _text(event.data.get("product_id"))
        if product_id is not None:
            by_key[product_id, _location(event.data)].append(event)
    sold: dict[tuple[str, str], int] = defaultdict(int)
    for event in _of(stored, "order.created"):
        if _in_range(event.day, since, until):
            for item in _items(event):
                product_id = _text(item.get("product_id"))
                if product_id is not None:
                    sold[product_id, _location(event.data)] += _quantity(item)

    def level(event: _Event) -> Decimal | None:
        if event.event_type == "inventory.out_of_stock":
            return Decimal(0)
        field = {
            "inventory.low_stock": "current_quantity",
            "inventory.restocked": "new_quantity",
            "inventory.adjusted": "new_quantity",
        }[event.event_type]
        return _num(event.data.get(field))

    rows = []
    for key, history in by_key.items():
        in_range = [event for event in history if _in_range(event.day, since, until)]
        if not in_range:
            continue
        sku = None
        for event in history:
            sku = _text(event.data.get("sku")) or sku
        on_hand = None
        for event in history:
            if until is None or event.day <= until:
                stated = level(event)
                on_hand = stated if stated is not None else on_hand
        cycles: list[Decimal] = []
        opened: datetime | None = None
        for event in history:
            if event.event_type == "inventory.out_of_stock" and opened is None:
                opened = event.ts
            elif event.event_type == "inventory.restocked" and opened is not None:
                if _in_range(event.day, since, until):
                    micros = (event.ts - opened) // timedelta(microseconds=1)
                    cycles.append(Decimal(micros) / _HOUR_MICROS)
                opened = None
        levels = [value for event in in_range if (value := level(event)) is not None]
        average = _mean(levels) if levels else None
        turnover = None
        if average is not None and average != 0:
            turnover = _ratio(Decimal(sold.get(key, 0)) / average)
        rows.append(
            {
                "product_id": key[0],
                "sku": sku,
                "location_id": key[1],
                "on_hand": int(on_hand) if on_hand is not None else None,
                "low_stock_events": sum(
                    1 for e in in_range if e.event_type == "inventory.low_stock"
                ),
                "out_of_stock_events": sum(
                    1 for e in in_range if e.event_type == "inventory.out_of_stock"
                ),
                "avg_restock_hours": _money(_mean(cycles)) if cycles else None,
                "turnover": turnover,
            }
        )
    rows.sort(key=lambda r: (r["sku"] is None, r["sku"] or "", r["product_id"], r["location_id"]))
    return rows


def _inventory(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    return _inventory_rows(stored, a.since, a.until)


def _dead_stock(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 6: --since ignored; nothing after the end of --until; strict cutoff."""
    end = _end_of(a.until) if a.until is not None else a.now
    cutoff = end - timedelta(days=a.days)
    last_sold: dict[tuple[str, str], datetime] = {}

    def saw(key: tuple[str, str], moment: datetime) -> None:
        if key not in last_sold or moment > last_sold[key]:
            last_sold[key] = moment

    for event in stored:
        if a.until is not None and event.day > a.until:
            continue
        if event.event_type == "order.created":
            for item in _items(event):
                product_id = _text(item.get("product_id"))
                if product_id is not None:
                    saw((product_id, _location(event.data)), event.ts)
        elif event.event_type == "inventory.out_of_stock":
            product_id = _text(event.data.get("product_id"))
            stamp = event.data.get("last_sold_at")
            if product_id is not None and isinstance(stamp, str) and stamp:
                saw((product_id, _location(event.data)), parse_timestamp(stamp))
    rows = []
    for row in _inventory_rows(stored, None, a.until):
        if row["on_hand"] is None or row["on_hand"] <= 0:
            continue
        moment = last_sold.get((row["product_id"], row["location_id"]))
        if moment is not None and moment >= cutoff:
            continue
        rows.append(
            {
                "product_id": row["product_id"],
                "sku": row["sku"],
                "location_id": row["location_id"],
                "on_hand": row["on_hand"],
                "last_sold_at": _iso_seconds(moment) if moment is not None else None,
            }
        )
    return rows


def _alerts(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 7: rows WITHOUT ``message``; stock alerts per type; payment alerts per hour.

    The report's ``message`` is implementation-defined text: drop it from the report's rows
    before comparing them with these.
    """
    raised: list[tuple[datetime, str, str]] = []
    kinds = {
        "inventory.low_stock": ("low_stock", "warning"),
        "inventory.out_of_stock": ("out_of_stock", "critical"),
    }
    by_key: dict[tuple[str, str], list[_Event]] = defaultdict(list)
    for event in _of(
        stored, "inventory.low_stock", "inventory.out_of_stock", "inventory.restocked"
    ):
        product_id = _text(event.data.get("product_id"))
        if product_id is not None:
            by_key[product_id, _location(event.data)].append(event)
    for history in by_key.values():
        history.sort(key=lambda e: (e.ts, e.event_type == "inventory.restocked", e.index))
        open_types: set[str] = set()
        for event in history:
            if event.event_type == "inventory.restocked":
                open_types.clear()
                continue
            alert_type, severity = kinds[event.event_type]
            if alert_type not in open_types:
                open_types.add(alert_type)
                raised.append((event.ts, alert_type, severity))

    hours: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])  # [processed, failed]
    for event in _of(stored, "payment.processed", "payment.failed"):
        hour = event.ts.replace(minute=0, second=0, microsecond=0)
        hours[hour][event.event_type == "payment.failed"] += 1
    alert_open = False
    for hour in sorted(hours):
        processed, failed = hours[hour]
        attempts = processed + failed
        rate = Decimal(failed) / attempts
        if attempts >= PAYMENT_ALERT_MIN_PAYMENTS and rate >= PAYMENT_ALERT_FAILURE_RATE:
            if not alert_open:
                alert_open = True
                raised.append((hour, "payment_failure_rate", "critical"))
        elif rate < PAYMENT_ALERT_FAILURE_RATE:
            alert_open = False

    in_range = [alert for alert in raised if _in_range(alert[0].date(), a.since, a.until)]
    in_range.sort(key=lambda alert: (alert[1], alert[2]))
    in_range.sort(key=lambda alert: alert[0], reverse=True)
    return [
        {"created_at": _iso_seconds(moment), "alert_type": alert_type, "severity": severity}
        for moment, alert_type, severity in in_range
    ]


def _logins(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 8: logins_per_user is a 4-decimal ratio, None without any user."""
    counts: dict[date, int] = defaultdict(int)
    users: dict[date, set[str]] = defaultdict(set)
    for event in _of(stored, "user.logged_in"):
        if _in_range(event.day, a.since, a.until):
            counts[event.day] += 1
            user = _login_user(event)
            if user is not None:
                users[event.day].add(user)
    return [
        {
            "date": _iso_day(day),
            "logins": counts[day],
            "users": len(users[day]),
            "logins_per_user": (
                _ratio(Decimal(counts[day]) / len(users[day])) if users[day] else None
            ),
        }
        for day in sorted(counts)
    ]


def _operations(stored: list[_Event], a: _Args) -> list[dict[str, Any]]:
    """Choice 9: days with only dead letters are rows (error_rate 1.0)."""
    events: dict[date, int] = defaultdict(int)
    times: dict[date, list[Decimal]] = defaultdict(list)
    for event in stored:
        if not _in_range(event.day, a.since, a.until):
            continue
        events[event.day] += 1
        value = _num(event.metadata.get("response_time_ms"))
        if value is not None:
            times[event.day].append(value)
    dead: dict[date, int] = defaultdict(int)
    for letter in a.dead_letters:
        if letter.get("tenant_id") != a.tenant:
            continue
        day = _utc(letter["received_at"]).date()
        if _in_range(day, a.since, a.until):
            dead[day] += 1
    rows = []
    for day in sorted(set(events) | set(dead)):
        total = events[day] + dead[day]
        values = times.get(day)
        rows.append(
            {
                "date": _iso_day(day),
                "events": events[day],
                "dead_letters": dead[day],
                "error_rate": _ratio(Decimal(dead[day]) / total),
                "p50_response_ms": _money(_percentile(values, Decimal("0.5"))) if values else None,
                "p95_response_ms": _money(_percentile(values, Decimal("0.95"))) if values else None,
            }
        )
    return rows


_BUILDERS: dict[str, Callable[[list[_Event], _Args], list[dict[str, Any]]]] = {
    "revenue-by-day": _revenue_by_day,
    "top-products": _top_products,
    "activity-heatmap": _activity_heatmap,
    "dau": lambda stored, a: _window_users(stored, a, 1),
    "wau": lambda stored, a: _window_users(stored, a, 7),
    "mau": lambda stored, a: _window_users(stored, a, 30),
    "retention": _retention,
    "aov": _aov,
    "conversion": _conversion,
    "sessions": _sessions,
    "payments": _payments,
    "failure-reasons": _failure_reasons,
    "geo": _geo,
    "inventory": _inventory,
    "dead-stock": _dead_stock,
    "alerts": _alerts,
    "logins": _logins,
    "operations": _operations,
}


def expected(
    report: str,
    events: list[dict[str, Any]],
    *,
    tenant: str,
    since: date | None = None,
    until: date | None = None,
    limit: int = 10,
    days: int = 30,
    now: datetime | None = None,
    dead_letters: list[dict[str, Any]] | None = None,
    default_currency: str = "USD",
) -> list[dict[str, Any]]:
    """The rows ``analytics report REPORT --tenant TENANT --format json`` must print.

    ``events``: envelopes as published (duplicates allowed; first (tenant_id, event_id)
    wins). ``limit`` is top-products' ``--limit``, ``days`` dead-stock's ``--days``;
    ``now`` (default: the current time) is the wall clock of conversion's abandonment and
    dead-stock's default end; ``dead_letters`` are ``{"tenant_id", "received_at"}`` dicts
    for operations. For ``alerts`` the rows have no ``message`` key: drop ``message`` from
    the report's rows before comparing (see choice 7 in the module docstring).
    """
    if report not in _BUILDERS:
        raise ValueError(f"unknown report {report!r}; known: {', '.join(REPORTS)}")
    args = _Args(
        tenant=tenant,
        since=since,
        until=until,
        limit=limit,
        days=days,
        now=_utc(now) if now is not None else datetime.now(UTC),
        dead_letters=list(dead_letters or []),
        default_currency=default_currency.upper(),
    )
    return _BUILDERS[report](_stored(events, tenant), args)
