"""What the database can hold: every value an event would write, checked against its column.

A value the schema accepts but a column cannot hold used to fail its whole
batch's transaction (a ``failure_reason`` longer than ``String(255)``, an amount
whose sum leaves a 64-bit integer, a date rollups cannot count back from). So
the writer's rows are checked before anything is written, and an event with a
value that does not fit becomes a dead letter saying which column and why.

The limits are read from the models' own column types, never from a second list:
a ``String(n)`` holds ``n`` characters, a ``BigInteger`` 64 bits, an ``Integer``
32, an :class:`~analytics.models.Amount` 64 bits of 1/10,000ths, and every date
and time column the accepted event-time window (``EVENT_TIME_MIN`` and
``EVENT_TIME_MAX``). Change a column and its check changes with it.

A channel is the one value that is shortened instead (:func:`storable_channel`):
Redis sets no limit on a channel's length, and the event on it is valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, FromClause, Integer, String

from analytics.models import AMOUNT_SCALE, Amount, StoredEvent

_INT64 = 2**63 - 1
_INT32 = 2**31 - 1
#: Hex digits of the channel's hash kept when a channel is shortened.
_CHANNEL_HASH = 16
CHANNEL_LENGTH: int = StoredEvent.__table__.c.channel.type.length  # type: ignore[attr-defined]


def storable_text(text: str | None) -> str | None:
    """Text a PostgreSQL text column accepts: a NUL becomes U+FFFD.

    A dead letter must be storable whatever arrived: one NUL in a claimed tenant id
    used to fail the insert, and with it every dead letter of the batch (its raw
    bytes stay exact).
    """
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def storable_channel(channel: str) -> str:
    """The channel as a text column holds it: at most its length, and no NUL.

    A longer channel keeps its beginning and ends with ``#`` and 16 hex digits of
    the whole channel's SHA-256, so two long channels stay two.
    """
    channel = storable_text(channel) or ""
    if len(channel) <= CHANNEL_LENGTH:
        return channel
    digest = hashlib.sha256(channel.encode("utf-8", "surrogatepass")).hexdigest()
    return channel[: CHANNEL_LENGTH - _CHANNEL_HASH - 1] + "#" + digest[:_CHANNEL_HASH]


#: Characters of a refused text shown in the reason, so a person can tell which field it was.
_PREVIEW = 40


@dataclass(frozen=True)
class Limit:
    """What one column holds: ``low <= v <= high`` (``< high`` when ``open_high``).

    For text, ``high`` is the length. Each limit is written once, here: a table's
    scan tests all of its limits inline in one generated function (the writer's
    rows pass through it for every event), and :meth:`why` explains a value it
    refuses.
    """

    low: Any
    high: Any
    open_high: bool = False
    text: bool = False
    #: How a reason names the range.
    label: str = ""

    def misfit_expression(self, env: dict[str, Any], prefix: str) -> str:
        """Python true when ``v`` (present) does not fit; its bounds put in ``env``."""
        if self.text:
            return f"len(v) > {int(self.high)}"
        env[f"{prefix}_low"], env[f"{prefix}_high"] = self.low, self.high
        upper = "<" if self.open_high else "<="
        return f"not {prefix}_low <= v {upper} {prefix}_high"

    def why(self, value: Any) -> str:
        if self.text:
            return (
                f"{value[:_PREVIEW]!r}... is {len(value)} characters, "
                f"more than the {self.high} it holds"
            )
        shown = value.isoformat() if isinstance(value, date) else value
        return f"{shown} is outside {self.label}"


def _window(low: datetime, high: datetime) -> str:
    return (
        f"the accepted event time window [{low.isoformat()}, {high.isoformat()}) "
        "(EVENT_TIME_MIN, EVENT_TIME_MAX)"
    )


def limit_for(column_type: Any, low: datetime, high: datetime) -> Limit | None:
    """The limit of a column type with this event-time window, or None when it has none."""
    if isinstance(column_type, Amount):
        bound = Decimal(_INT64) / AMOUNT_SCALE
        return Limit(-bound, bound, label=f"the range an amount column holds (±{bound})")
    if isinstance(column_type, String):
        return Limit(0, column_type.length, text=True) if column_type.length else None
    for kind, top in ((BigInteger, _INT64), (Integer, _INT32)):
        if isinstance(column_type, kind):
            return Limit(-top - 1, top, label=f"the range it holds ({-top - 1} to {top})")
    if isinstance(column_type, DateTime):
        return Limit(low, high, open_high=True, label=_window(low, high))
    if isinstance(column_type, Date):
        return Limit(low.date(), high.date(), label=_window(low, high))
    return None


def _compile_scan(limits: dict[str, Limit]) -> Callable[[dict[str, Any]], str | None]:
    """A function from a row to the name of its first column whose value does not fit, or None."""
    env: dict[str, Any] = {}
    body = ["get = row.get"]
    for index, (name, limit) in enumerate(limits.items()):
        body += [
            f"v = get({name!r})",
            f"if v is not None and ({limit.misfit_expression(env, f'c{index}')}):",
            f"    return {name!r}",
        ]
    body.append("return None")
    source = "def scan(row):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, "<storable scan>", "exec"), env)
    scan: Callable[[dict[str, Any]], str | None] = env["scan"]
    return scan


@dataclass(frozen=True, slots=True)
class Misfit:
    """A value that does not fit its column: where it would go, what it is, and why not."""

    column: str
    value: Any
    why: str


def path_of(value: Any, document: Any, prefix: str = "") -> str | None:
    """Where ``value`` stands in a decoded document (``data.items.0.name``), if anywhere.

    A refused value is named by the event field a producer wrote, not only by the
    column it would land in (a reason may go to a counter's ``dimension``).
    """
    if isinstance(document, dict):
        for key, item in document.items():
            found = path_of(value, item, f"{prefix}{key}.")
            if found is not None:
                return found
    elif isinstance(document, list):
        for index, item in enumerate(document):
            found = path_of(value, item, f"{prefix}{index}.")
            if found is not None:
                return found
    elif type(document) is type(value) and document == value:
        return prefix.rstrip(".")
    return None


class Fit:
    """Checks rows against the columns of their table, for one event-time window."""

    def __init__(self, time_min: datetime, time_max: datetime):
        self.time_min, self.time_max = time_min, time_max
        self._limits: dict[FromClause, dict[str, Limit]] = {}
        self._scans: dict[FromClause, Callable[[dict[str, Any]], str | None]] = {}
        when = Limit(time_min, time_max, open_high=True, label=_window(time_min, time_max))
        self._when = _compile_scan({"timestamp": when})
        self._when_limit = when

    def limits(self, table: FromClause) -> dict[str, Limit]:
        """The limit of every column of ``table`` that has one, built once."""
        found = self._limits.get(table)
        if found is None:
            found = self._limits[table] = {
                column.name: limit
                for column in table.columns
                if (limit := limit_for(column.type, self.time_min, self.time_max)) is not None
            }
        return found

    def problem(self, table: FromClause, row: dict[str, Any]) -> Misfit | None:
        """What in ``row`` cannot be written to ``table``, or None when every value fits."""
        scan = self._scans.get(table)
        if scan is None:
            scan = self._scans[table] = _compile_scan(self.limits(table))
        name = scan(row)
        if name is None:
            return None
        value = row[name]
        return Misfit(f"{table.description}.{name}", value, self.limits(table)[name].why(value))

    def when_problem(self, moment: datetime) -> str | None:
        """Why an event's own time is refused, or None."""
        if self._when({"timestamp": moment}) is None:
            return None
        return self._when_limit.why(moment)


@lru_cache(maxsize=8)
def fit_for(time_min: datetime, time_max: datetime) -> Fit:
    """The :class:`Fit` of a window, shared by every batch that uses it."""
    return Fit(time_min, time_max)
