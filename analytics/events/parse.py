"""Parsing: published bytes to a typed, frozen :class:`Event`, or :class:`InvalidEvent`.

``parse`` turns the bytes a producer published into an :class:`Event` or raises
InvalidEvent with messages a person can act on. The rules are DESIGN.md's
"lenient where the contract is loose": opaque string IDs, an ``event_id`` derived
from the payload when missing, the bridge's arrival time when ``timestamp`` is
missing, and only the data fields an aggregate cannot do without are required
(each payload's fields and defaults: :mod:`analytics.events.schemas`).

:func:`decode_text` and :func:`event_type_of` are the part of it the bridge runs
on every message (size, depth, UTF-8, JSON object, event type), so that the bridge
and the workers refuse the same envelopes with the same words.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
from marshmallow import EXCLUDE, INCLUDE, Schema, ValidationError, fields, validate

from analytics.config import DEFAULT_MAX_JSON_DEPTH
from analytics.errors import InvalidEvent
from analytics.events.compiled import loader_for
from analytics.events.fields import ID_MAX_LENGTH, Id, Timestamp, optional_id
from analytics.events.pii import scrub_pii, scrub_typed
from analytics.events.registry import REGISTRY
from analytics.limits import depth_problem


class MetadataSchema(Schema):
    class Meta:
        unknown = INCLUDE

    response_time_ms = fields.Float(allow_none=True, validate=validate.Range(min=0))


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event_id = Id(allow_none=True, load_default=None)
    event_type = fields.String(required=True, validate=validate.Length(min=1, max=ID_MAX_LENGTH))
    tenant_id = Id(required=True)
    user_id = optional_id()
    timestamp = Timestamp(allow_none=True, load_default=None)
    data = fields.Dict(allow_none=True, load_default=None)
    metadata = fields.Nested(MetadataSchema, allow_none=True, load_default=None)


_ENVELOPE = EnvelopeSchema()
_load_envelope = loader_for(_ENVELOPE)

# --------------------------------------------------------------------------- event


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event. ``data`` is the typed payload, or the raw dict for an unknown type."""

    event_id: str
    event_type: str
    tenant_id: str
    user_id: str | None
    timestamp: datetime
    data: Any
    channel: str
    received_at: datetime
    payload: dict[str, Any] = field(repr=False)
    response_time_ms: float | None = None
    event_id_derived: bool = False
    timestamp_derived: bool = False

    #: The event's day and hour buckets, computed once: handlers ask for them ~3 times an event.
    day: date = field(init=False, repr=False, compare=False)
    hour: datetime = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "day", self.timestamp.date())
        object.__setattr__(self, "hour", self.timestamp.replace(minute=0, second=0, microsecond=0))

    @property
    def known(self) -> bool:
        return self.event_type in REGISTRY


def derive_event_id(document: Mapping[str, Any]) -> str:
    """A deterministic id for an id-less payload, so the same payload twice counts once."""
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return "derived-" + hashlib.sha256(canonical).hexdigest()[:40]


def _has_nul(value: Any) -> bool:
    """Whether a NUL is in any string (key or value) of a decoded document."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _check_size(raw: bytes | str, max_bytes: int, max_depth: int) -> None:
    """Size and nesting depth, checked on the bytes before anything is parsed."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise InvalidEvent(f"payload is {size} bytes, over the limit of {max_bytes}")
    too_deep = depth_problem(raw, max_depth)
    if too_deep is not None:
        raise InvalidEvent(too_deep)


def _load_object(raw: bytes | str) -> dict[str, Any]:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "null"
        raise InvalidEvent(f"event must be a JSON object, got {kind}")
    return document


