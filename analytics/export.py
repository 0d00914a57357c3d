"""Exports of the raw store: one file per UTC day (event time) and tenant, JSON lines or Parquet.

For teams without a warehouse. Events are read once, in ``(tenant_id, occurred_at,
id)`` order, through a server-side cursor (``yield_per``), and written as they come:
memory holds one chunk of rows (and, for Parquet, one row group), whatever the range.
A file is written under a temporary name beside its final one and renamed when it is
complete, so an export that is interrupted leaves no half file under a final name
(a rerun replaces what it finds). Parquet needs ``pyarrow`` (the ``parquet`` extra).

A row is the stored event: its columns, and ``payload`` (the envelope as stored, with
PII already hashed when ``PII_SALT`` was set) as a JSON object in JSON lines and as
JSON text in Parquet.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analytics.errors import AnalyticsError
from analytics.models import StoredEvent

FORMATS = ("jsonl", "parquet")
#: Rows fetched per round trip of the server-side cursor, and per Parquet row group.
CHUNK = 5_000
#: The exported columns, in order.
COLUMNS = (
    "id",
    "tenant_id",
    "event_id",
    "event_type",
    "user_id",
    "occurred_at",
    "received_at",
    "stored_at",
    "channel",
    "known",
    "event_id_derived",
    "timestamp_derived",
    "response_time_ms",
    "payload",
)
_TIMES = ("occurred_at", "received_at", "stored_at")
#: A file being written: hidden, and with a suffix no reader takes for the real thing.
PARTIAL_SUFFIX = ".partial"


class ExportError(AnalyticsError):
    """An export that cannot run as asked (a format whose library is missing, a bad range)."""


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExportError(
            "--format parquet needs pyarrow: pip install 'analytics-pipeline[parquet]'"
        ) from None
    return pyarrow


def check_format(fmt: str) -> None:
    """Raise ExportError unless ``fmt`` can be written here."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        _pyarrow()


def tenant_dir(tenant: str) -> str:
    """A directory name for a tenant id (any text): percent-encoded, dots too (no ``..``)."""
    return quote(tenant, safe="-_@+=,").replace(".", "%2E")


def path_for(out: Path, tenant: str, day: date, fmt: str) -> Path:
    return out / tenant_dir(tenant) / f"{day.isoformat()}.{fmt}"


def _row(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in COLUMNS}


def rows_between(
    session: Session, since: date, until: date, tenant: str | None
) -> Iterator[dict[str, Any]]:
    """Stored events dated ``since``..``until`` (inclusive), by tenant, time and id; streamed."""
    table = StoredEvent.__table__
    stmt = (
        select(*(table.c[name] for name in COLUMNS))
        .where(*_range(since, until, tenant))
        .order_by(table.c.tenant_id, table.c.occurred_at, table.c.id)
        .execution_options(yield_per=CHUNK)
    )
    for event in session.execute(stmt):
        yield _row(event)


def _range(since: date, until: date, tenant: str | None) -> list[Any]:
    table = StoredEvent.__table__
    where = [
        table.c.occurred_at >= datetime.combine(since, time()),
        table.c.occurred_at < datetime.combine(until + timedelta(days=1), time()),
    ]
    if tenant is not None:
        where.append(table.c.tenant_id == tenant)
    return where


def count_between(session: Session, since: date, until: date, tenant: str | None) -> int:
    """How many events an export of the range writes (for its progress bar)."""
    stmt = select(func.count()).select_from(StoredEvent).where(*_range(since, until, tenant))
    return int(session.execute(stmt).scalar() or 0)


def _time_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


class _JsonLines:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            shown = {**row, **{name: _time_text(row[name]) for name in _TIMES}}
            self.handle.write(orjson.dumps(shown) + b"\n")

    def close(self) -> None:
        pass


class _Parquet:
    def __init__(self, handle: BinaryIO) -> None:
        pa = _pyarrow()
        self.pa = pa
        self.schema = pa.schema(
            [
                ("id", pa.int64()),
                ("tenant_id", pa.string()),
                ("event_id", pa.string()),
                ("event_type", pa.string()),
                ("user_id", pa.string()),
                ("occurred_at", pa.timestamp("us", tz="UTC")),
                ("received_at", pa.timestamp("us", tz="UTC")),
                ("stored_at", pa.timestamp("us", tz="UTC")),
                ("channel", pa.string()),
                ("known", pa.bool_()),
                ("event_id_derived", pa.bool_()),
                ("timestamp_derived", pa.bool_()),
                ("response_time_ms", pa.float64()),
                ("payload", pa.string()),
            ]
        )
        self.writer = pa.parquet.ParquetWriter(handle, self.schema, compression="zstd")

    def write(self, rows: list[dict[str, Any]]) -> None:
        columns = {name: [row[name] for row in rows] for name in COLUMNS}
        columns["payload"] = [orjson.dumps(value).decode() for value in columns["payload"]]
        self.writer.write_table(self.pa.table(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


_WRITERS: dict[str, Callable[[BinaryIO], Any]] = {"jsonl": _JsonLines, "parquet": _Parquet}


class _DayFile:
    """One (tenant, day) file: written under a partial name, renamed when closed whole."""

    def __init__(self, path: Path, fmt: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
        self.handle: BinaryIO = open(self.partial, "wb")  # noqa: SIM115 - closed in finish/abandon
        self.writer = _WRITERS[fmt](self.handle)
        self.rows = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.writer.write(rows)
        self.rows += len(rows)

    def finish(self) -> None:
        self.writer.close()
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        # Parquet's writer would otherwise write its footer to a closed file later;
        # the file is being thrown away, and the first error is the one that goes on.
        with contextlib.suppress(Exception):
            self.writer.close()
        self.handle.close()
        self.partial.unlink(missing_ok=True)


@dataclass
class Exported:
    """What an export wrote."""

    events: int = 0
    files: list[Path] = field(default_factory=list)


def export(
    rows: Iterator[dict[str, Any]],
    out: Path,
    fmt: str,
    progress: Callable[[int], None] = lambda n: None,
) -> Exported:
    """Write ``rows`` (by tenant, then time) into one file per tenant and UTC day under ``out``.

    ``progress`` is called with the number of rows each time a chunk is written. On any
    error or interruption the file being written is removed and the error goes on;
    the files finished before it stay, each complete.
    """
    check_format(fmt)
    done = Exported()
    current: _DayFile | None = None
    key: tuple[str, date] | None = None
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if current is not None and pending:
            current.write(pending)
            progress(len(pending))
            pending.clear()

    try:
        for row in rows:
            row_key = (row["tenant_id"], row["occurred_at"].date())
            if row_key != key:
                flush()
                if current is not None:
                    current.finish()
                    done.files.append(current.path)
                key = row_key
                current = _DayFile(path_for(out, *row_key, fmt), fmt)
            pending.append(row)
            done.events += 1
            if len(pending) >= CHUNK:
                flush()
        flush()
        if current is not None:
            current.finish()
            done.files.append(current.path)
            current = None
    except BaseException:
        if current is not None:
            current.abandon()
        raise
    return done
