"""Which ``events.id`` the sink may read up to without ever skipping a later-committed event.

``events.id`` comes from a sequence, and ids are not committed in order: worker A
takes id 10, worker B takes 11 and commits, A commits a moment later. A reader
that saw 11 and moved its high-water mark past it would never read 10. So the
sink reads only up to a *safe* id, below which nothing can still appear.

The bound is confirmed in two steps, without blocking any writer:

1. Take a fence: ``L = max(events.id)`` (committed and visible), then the virtual
   transaction ids of every transaction holding a write lock on ``events`` (or one
   of its partitions) in ``pg_locks``. Any id <= L was drawn from the sequence
   before L was read, by an INSERT that took its ``RowExclusiveLock`` before it
   drew the id and keeps it until its transaction ends: that transaction has
   ended, or it is in the list.
2. Later, once none of the listed transactions is running any more (their
   virtual-xid locks are gone), every id <= L is committed or never will be, and L
   becomes the safe id.

Unlike a snapshot's xmin, this also covers a transaction that has drawn its id but
not yet been given a transaction id (nextval runs before the row's insert assigns
one). It needs the sequence's CACHE to be 1 (the default for serial columns): a
session that cached ids could use a smaller one after the fence.

SQLite runs one write transaction at a time, so ``max(id)`` is safe at once.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from analytics.db import dialect_of
from analytics.models import StoredEvent, WarehouseSink

_WRITERS = text(
    "SELECT DISTINCT virtualtransaction FROM pg_locks "
    "WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' "
    "AND pid IS DISTINCT FROM pg_backend_pid() "
    # pg_locks shows every database's locks, and relation OIDs are per database.
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND relation IN (SELECT 'events'::regclass UNION ALL "
    "SELECT inhrelid FROM pg_inherits WHERE inhparent = 'events'::regclass)"
)
_RUNNING = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY(:ids)"
)


def _max_id(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(StoredEvent.id), 0))) or 0)


def writers(session: Session) -> list[str]:
    """Virtual transaction ids of the transactions now holding a write lock on ``events``."""
    if dialect_of(session) != "postgresql":
        return []
    return sorted(str(row[0]) for row in session.execute(_WRITERS))


def running(session: Session, ids: list[str]) -> bool:
    """Whether any of these transactions is still running."""
    if not ids or dialect_of(session) != "postgresql":
        return False
    return bool(session.scalar(_RUNNING.bindparams(ids=ids)))


def advance(session: Session, sink: WarehouseSink) -> int:
    """Move ``sink.safe_id`` as far as it is safe now, taking a new fence when none is pending.

    Changes only the sink's fence columns (the caller commits). Returns the safe id.
    """
    if sink.fence_id is not None and not running(session, list(sink.fence_writers or [])):
        sink.safe_id = max(sink.safe_id, sink.fence_id)
        sink.fence_id, sink.fence_writers = None, None
    if sink.fence_id is None:
        # The order matters: the ids first, then who may still be writing below them.
        last = _max_id(session)
        if last > sink.safe_id:
            pending = writers(session)
            if pending:
                sink.fence_id, sink.fence_writers = last, pending
            else:
                sink.safe_id = last
    return sink.safe_id
