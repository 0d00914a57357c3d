"""The bridge -> worker batch message: its items as named types, encoded and decoded here only.

A batch is the one argument of an ingestion task: a list of items, each an
:class:`EventItem` (to validate and store) or, for the dead-letter task, a
:class:`RejectedItem` (a message the bridge could not route). The bridge builds
items and calls :meth:`~EventItem.encode`; the workers call ``decode``. No
sqlalchemy here: the bridge imports this module.

Wire format, version 1 (:data:`VERSION`): an item is a JSON array, by position,
exactly as the workers before this module read it, so that bridges and workers
can be upgraded one at a time (a rolling upgrade)::

    event:     [channel, text, received]
    rejected:  [channel, base64 bytes, received, reason, size, sha256]

``received`` is epoch seconds; ``size`` and ``sha256`` describe the whole message
when only its head travels (they may be left off). A later version is a JSON
object with its number under ``"v"``: a worker refuses an item of a version it
does not know (:class:`UnsupportedItem`), before touching anything, so the batch
stays in the delivery ledger and is sent again until an upgraded worker takes it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: The item format this code writes, and the newest it reads.
VERSION = 1


class UnsupportedItem(ValueError):
    """An item of a version or shape this worker does not know: the batch is refused."""


def _positional(item: Any, least: int) -> list[Any] | tuple[Any, ...]:
    if isinstance(item, list | tuple) and len(item) >= least:
        return item
    version = item.get("v") if isinstance(item, dict) else None
    if version is not None:
        raise UnsupportedItem(f"batch item version {version!r} is newer than {VERSION}")
    raise UnsupportedItem(f"not a version {VERSION} batch item: {str(item)[:80]!r}")


def received_at(received: float) -> datetime:
    """An item's ``received`` (epoch seconds) as a naive UTC datetime."""
    return datetime.fromtimestamp(float(received), UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class EventItem:
    """An event the bridge read, to validate and store."""

    channel: str
    #: The message as published: JSON text (bytes when handed in by a test or replay).
    text: str | bytes
    #: When the bridge read it, epoch seconds (one value for everything read at once).
    received: float

    def encode(self) -> list[Any]:
        return [self.channel, self.text, self.received]

    @classmethod
    def decode(cls, item: Any) -> EventItem:
        channel, text, received = _positional(item, 3)[:3]
        return cls(str(channel), text, received)


@dataclass(frozen=True, slots=True)
class RejectedItem:
    """A message the bridge could not route, for the dead-letter task."""

    channel: str
    #: Its bytes, or only their head when the message was over the payload limit.
    head: bytes
    received: float
    #: Why it was rejected (the InvalidEvent's text).
    reason: str
    #: The whole message's size and SHA-256 (hex), when known.
    size: int | None = None
    sha256: str | None = None

    def encode(self) -> list[Any]:
        item = [self.channel, base64.b64encode(self.head).decode(), self.received, self.reason]
        if self.size is not None and self.sha256 is not None:
            item += [self.size, self.sha256]
        return item

    @classmethod
    def decode(cls, item: Any) -> RejectedItem:
        channel, head, received, reason, *whole = _positional(item, 4)
        size, sha256 = (int(whole[0]), str(whole[1])) if len(whole) >= 2 else (None, None)
        return cls(str(channel), base64.b64decode(head), received, str(reason), size, sha256)
