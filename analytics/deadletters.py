"""Dead letters: list what could not be ingested, and replay it through validation after a fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.config import DEFAULT_MAX_JSON_DEPTH
from analytics.errors import InvalidEvent
from analytics.events import parse
from analytics.ingest import Context, apply_events
from analytics.models import DeadLetter


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
