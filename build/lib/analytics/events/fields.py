"""The marshmallow field types of event payloads, and the factories the definitions use.

Every default and every range an event field has is written in one of these
factories (or next to the field in :mod:`analytics.events.schemas`); the compiled
fast path (:mod:`analytics.events.compiled`) knows each of these types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import fields, validate

from analytics.limits import MAX_AMOUNT, MAX_QUANTITY

ID_MAX_LENGTH = 128


class Id(fields.Field):
    """An opaque identifier: a string of 1-128 characters, not only a UUID."""

    default_error_messages = {
        "invalid": "Not a valid identifier: expected a string of 1-128 characters.",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        # A number is a wrong type, not an id: 42 and "42" must not silently merge.
        if not isinstance(value, str) or not 1 <= len(value) <= ID_MAX_LENGTH:
            raise self.make_error("invalid")
        return value


class Timestamp(fields.Field):
    """ISO 8601 with any number of fraction digits and ``Z`` or an offset; naive means UTC."""

    default_error_messages = {
        "invalid": "Not a valid ISO 8601 timestamp (e.g. 2024-01-01T00:00:00Z).",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        return parse_timestamp(value, self.make_error("invalid"))


def parse_timestamp(value: str, error: Exception | None = None) -> datetime:
    """A naive UTC datetime from an ISO 8601 string (Rust's chrono writes nine fraction digits)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise error or ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


class Quantity(fields.Integer):
    """A whole number of units: 2 and 2.0 are 2; 2.5 is refused, never cut to 2."""

    default_error_messages = {"fraction": "Not a whole number."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("fraction")
        return super()._deserialize(value, attr, data, **kwargs)


class Currency(fields.String):
    """A 3-letter currency code, upper-cased; missing means the deployment's default currency."""

    default_error_messages = {"currency": "Not a 3-letter currency code."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) != 3 or not text.isalpha():
            raise self.make_error("currency")
        return text.upper()


# ------------------------------------------------------------------------ factories


def money(**kwargs: Any) -> fields.Decimal:
    """An amount from 0 to MAX_AMOUNT (see analytics.limits: counters sum them)."""
    return fields.Decimal(allow_nan=False, validate=validate.Range(min=0, max=MAX_AMOUNT), **kwargs)


def optional_money() -> fields.Decimal:
    return money(allow_none=True, load_default=None)


def optional_text(**kwargs: Any) -> fields.String:
    return fields.String(allow_none=True, load_default=None, **kwargs)


def optional_id() -> Id:
    return Id(allow_none=True, load_default=None)


def optional_currency() -> Currency:
    return Currency(allow_none=True, load_default=None)


def quantity(low: int = 0, **kwargs: Any) -> Quantity:
    """Units from ``low`` (0, or -MAX_QUANTITY for a stock level) to MAX_QUANTITY."""
    return Quantity(validate=validate.Range(min=low, max=MAX_QUANTITY), **kwargs)


def count(low: int = 0) -> Quantity:
    return quantity(low, allow_none=True, load_default=None)


def level() -> Quantity:
    """A stock level: negative when backorders exceed what is on hand."""
    return count(low=-MAX_QUANTITY)
