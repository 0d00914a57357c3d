"""Dead letters, in one module: what could not be ingested is kept, listed, and replayed.

:class:`Rejected` is a message that failed validation (or whose values did not
fit their columns); :func:`record_dead_letters` keeps it, bounded and fingerprinted
(:func:`dead_letter_fingerprint`) so that the same bytes count once; :func:`listing`
shows them and :func:`replay` runs them through validation again after a fix.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics import events as ev
from analytics.config import (
    DEFAULT_DEAD_LETTER_KEEP_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_PAYLOAD_BYTES,
)
from analytics.db import is_retryable, upsert_many
from analytics.errors import InvalidEvent, plain
from analytics.events import parse
from analytics.ingest import Context, apply_events
from analytics.limits import Bounded, bound
from analytics.models import DeadLetter
from analytics.storable import storable_channel, storable_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A message that failed validation, as it arrived.

    ``raw`` is the whole message, or, when ``size`` and ``sha256`` are given, only
    its first bytes (the bridge forwards no more than a dead letter keeps).
    """

    channel: str
    raw: bytes
    received_at: datetime
    error: str
    messages: Any = None
    tenant_id: str | None = None
    event_type: str | None = None
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, channel: str, raw: bytes, received_at: datetime, exc: InvalidEvent) -> Rejected:
        """The dead letter of a message :func:`analytics.events.parse` refused."""
        return cls(
            channel,
            raw,
            received_at,
            exc.summary,
            exc.messages,
            tenant_id=exc.tenant_id,
            event_type=exc.event_type,
        )

    def kept(self, limit: int, keep: int, pii_salt: str | None) -> Bounded:
        """What a dead letter keeps of the message (:func:`analytics.limits.bound`)."""
        if self.size is not None and self.sha256 is not None:
            return Bounded(self.raw, self.size, self.sha256)  # bounded by the bridge
        return bound(self.raw, limit, keep, pii_salt)


#: A dead letter's ``error`` is cut to this many characters in the fallback row.
_FALLBACK_ERROR_CHARS = 1000


def record_dead_letters(
    session: Session,
    rejected: Sequence[Rejected],
    pii_salt: str | None = None,
    limit: int = DEFAULT_MAX_PAYLOAD_BYTES,
    keep: int = DEFAULT_DEAD_LETTER_KEEP_BYTES,
) -> int:
    """Keep rejected messages with their bytes and what was wrong with them.

    A message over ``limit`` bytes (MAX_PAYLOAD_BYTES) keeps only its first ``keep``
    (DEAD_LETTER_KEEP_BYTES), with the size and SHA-256 of the whole.

    The same bytes on the same channel are one dead letter (like an id-less event,
    whose derived id makes the same payload count once): a second bridge, or a
    redelivered task, adds nothing. With a ``pii_salt``, e-mail and IP values in
    the bytes are hashed first (``events.scrub_raw``), and the fingerprint is keyed
    with the salt so that it cannot confirm a guessed message either.

    A dead letter must be writable whatever arrived: the rows are written inside a
    savepoint, and if they fail (something in them the database refuses), each
    message is written again as a minimal row (bytes, channel, reason). Only when
    even that fails does the error reach the caller, whose batch is then retried.
    """
    if not rejected:
        return 0
    rows = [_dead_letter_row(r.kept(limit, keep, pii_salt), r, pii_salt) for r in rejected]
    try:
        with session.begin_nested():
            _insert_dead_letters(session, rows)
    except Exception as exc:
        if is_retryable(exc):
            raise
        log.exception("dead letters could not be written as they are; writing minimal rows")
        with session.begin_nested():
            _insert_dead_letters(session, [_minimal(row) for row in rows])
    return len(rejected)


