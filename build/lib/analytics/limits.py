"""Limits on what a message may be: its size and depth before parsing, its numbers after.

Amounts and quantities are bounded so that the counters that sum them cannot
overflow (:data:`MAX_AMOUNT`, :data:`MAX_QUANTITY`); an oversized message is kept
as a dead letter by its first bytes, size and hash (:func:`bound`). The rest of
this module is about nesting depth.

A JSON parser builds every level of a document before anyone can look at it, and
code that walks the result (PII scrubbing, schemas) recurses once per level: a
small message of ``[[[[...`` costs far more than its size suggests and can end in
a recursion error. So a document nested deeper than ``MAX_JSON_DEPTH`` is
rejected from its bytes, without being parsed: the bridge and the workers call
:func:`depth_problem` before ``orjson.loads``.

The scan is lexical: it counts ``[`` and ``{`` against ``]`` and ``}`` outside
string literals (whose escapes, ``\\"`` included, it honours). It runs on every
event, so it starts with a check that costs two ``count`` calls: a document
cannot nest deeper than the number of openers it contains, and an ordinary event
holds far fewer than the limit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from itertools import accumulate

from analytics.config import DEFAULT_MAX_JSON_DEPTH

#: Largest money amount one event may carry; none may be negative (a refund is its
#: own event, a discount is in the order's total). Amounts are summed as 64-bit
#: counts of 1/10,000ths (analytics.models.Amount), ±9.2 x 10^14 units: one
#: counter row (a tenant, hour and currency) holds 9,223 orders at this limit
#: before it could overflow, and millions of real ones.
MAX_AMOUNT = 10**11
#: Largest quantity (units of an order line, units restocked, a stock level either
#: side of zero: backorders make levels negative). Fractions are refused, not cut.
MAX_QUANTITY = 10**9


@dataclass(frozen=True, slots=True)
class Bounded:
    """At most the first ``keep`` bytes of a message, with the size and hash of all of it."""

    head: bytes
    size: int
    sha256: str

    @property
    def truncated(self) -> bool:
        return self.size > len(self.head)


def bound(raw: bytes, limit: int, keep: int, salt: str | None = None) -> Bounded:
    """What a dead letter keeps of ``raw``: all of it within ``limit`` bytes (MAX_PAYLOAD_BYTES),
    else its first ``keep`` (DEAD_LETTER_KEEP_BYTES); and its size and hash either way.

    With a ``salt`` (PII_SALT) the hash is keyed, so that it cannot confirm a
    guessed message.
    """
    if salt:
        digest = hmac.new(salt.encode(), raw, hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(raw).hexdigest()
    return Bounded(raw if len(raw) <= limit else raw[:keep], len(raw), digest)


#: A JSON string literal: quote, then runs of plain characters or backslash escapes.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Every byte except the four brackets, deleted before the depth is summed.
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
#: +1 for an opener, -1 for a closer, indexed by byte value.
_STEP = [0] * 256
for _opener in b"[{":
    _STEP[_opener] = 1
for _closer in b"]}":
    _STEP[_closer] = -1
#: Brackets summed at a time, so that the scan can stop early.
_SCAN_CHUNK = 4096


def nesting_depth(data: bytes | str, stop_above: int | None = None) -> int:
    """How many arrays and objects deep the document nests (0 for a scalar).

    Brackets inside string literals do not count; unbalanced input (invalid JSON)
    gets the deepest running count of openers over closers. With ``stop_above``,
    the scan stops as soon as the depth passes it and returns the depth reached
    so far: a megabyte of ``[`` is refused after its first few thousand bytes.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    deepest = depth = 0
    for start in range(0, len(brackets), _SCAN_CHUNK):
        running = list(
            accumulate(map(_STEP.__getitem__, brackets[start : start + _SCAN_CHUNK]), initial=depth)
        )
        deepest, depth = max(deepest, *running), running[-1]
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


def depth_problem(data: bytes | str, limit: int = DEFAULT_MAX_JSON_DEPTH) -> str | None:
    """Why the document is too deeply nested to parse, or None when it is not."""
    if isinstance(data, str):
        openers = data.count("[") + data.count("{")
    else:
        openers = data.count(b"[") + data.count(b"{")
    if openers <= limit or nesting_depth(data, stop_above=limit) <= limit:
        return None
    return f"JSON nested deeper than the limit of {limit} levels"
