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

#: Returns why a present (non-null) value does not fit its column, or None.
Check = Callable[[Any], str | None]

_INT64 = 2**63 - 1
_INT32 = 2**31 - 1
#: Hex digits of the channel's hash kept when a channel is shortened.
_CHANNEL_HASH = 16
CHANNEL_LENGTH: int = StoredEvent.__table__.c.channel.type.length  # type: ignore[attr-defined]


def storable_channel(channel: str) -> str:
    """The channel as a text column holds it: at most its length, and no NUL.

    A longer channel keeps its beginning and ends with ``#`` and 16 hex digits of
    the whole channel's SHA-256, so two long channels stay two. A NUL becomes
    U+FFFD (a PostgreSQL text cannot hold one; a dead letter's bytes stay exact).
    """
    if "\x00" in channel:
        channel = channel.replace("\x00", "\ufffd")
    if len(channel) <= CHANNEL_LENGTH:
        return channel
    digest = hashlib.sha256(channel.encode("utf-8", "surrogatepass")).hexdigest()
    return channel[: CHANNEL_LENGTH - _CHANNEL_HASH - 1] + "#" + digest[:_CHANNEL_HASH]


#: Characters of a refused text shown in the reason, so a person can tell which field it was.
_PREVIEW = 40


def _text(length: int) -> Check:
    def check(value: Any) -> str | None:
        if len(value) <= length:
            return None
        return (
            f"{value[:_PREVIEW]!r}... is {len(value)} characters, more than the {length} it holds"
        )

    return check


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        if low <= value <= high:
            return None
        return f"{value} is outside the range it holds ({low} to {high})"

    return check


def _amount() -> Check:
    bound = Decimal(_INT64) / AMOUNT_SCALE

    def check(value: Any) -> str | None:
        if -bound <= value <= bound:
            return None
        return f"{value} is outside the range an amount column holds (±{bound})"

    return check


def _moment(low: datetime, high: datetime) -> Check:
    def check(value: Any) -> str | None:
        if low <= value < high:
            return None
        return (
            f"{value.isoformat()} is outside the accepted event time window "
            f"[{low.isoformat()}, {high.isoformat()}) (EVENT_TIME_MIN, EVENT_TIME_MAX)"
        )

    return check


def _day(low: datetime, high: datetime) -> Check:
    first, last = low.date(), high.date()

    def check(value: Any) -> str | None:
        if first <= value <= last:
            return None
        return (
            f"{value.isoformat()} is outside the accepted event time window "
            f"[{low.isoformat()}, {high.isoformat()}) (EVENT_TIME_MIN, EVENT_TIME_MAX)"
        )

    return check


def _check_for(column_type: Any, low: datetime, high: datetime) -> Check | None:
    if isinstance(column_type, Amount):
        return _amount()
    if isinstance(column_type, String):
        return _text(column_type.length) if column_type.length else None
    if isinstance(column_type, BigInteger):
        return _integer(-_INT64 - 1, _INT64)
    if isinstance(column_type, Integer):
        return _integer(-_INT32 - 1, _INT32)
    if isinstance(column_type, DateTime):
        return _moment(low, high)
    if isinstance(column_type, Date):
        return _day(low, high)
    return None


def _misfit_test(column_type: Any, env: dict[str, Any], low: datetime, high: datetime) -> str:
    """A Python expression true when ``v`` (present) does not fit a column of this type.

    The same limits as :func:`_check_for`, written inline: a function call per
    value cost ~10 us an event, a third of parsing it.
    """
    if isinstance(column_type, Amount):
        env["amount_bound"] = Decimal(_INT64) / AMOUNT_SCALE
        return "not -amount_bound <= v <= amount_bound"
    if isinstance(column_type, String):
        return f"len(v) > {column_type.length}"
    if isinstance(column_type, BigInteger):
        return f"not {-_INT64 - 1} <= v <= {_INT64}"
    if isinstance(column_type, Integer):
        return f"not {-_INT32 - 1} <= v <= {_INT32}"
    if isinstance(column_type, DateTime):
        env["time_low"], env["time_high"] = low, high
        return "not time_low <= v < time_high"
    env["day_low"], env["day_high"] = low.date(), high.date()
    return "not day_low <= v <= day_high"


def _compile_scan(names: list[tuple[str, Any]], low: datetime, high: datetime) -> Any:
    """A function from a row to the name of its first column whose value does not fit, or None."""
    env: dict[str, Any] = {}
    body = ["get = row.get"]
    for name, column_type in names:
        body += [
            f"v = get({name!r})",
            f"if v is not None and ({_misfit_test(column_type, env, low, high)}):",
            f"    return {name!r}",
        ]
    body.append("return None")
    source = "def scan(row):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, "<storable scan>", "exec"), env)
    return env["scan"]


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
        self._checks: dict[FromClause, tuple[tuple[str, Check], ...]] = {}
        self._scans: dict[FromClause, Any] = {}

    def checks(self, table: FromClause) -> tuple[tuple[str, Check], ...]:
        """``(column, check)`` for every column of ``table`` with a limit, built once."""
        found = self._checks.get(table)
        if found is None:
            pairs = []
            for column in table.columns:
                check = _check_for(column.type, self.time_min, self.time_max)
                if check is not None:
                    pairs.append((column.name, check))
            found = self._checks[table] = tuple(pairs)
        return found

    def problem(self, table: FromClause, row: dict[str, Any]) -> Misfit | None:
        """What in ``row`` cannot be written to ``table``, or None when every value fits."""
        scan = self._scans.get(table)
        if scan is None:
            limited = [
                (column.name, column.type)
                for column in table.columns
                if _check_for(column.type, self.time_min, self.time_max) is not None
            ]
            scan = self._scans[table] = _compile_scan(limited, self.time_min, self.time_max)
        name = scan(row)
        if name is None:
            return None
        # The slow path says why, with the same limits.
        check = dict(self.checks(table))[name]
        value = row[name]
        return Misfit(f"{table.description}.{name}", value, check(value) or "does not fit")

    def when_problem(self, moment: datetime | date) -> str | None:
        """Why an event's own time is refused, or None."""
        if isinstance(moment, datetime):
            return _moment(self.time_min, self.time_max)(moment)
        return _day(self.time_min, self.time_max)(moment)


@lru_cache(maxsize=8)
def fit_for(time_min: datetime, time_max: datetime) -> Fit:
    """The :class:`Fit` of a window, shared by every batch that uses it."""
    return Fit(time_min, time_max)