def _dead_letter_row(kept: Bounded, r: Rejected, pii_salt: str | None) -> dict[str, Any]:
    if kept.truncated:
        # The identity of a cut message is its whole: two that share their first
        # bytes are two dead letters.
        identity = f"{kept.size}:{kept.sha256}".encode()
        error = f"{r.error} (kept the first {len(kept.head)} of {kept.size} bytes)"
    else:
        identity, error = kept.head, r.error
    return {
        "received_at": r.received_at,
        "channel": storable_channel(r.channel),
        "raw": ev.scrub_raw(kept.head, pii_salt) if pii_salt else kept.head,
        "raw_size": kept.size,
        "raw_sha256": kept.sha256,
        "error": storable_text(error),
        "messages": plain(r.messages) if r.messages is not None else {"_schema": [r.error]},
        "tenant_id": storable_text(r.tenant_id),
        "event_type": storable_text(r.event_type),
        "fingerprint": dead_letter_fingerprint(r.channel, identity, pii_salt),
    }


def _minimal(row: dict[str, Any]) -> dict[str, Any]:
    """A dead letter row with only what cannot fail: bytes, channel, a short reason."""
    error = str(row["error"])[:_FALLBACK_ERROR_CHARS]
    return {
        **row,
        "error": error,
        "messages": {"_schema": [error]},
        "tenant_id": None,
        "event_type": None,
    }


def _insert_dead_letters(session: Session, rows: list[dict[str, Any]]) -> None:
    upsert_many(
        session,
        "dead-letters",
        lambda insert: insert(DeadLetter).on_conflict_do_nothing(index_elements=["fingerprint"]),
        rows,
    )


def dead_letter_fingerprint(channel: str, raw: bytes, pii_salt: str | None = None) -> str:
    """The identity of a dead letter: its channel and its bytes as they arrived."""
    message = channel.encode("utf-8", "replace") + b"\0" + raw
    if pii_salt:
        return hmac.new(pii_salt.encode(), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def listing(
    session: Session, limit: int | None = None, pending_only: bool = False
) -> list[dict[str, Any]]:
    """Dead letters, oldest first: ``id, received_at, channel, error``."""
    stmt = select(DeadLetter.id, DeadLetter.received_at, DeadLetter.channel, DeadLetter.error)
    if pending_only:
        stmt = stmt.where(DeadLetter.replayed_at.is_(None))
    stmt = stmt.order_by(DeadLetter.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        {
            "id": letter_id,
            "received_at": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "channel": channel,
            "error": error,
        }
        for letter_id, received, channel, error in session.execute(stmt)
    ]


@dataclass
class ReplayResult:
    """What a replay did: letters ingested, already counted, still invalid; ids not found."""

    ingested: int = 0
    duplicates: int = 0
    still_invalid: int = 0
    missing: tuple[int, ...] = ()


def replay(
    session: Session,
    ids: Sequence[int] | None,
    ctx: Context,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    pii_salt: str | None = None,
) -> ReplayResult:
    """Re-run dead letters (these ids, or every one not yet replayed) through validation.

    A letter that now passes is applied like any event (so one that was already
    counted is not counted again) and marked replayed; one that still fails keeps
    its place with the new reason. A letter that kept only the first bytes of an
    oversized message cannot pass, and stays as it is.
    """
    stmt = select(DeadLetter).where(DeadLetter.replayed_at.is_(None)).order_by(DeadLetter.id)
    if ids is not None:
        stmt = stmt.where(DeadLetter.id.in_(ids))
    letters = list(session.execute(stmt).scalars())
    result = ReplayResult(missing=tuple(sorted(set(ids or ()) - {letter.id for letter in letters})))
    now = datetime.now(UTC).replace(tzinfo=None)
    for letter in letters:
        if letter.raw_size is not None and letter.raw_size > len(letter.raw):
            # Only the first bytes were kept: the message itself is gone.
            result.still_invalid += 1
            continue
        try:
            event = parse(
                bytes(letter.raw),
                channel=letter.channel,
                received_at=letter.received_at,
                max_bytes=max_bytes,
                max_depth=max_depth,
                pii_salt=pii_salt,
            )
        except InvalidEvent as exc:
            letter.error, letter.messages = exc.summary, exc.messages
            result.still_invalid += 1
            continue
        applied = apply_events(session, [event], ctx)
        if applied.refused:
            refusal = applied.refused[0][1]
            letter.error, letter.messages = refusal.summary, refusal.messages
            result.still_invalid += 1
            continue
        result.ingested += applied.stored
        result.duplicates += applied.duplicates
        letter.replayed_at = now
    return result
