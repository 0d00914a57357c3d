"""Exports: one file per tenant and day, equal to the stored events, never half written."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics import export as exporting
from analytics.models import StoredEvent
from tests.analytics.helpers import apply, make


def populate(engine) -> None:
    events = [
        make("order.created", {"order_id": "o1", "total_amount": 12.5}, "2024-03-01T10:00:00Z",
             event_id="a1", tenant_id="acme"),
        make("user.logged_in", {"ip_address": "10.0.0.1"}, "2024-03-01T23:59:59.999999Z",
             event_id="a2", tenant_id="acme", metadata={"response_time_ms": 12.5}),
        make("wishlist.added", {"nested": {"k": ["v", 1]}}, "2024-03-02T00:00:00Z",
             event_id="a3", tenant_id="acme"),
        make("user.logged_in", {}, "2024-03-01T11:00:00Z", event_id="b1",
             tenant_id="tenant/with.odd chars", user_id=None),
        make("user.logged_in", {}, "2024-03-05T11:00:00Z", event_id="late", tenant_id="acme"),
    ]  # fmt: skip
    apply(engine, events)


def stored_rows(engine, since: date, until: date) -> list[dict]:
    with Session(engine) as session:
        return list(exporting.rows_between(session, since, until, None))


def as_exported(row: dict) -> dict:
    """A stored row as JSON lines shows it: times as ISO 8601 UTC with a Z."""
    shown = dict(row)
    for name in ("occurred_at", "received_at", "stored_at"):
        shown[name] = row[name].isoformat() + "Z"
    return shown


def run_export(engine, out: Path, fmt: str, tenant: str | None = None) -> exporting.Exported:
    with Session(engine) as session:
        rows = exporting.rows_between(session, date(2024, 3, 1), date(2024, 3, 2), tenant)
        return exporting.export(rows, out, fmt)


def test_jsonl_files_per_tenant_and_day_equal_the_stored_events(engine, tmp_path):
    populate(engine)
    tmp_path = tmp_path / "out"
    done = run_export(engine, tmp_path, "jsonl")
    assert done.events == 4  # "late" is after --until
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "acme/2024-03-01.jsonl",
        "acme/2024-03-02.jsonl",
        "tenant%2Fwith%2Eodd%20chars/2024-03-01.jsonl",
    ]
    lines = [
        orjson.loads(line) for name in files for line in (tmp_path / name).read_bytes().splitlines()
    ]
    expected = [as_exported(row) for row in stored_rows(engine, date(2024, 3, 1), date(2024, 3, 2))]
    assert lines == expected
    assert lines[1]["payload"]["data"] == {"ip_address": "10.0.0.1"}
    assert lines[1]["response_time_ms"] == 12.5


def test_parquet_files_equal_the_stored_events(engine, tmp_path):
    populate(engine)
    tmp_path = tmp_path / "out"
    run_export(engine, tmp_path, "parquet", tenant="acme")
    assert sorted(p.name for p in (tmp_path / "acme").iterdir()) == [
        "2024-03-01.parquet",
        "2024-03-02.parquet",
    ]
    read = []
    for name in ("2024-03-01.parquet", "2024-03-02.parquet"):
        read.extend(pq.read_table(tmp_path / "acme" / name).to_pylist())
    for row in read:
        row["payload"] = orjson.loads(row["payload"])
        for column in ("occurred_at", "received_at", "stored_at"):
            assert row[column].tzinfo is not None
            row[column] = row[column].astimezone(UTC).replace(tzinfo=None)
    expected = [
        row for row in stored_rows(engine, date(2024, 3, 1), date(2024, 3, 2))
        if row["tenant_id"] == "acme"
    ]  # fmt: skip
    assert read == expected
    assert read[1]["occurred_at"] == datetime(2024, 3, 1, 23, 59, 59, 999999)


def test_an_interrupted_export_leaves_finished_files_whole_and_no_partial_one(engine, tmp_path):
    populate(engine)
    tmp_path = tmp_path / "out"
    rows = stored_rows(engine, date(2024, 3, 1), date(2024, 3, 2))

    def interrupted():
        yield from rows[:4]  # acme's two days, then the interruption inside the next file
        raise KeyboardInterrupt

    # A file already there from an earlier run is replaced only by a whole new one.
    odd = tmp_path / exporting.tenant_dir("tenant/with.odd chars")
    odd.mkdir(parents=True)
    (odd / "2024-03-01.jsonl").write_text("earlier run\n")
    with pytest.raises(KeyboardInterrupt):
        exporting.export(interrupted(), tmp_path, "jsonl")
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert everything == [
        "acme/2024-03-01.jsonl",
        "acme/2024-03-02.jsonl",
        "tenant%2Fwith%2Eodd%20chars/2024-03-01.jsonl",
    ]
    assert (odd / "2024-03-01.jsonl").read_text() == "earlier run\n"
    assert len((tmp_path / "acme/2024-03-01.jsonl").read_bytes().splitlines()) == 2


def test_a_failing_parquet_write_leaves_no_partial_file(engine, tmp_path, monkeypatch):
    populate(engine)
    tmp_path = tmp_path / "out"
    rows = stored_rows(engine, date(2024, 3, 1), date(2024, 3, 1))

    def broken(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(exporting._Parquet, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        exporting.export(iter(rows), tmp_path, "parquet")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_the_export_command_writes_files_and_says_how_many(sqlite_url, tmp_path):
    from analytics.db import make_engine

    engine = make_engine(sqlite_url)
    populate(engine)
    engine.dispose()
    env = {"DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "analytics", "export", "--since", "2024-03-01"]
    done = subprocess.run(
        [*command, "--until", "2024-03-05", "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported 5 events to 4 files in {tmp_path / 'out'}"
    backwards = subprocess.run(
        [*command, "--until", "2024-02-01"], env=env, capture_output=True, text=True
    )
    assert backwards.returncode == 1
    assert backwards.stderr.strip() == "Error: --since 2024-03-01 is after --until 2024-02-01"


def test_parquet_without_pyarrow_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(exporting.ExportError, match=r"pip install 'analytics-pipeline\[parquet\]'"):
        exporting.check_format("parquet")


def test_a_stored_event_count_matches_what_is_exported(engine):
    populate(engine)
    with Session(engine) as session:
        assert exporting.count_between(session, date(2024, 3, 1), date(2024, 3, 2), None) == 4
        assert exporting.count_between(session, date(2024, 3, 1), date(2024, 3, 5), "acme") == 4
        assert session.execute(select(StoredEvent.id)).all()
