"""The bounded raw store: ``events`` in monthly partitions, dropped whole past a horizon.

On PostgreSQL ``events`` is partitioned by ``RANGE (occurred_at)`` (migration 0010): one
partition per calendar month of event time, ``events_pYYYYMM``, and a DEFAULT partition
``events_default`` that catches an event whose month has no partition yet.
:func:`ensure_partitions` creates the current month and the next ones ahead of time
(``analytics migrate`` and beat call it) and moves any rows the DEFAULT partition caught
into partitions of their own, so the DEFAULT partition stays empty and never has to be
pruned row by row. :func:`prune` drops every month partition whose whole range lies
before the horizon, unless it holds an event the warehouse has not received yet
(``keep_from_id``); it never touches an aggregate. Dead letters are few and their
fingerprint must stay unique across all time, so they are not partitioned: they go by
one indexed ``DELETE`` on ``received_at``.

SQLite (small setups) has no partitions: prune deletes the rows there.

Every DDL statement here waits at most ``LOCK_TIMEOUT`` for its lock on ``events``: a
long export or report holding the table must make maintenance fail and try again later,
not queue every ingesting worker behind a waiting ``DROP``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Table, delete, select, text
from sqlalchemy.orm import Session

from analytics.db import dialect_of, one_at_a_time
from analytics.errors import AnalyticsError
from analytics.models import DeadLetter, RawHorizon, StoredEvent

#: Monthly partitions are named after their month: ``events_p202612``.
PARTITION_PREFIX = "events_p"
DEFAULT_PARTITION = "events_default"
#: How long a maintenance statement waits for its lock on ``events`` before giving up.
LOCK_TIMEOUT = "10s"

_BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
_AGE = re.compile(r"^\s*(\d+)\s*(d|w|days?|weeks?)?\s*$", re.IGNORECASE)


class RetentionError(AnalyticsError):
    """A retention horizon or partition request that cannot be carried out."""


_PARTITION_NAME = re.compile(rf"^(?:{PARTITION_PREFIX}\d{{6}}|{DEFAULT_PARTITION})$")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name``: partitions are made here, not by models or migrations."""
    return not (type_ == "table" and name is not None and _PARTITION_NAME.match(name))


def parse_age(text_value: str) -> timedelta:
    """``90d``, ``12w`` or a bare number of days: the age past which raw events go."""
    match = _AGE.match(text_value)
    if match is None:
        raise RetentionError(f"{text_value!r} is not an age such as 90d or 12w")
    number, unit = int(match.group(1)), (match.group(2) or "d").lower()
    days = number * 7 if unit.startswith("w") else number
    if days < 1:
        raise RetentionError(f"{text_value!r}: the age must be at least one day")
    return timedelta(days=days)


def month_of(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARTITION_PREFIX}{month:%Y%m}"


@dataclass(frozen=True)
class Partition:
    """One partition of ``events``: its name and range (both None for the DEFAULT one)."""

    name: str
    start: datetime | None
    end: datetime | None


def is_partitioned(session: Session) -> bool:
    """Whether ``events`` is a partitioned table here (PostgreSQL after migration 0010)."""
    if dialect_of(session) != "postgresql":
        return False
    kind = session.execute(
        text("SELECT relkind FROM pg_class WHERE oid = to_regclass('events')")
    ).scalar()
    return kind == "p"


def partitions(session: Session) -> list[Partition]:
    """The partitions of ``events``, oldest first, the DEFAULT partition last (none on SQLite)."""
    if not is_partitioned(session):
        return []
    rows = session.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('events')"
        )
    ).all()
    found = []
    for name, bound in rows:
        match = _BOUNDS.search(bound or "")
        if match is None:
            found.append(Partition(name, None, None))
        else:
            start, end = (datetime.fromisoformat(value) for value in match.groups())
            found.append(Partition(name, start, end))
    return sorted(found, key=lambda p: (p.start is None, p.start or datetime.min))


def _lock_timeout(session: Session) -> None:
    session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))


def _create_partition(session: Session, month: date) -> None:
    name, end = partition_name(month), next_month(month)
    session.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF events "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
    )


def _move_out_of_default(session: Session, month: date) -> int:
    """Give the rows DEFAULT holds for ``month`` their own partition; return how many moved.

    Creating a partition whose range DEFAULT holds rows of fails, so the rows leave
    DEFAULT first (into a temporary table, same transaction) and come back through
    the parent, which now routes them to the new partition. Ids are kept.
    """
    bounds = {"start": datetime.combine(month, datetime.min.time())}
    bounds["end"] = datetime.combine(next_month(month), datetime.min.time())
    session.execute(
        text(
            "CREATE TEMPORARY TABLE IF NOT EXISTS moving_events "
            "(LIKE events INCLUDING DEFAULTS) ON COMMIT DROP"
        )
    )
    moved = session.execute(
        text(
            f"WITH gone AS (DELETE FROM {DEFAULT_PARTITION} "
            "WHERE occurred_at >= :start AND occurred_at < :end RETURNING *) "
            "INSERT INTO moving_events SELECT * FROM gone"
        ),
        bounds,
    ).rowcount  # type: ignore[attr-defined]
    _create_partition(session, month)
    session.execute(text("INSERT INTO events SELECT * FROM moving_events"))
    session.execute(text("DELETE FROM moving_events"))
    return int(moved or 0)


