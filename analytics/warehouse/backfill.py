"""Re-sending a range of days to the warehouse, idempotent through the events' insertIds.

A backfill reads ``events`` whose event time falls in the range, in ``events.id``
order, and sends them in batches as the sink does, with the same insertIds. It
does not move the sink's mark: the sink keeps delivering new events meanwhile.
Failed requests are tried again with backoff; refused rows go to
``warehouse_rejects`` like the sink's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from analytics.config import Settings
from analytics.errors import WarehouseError
from analytics.models import StoredEvent
from analytics.warehouse.bigquery import InsertResult
from analytics.warehouse.rows import Outgoing, outgoing, select_events
from analytics.warehouse.sink import Destination, backoff, keep_rejects, utcnow

#: Attempts of one batch before the backfill gives up (about ten minutes at the longest backoff).
ATTEMPTS = 12


@dataclass
class Backfilled:
    """What a backfill sent: rows accepted, rows refused, batches."""

    sent: int = 0
    rejected: int = 0
    batches: int = 0


def _window(since: date, until: date) -> tuple[datetime, datetime]:
    start = datetime(since.year, since.month, since.day)
    return start, datetime(until.year, until.month, until.day) + timedelta(days=1)


def count(session: Session, since: date, until: date) -> int:
    """How many stored events have their event time in ``since``..``until`` (inclusive)."""
    start, end = _window(since, until)
    return int(
        session.scalar(
            select(func.count())
            .select_from(StoredEvent)
            .where(StoredEvent.occurred_at >= start, StoredEvent.occurred_at < end)
        )
        or 0
    )


def _send(
    destination: Destination,
    batch: list[Outgoing],
    settings: Settings,
    sleep: Callable[[float], None],
) -> tuple[list[Outgoing], dict[int, tuple[str, str]]]:
    """Send until every row is accepted or refused; the rows and what was refused among them."""
    pending, refused = batch, {}
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = destination.insert(pending)
        except WarehouseError:
            if attempt == ATTEMPTS:
                raise
            sleep(backoff(attempt, settings.warehouse_max_backoff))
            continue
        for index, why in result.rejected.items():
            refused[batch.index(pending[index])] = why
        if not result.retry:
            return batch, refused
        pending = [pending[i] for i in sorted(result.retry)]
        sleep(backoff(attempt, settings.warehouse_max_backoff))
    raise WarehouseError(f"{len(pending)} rows still failing after {ATTEMPTS} attempts")


def backfill(
    sessions: sessionmaker[Session],
    settings: Settings,
    destination: Destination,
    since: date,
    until: date,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Backfilled:
    """Send every stored event with event time in ``since``..``until`` again."""
    start, end = _window(since, until)
    done, last = Backfilled(), 0
    while True:
        with sessions.begin() as session:
            query = (
                select_events()
                .where(
                    StoredEvent.id > last,
                    StoredEvent.occurred_at >= start,
                    StoredEvent.occurred_at < end,
                )
                .limit(settings.warehouse_batch)
            )
            batch = [outgoing(record) for record in session.execute(query)]
        if not batch:
            return done
        batch, refused = _send(destination, batch, settings, sleep)
        if refused:
            with sessions.begin() as session:
                keep_rejects(
                    session,
                    settings.warehouse_sink,
                    batch,
                    InsertResult(rejected=refused),
                    utcnow(),
                )
        done.sent += len(batch) - len(refused)
        done.rejected += len(refused)
        done.batches += 1
        last = batch[-1].row_id
        if progress is not None:
            progress(len(batch))