def decode(
    raw: bytes | str, max_bytes: int, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> dict[str, Any]:
    """Bytes to a JSON object, or InvalidEvent saying what is wrong with them.

    Size and nesting depth are checked on the bytes, before anything is parsed.
    """
    _check_size(raw, max_bytes, max_depth)
    return _load_object(raw)


def decode_text(
    raw: bytes, max_bytes: int, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> tuple[str, dict[str, Any]]:
    """:func:`decode` of bytes that must be UTF-8 text: the text and its JSON object.

    What the bridge forwards is the text (a Celery message carries text, not bytes).
    """
    _check_size(raw, max_bytes, max_depth)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"payload is not valid UTF-8: {exc}") from None
    return text, _load_object(text)


def event_type_of(document: Mapping[str, Any]) -> str:
    """The event type a decoded document claims, or InvalidEvent when it names none.

    Only the type, not the envelope: the bridge routes by it, the workers check the rest.
    """
    event_type = document.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("invalid envelope: event_type: a non-empty string is required")
    return event_type


def _summary(messages: Any, prefix: str = "") -> str:
    if isinstance(messages, dict):
        parts = [_summary(value, f"{prefix}{key}.") for key, value in messages.items()]
        return "; ".join(parts)
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return f"{prefix.rstrip('.')}: {' '.join(messages)}"
    if isinstance(messages, list):
        return "; ".join(_summary(m, prefix) for m in messages)
    return f"{prefix.rstrip('.')}: {messages}"


def parse(
    raw: bytes | str,
    *,
    channel: str,
    received_at: datetime,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    pii_salt: str | None = None,
) -> Event:
    """Validate one published message into an :class:`Event`, or raise InvalidEvent.

    Never raises anything else: an unexpected failure on strange input (a bug of
    ours, deep nesting) becomes an InvalidEvent too, so the message is kept as a
    dead letter to replay after a fix instead of sinking its whole batch.
    """
    try:
        return _parse(raw, channel, received_at, max_bytes, max_depth, pii_salt)
    except InvalidEvent:
        raise
    except Exception as exc:
        raise InvalidEvent(f"could not validate ({type(exc).__name__}: {exc})") from exc


def _claimed(document: dict[str, Any]) -> dict[str, str | None]:
    """The tenant and type an invalid event claims, for its dead letter (built only then)."""
    return {
        key: value[:ID_MAX_LENGTH] if isinstance(value, str) else None
        for key, value in (
            ("tenant_id", document.get("tenant_id")),
            ("event_type", document.get("event_type")),
        )
    }


def _parse(
    raw: bytes | str,
    channel: str,
    received_at: datetime,
    max_bytes: int,
    max_depth: int,
    pii_salt: str | None,
) -> Event:
    document = decode(raw, max_bytes, max_depth)
    try:
        envelope = _load_envelope(document)
    except ValidationError as exc:
        raise InvalidEvent(
            "invalid envelope: " + _summary(exc.messages), exc.messages, **_claimed(document)
        ) from None
    event_type: str = envelope["event_type"]
    data = envelope["data"] or {}
    spec = REGISTRY.get(event_type)
    typed: Any = data
    if spec is not None:
        try:
            typed = spec.load(data)
        except ValidationError as exc:
            messages = {"data": exc.messages}
            raise InvalidEvent(
                f"invalid {event_type} data: " + _summary(exc.messages, "data."),
                messages,
                **_claimed(document),
            ) from None
    escaped_nul = "\\u0000" in raw if isinstance(raw, str) else b"\\u0000" in raw
    if escaped_nul and _has_nul(document):
        raise InvalidEvent(
            "text contains a NUL character (\\u0000), which the database cannot store",
            **_claimed(document),
        )
    payload = document
    if pii_salt:
        # Nothing downstream sees an e-mail or IP address: not the stored payload,
        # not the typed data a handler gets, not the derived id.
        payload = scrub_pii(document, pii_salt)
        typed = scrub_typed(typed, pii_salt) if spec is not None else scrub_pii(data, pii_salt)
    event_id = envelope["event_id"]
    if event_id is None:
        event_id = derive_event_id(payload)
    timestamp = envelope["timestamp"]
    metadata = envelope["metadata"] or {}
    return Event(
        event_id=event_id,
        event_type=event_type,
        tenant_id=envelope["tenant_id"],
        user_id=envelope["user_id"],
        timestamp=timestamp if timestamp is not None else received_at,
        data=typed,
        channel=channel,
        received_at=received_at,
        payload=payload,
        response_time_ms=metadata.get("response_time_ms"),
        event_id_derived=envelope["event_id"] is None,
        timestamp_derived=timestamp is None,
    )