@dataclass
class PartitionsMade:
    """What :func:`ensure_partitions` did."""

    created: list[str] = field(default_factory=list)
    #: Rows the DEFAULT partition had caught, now in partitions of their months.
    moved: int = 0


def ensure_partitions(session: Session, now: datetime, ahead: int) -> PartitionsMade:
    """Create the partitions of this month and ``ahead`` more; empty the DEFAULT partition.

    Idempotent: what exists is left alone. Nothing on a database where ``events`` is
    not partitioned (SQLite).
    """
    made = PartitionsMade()
    if not is_partitioned(session):
        return made
    _lock_timeout(session)
    existing = {p.name for p in partitions(session)}
    caught = session.execute(
        text(f"SELECT DISTINCT date_trunc('month', occurred_at) FROM {DEFAULT_PARTITION}")
    ).scalars()
    for moment in sorted(caught):
        month = month_of(moment)
        made.moved += _move_out_of_default(session, month)
        made.created.append(partition_name(month))
        existing.add(partition_name(month))
    month = month_of(now)
    for _ in range(ahead + 1):
        if partition_name(month) not in existing:
            _create_partition(session, month)
            made.created.append(partition_name(month))
        month = next_month(month)
    return made


@dataclass
class Pruned:
    """What :func:`prune` removed, and what it kept back for the warehouse."""

    cutoff: datetime
    events: int = 0
    dead_letters: int = 0
    dropped: list[str] = field(default_factory=list)
    #: Partitions past the horizon kept because they hold events the warehouse lacks.
    kept_for_warehouse: list[str] = field(default_factory=list)


def prune(
    session: Session, older_than: timedelta, now: datetime, keep_from_id: int | None = None
) -> Pruned:
    """Remove raw events and dead letters older than ``now - older_than``; never aggregates.

    PostgreSQL: a month partition goes whole, once all of its month lies before the
    cutoff (so up to a month more than the horizon is kept), and never while it holds
    an event with ``id >= keep_from_id`` (what the warehouse has not yet received).
    SQLite: the events dated before the cutoff are deleted, those with
    ``id >= keep_from_id`` excepted.
    """
    result = Pruned(cutoff=now - older_than)
    one_at_a_time(session, "retention")  # two prunes at once would race on the horizon
    events = StoredEvent.__table__
    assert isinstance(events, Table)
    horizon: datetime | None = result.cutoff
    if is_partitioned(session):
        ensure_partitions(session, now, ahead=0)  # empties DEFAULT into month partitions
        partitions_before = partitions(session)
        for part in partitions_before:
            if part.end is None or part.end > result.cutoff:
                continue
            count, newest = session.execute(
                text(f"SELECT count(*), max(id) FROM {part.name}")
            ).one()
            if keep_from_id is not None and newest is not None and newest >= keep_from_id:
                result.kept_for_warehouse.append(part.name)
                continue
            session.execute(text(f"DROP TABLE {part.name}"))
            result.dropped.append(part.name)
            result.events += int(count)
        # Whole months went: every event before the end of the last one dropped may be gone.
        ends = [p.end for p in partitions_before if p.name in result.dropped and p.end]
        horizon = max(ends) if ends else None
    else:
        stmt = delete(events).where(events.c.occurred_at < result.cutoff)
        if keep_from_id is not None:
            stmt = stmt.where(events.c.id < keep_from_id)
        result.events = int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
    gone = session.execute(delete(DeadLetter).where(DeadLetter.received_at < result.cutoff))
    result.dead_letters = int(gone.rowcount or 0)  # type: ignore[attr-defined]
    if horizon is not None and (result.events or result.dropped):
        _move_horizon(session, horizon)
    return result


def _move_horizon(session: Session, horizon: datetime) -> None:
    row = session.get(RawHorizon, 1)
    if row is None:
        session.add(RawHorizon(id=1, pruned_before=horizon))
    elif row.pruned_before < horizon:
        row.pruned_before = horizon
    session.flush()


def pruned_before(session: Session) -> datetime | None:
    """Raw events dated before this may have been pruned (None: nothing ever was)."""
    return session.execute(select(RawHorizon.pruned_before)).scalar()
