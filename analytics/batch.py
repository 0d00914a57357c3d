"""The bridge -> worker batch message: its items as named types, encoded and decoded here only.

A batch is the one argument of an ingestion task: a list of items, each an
:class:`EventItem` (to validate and store) or, for the dead-letter task, a
:class:`RejectedItem` (a message the bridge could not route). The bridge builds
items and calls :meth:`~EventItem.encode`; the workers call ``decode``. No
sqlalchemy here: the bridge imports this module.

Wire format, version 1: an item is a JSON array, by position,
exactly as the workers before this module read it, so that bridges and workers
can be upgraded one at a time (a rolling upgrade)::

    event:     [channel, text, received]
    rejected:  [channel, base64 bytes, received, reason, size, sha256]

``received`` is epoch seconds; ``size`` and ``sha256`` describe the whole message
when only its head travels (they may be left off). A later version is a JSON
object with its number under ``"v"``: a worker refuses an item of a version it
does not know (:class:`UnsupportedItem`), before touching anything, so the batch
stays in the delivery ledger and is sent again until an upgraded worker takes it.

Version 2 (:data:`VERSION`) packs a whole batch of version 1 items into one
(:func:`pack`, :func:`unpack`)::

    packed:    {"v": 2, "zstd": base64 of the zstd frame of the items' JSON}

A worker's main process decodes every message's arguments to build its request,
then hands the message to a pool process, which decodes it again: with the
items as JSON, the main process decompressed and parsed the whole batch and
piped it to the pool uncompressed (a 500-event batch: 419 KB of JSON; 0.18 ms to
decompress and 0.44 to parse, and writing to the pipe was a quarter of that
process's CPU in a py-spy at peak). Packed, it parses a few hundred bytes of JSON
and one string and pipes 59 KB; only the pool process unpacks. The bridge
compresses the batch once where it did twice (for the delivery ledger and for the
message): the ledger's copy compresses the base64 text back to the frame's size
in a tenth of the time (0.06 against 0.53 ms).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import zstandard

#: The item format this code writes, and the newest it reads.
VERSION = 2


class UnsupportedItem(ValueError):
    """An item of a version or shape this worker does not know: the batch is refused."""


def _positional(item: Any, least: int) -> list[Any] | tuple[Any, ...]:
    if isinstance(item, list | tuple) and len(item) >= least:
        return item
    version = item.get("v") if isinstance(item, dict) else None
    if version is not None:
        raise UnsupportedItem(f"batch item version {version!r} is not one this worker reads")
    raise UnsupportedItem(f"not a version 1 batch item: {str(item)[:80]!r}")


def new_compressor() -> zstandard.ZstdCompressor:
    """A zstd compressor at the level of every frame this project writes: 1 (a batch's
    JSON: ~9 times smaller, ~1 µs an event). One must not be used by two threads at once."""
    return zstandard.ZstdCompressor(level=1)


def compress_frame(data: bytes) -> bytes:
    """``data`` as one zstd frame (:func:`new_compressor`).

    A new compressor a call: this runs on whichever thread sends (a new one costs
    ~30 µs more a batch than a kept one).
    """
    return new_compressor().compress(data)


def decompress_frame(frame: bytes) -> bytes:
    """What a zstd frame holds, whether or not its header records the size
    (``ZstdDecompressor.decompress`` refuses a frame that does not)."""
    return zstandard.ZstdDecompressor().decompressobj().decompress(frame)


def pack(items: list[list[Any]]) -> list[Any]:
    """A batch of version 1 items as one version 2 item; as it is when it cannot be packed
    (an item holding bytes, as a test or a replay may hand in)."""
    try:
        text = orjson.dumps(items)
    except TypeError:
        return items
    frame = compress_frame(text)
    return [{"v": VERSION, "zstd": base64.b64encode(frame).decode("ascii")}]


def unpack(items: Sequence[Any]) -> Sequence[Any]:
    """A batch's version 1 items: a packed batch's unpacked, any other batch as it is."""
    if len(items) != 1 or type(items[0]) is not dict or items[0].get("v") != VERSION:
        return items
    try:
        frame = base64.b64decode(items[0]["zstd"], validate=True)
        unpacked = orjson.loads(decompress_frame(frame))
    except (
        KeyError,
        TypeError,
        binascii.Error,
        zstandard.ZstdError,
        orjson.JSONDecodeError,
    ) as exc:
        raise UnsupportedItem(f"a packed batch that does not unpack ({exc})") from None
    if not isinstance(unpacked, list):
        raise UnsupportedItem(f"a packed batch of {type(unpacked).__name__}, not of items")
    return unpacked


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
