"""JSON for the batches, written and read by orjson: the same JSON on the wire, half the CPU.

A batch's body is the JSON array of its events' texts. kombu writes and reads it with the
standard library's ``json`` (and an object hook on every object). The bridge writes it
once, a worker reads it twice (its main process reads each message to tell Celery's
protocol, the pool process that runs it reads it again). CPU an event in
``python -m benchmarks.serializer``'s batches of 400: a write 2.7 → 1.1 µs, a read
2.4 → 1.3 µs (the read checks what orjson read, see :func:`loads`): 7.5 → 3.8 µs a batch's
event in all.

Nothing about the messages changes, so workers and bridges of either version mix
during an upgrade:

- the bridge sends batches with :data:`BATCH_SERIALIZER`, whose content type is
  ``application/json``; any worker reads them as it reads every task;
- every process that imports the app reads ``application/json`` with :func:`loads`,
  which gives what kombu's reader gives for any text: whatever orjson would read
  differently (kombu's ``{"__type__": ..., "__value__": ...}`` markers for dates, UUIDs,
  bytes and decimals; NaN; integers past 64 bits; lone surrogates) goes to kombu's reader.

The batch writer is for the batches' shape (lists of texts, bytes and numbers): bytes,
dates, decimals, subclasses and integers past 64 bits go to kombu's writer, but orjson
writes a UUID or an enum as a plain value where kombu writes a marker, and NaN and the
infinities as null (a batch's only floats are receipt times). Other tasks (rollups,
retention, the warehouse) keep kombu's writer.
"""

from __future__ import annotations

from typing import Any

import orjson
from kombu.serialization import registry
from kombu.utils import json as kombu_json

#: The serializer the bridge sends batches with (registered by :func:`register`).
BATCH_SERIALIZER = "batch-json"
CONTENT_TYPE = "application/json"

#: Types orjson would write as plain values where kombu writes a marker: handed to
#: ``_fallback`` (which raises TypeError), so that kombu writes the whole body.
_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_MARKER = '"__type__"'
_MARKER_BYTES = _MARKER.encode()
_HUGE = 2.0**63


def _fallback(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def dumps(value: Any) -> bytes | str:
    """``value`` as JSON: orjson's text where orjson writes what kombu would, kombu's where a
    value is of a type kombu marks or orjson refuses (bytes, dates, decimals, subclasses,
    integers past 64 bits)."""
    try:
        return orjson.dumps(value, default=_fallback, option=_PASSTHROUGH)
    except TypeError:
        return kombu_json.dumps(value)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """JSON text read as kombu reads it, by orjson where that gives the same."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    marker: Any = _MARKER if isinstance(data, str) else _MARKER_BYTES
    if marker not in data:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN, infinities, lone surrogates: kombu reads them, or says why not
        else:
            if not _has_huge_float(value):
                return value
    return kombu_json.loads(data)


def _has_huge_float(value: Any) -> bool:
    """Whether ``value`` holds a float of 2**63 or more: orjson reads an integer past 64
    bits as a float where kombu keeps it exact (so such a text goes to kombu's reader).

    It takes about three quarters of orjson's own time on a batch (a walk of every
    value), and the two together half of kombu's reader's.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.values())
        elif kind is float and not -_HUGE < item < _HUGE:
            return True
    return False


def register() -> None:
    """Register :data:`BATCH_SERIALIZER` and read ``application/json`` with :func:`loads`.

    ``json`` is registered again last, so that the content type's name stays ``json`` (in
    ``accept_content`` and kombu's errors) and its writer stays kombu's.
    """
    registry.register(BATCH_SERIALIZER, dumps, None, CONTENT_TYPE, "utf-8")
    registry.register("json", kombu_json.dumps, loads, CONTENT_TYPE, "utf-8")
