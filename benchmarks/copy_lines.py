"""What writing rows in COPY's text format costs the worker, per row, by table.

    python -m benchmarks.copy_lines [--rows N] [--repeat N]

The writer COPYs a batch's rows into staging tables (analytics.db.copy_to_staging).
This formats ``--rows`` synthetic rows of the widest tables (every column set, JSON
and times included) both ways and prints CPU microseconds a row: the line function
generated once a table (what the worker runs) and a generator joined per row (what it
ran before, kept here as the reference; both must write the same text).
"""

from __future__ import annotations

import argparse
import time
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from analytics.db import _copy_formatter, _copy_line
from analytics.models import MetricCounter, Order, StoredEvent


def synthetic_rows(table: Table, count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        row: dict[str, Any] = {}
        for column in table.columns:
            try:
                kind = column.type.python_type
            except NotImplementedError:
                kind = dict
            if kind is int:
                row[column.name] = i
            elif kind is str:
                row[column.name] = f"value-{i}-{column.name}"
            elif kind is datetime:
                row[column.name] = datetime(2026, 12, 7, 10, i % 60)
            elif kind is date:
                row[column.name] = date(2026, 12, 7)
            elif kind is dict:
                row[column.name] = {"n": i, "text": "x" * 50}
            else:
                row[column.name] = None
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500, help="rows a batch (default 500)")
    parser.add_argument("--repeat", type=int, default=200, help="batches timed (default 200)")
    args = parser.parse_args()
    dialect = postgresql.psycopg2.dialect()
    for model in (StoredEvent, MetricCounter, Order):
        table = cast(Table, model.__table__)
        rows = synthetic_rows(table, args.rows)
        columns = [column for column in table.columns if column.name in rows[0]]

        def joined(columns: list[Any] = columns, rows: list[dict[str, Any]] = rows) -> str:
            fields = [(c.name, _copy_formatter(c, dialect)) for c in columns]
            return "".join(
                "\t".join("\\N" if (v := row[name]) is None else fmt(v) for name, fmt in fields)
                + "\n"
                for row in rows
            )

        def generated(columns: list[Any] = columns, rows: list[dict[str, Any]] = rows) -> str:
            line = _copy_line(tuple(c.name for c in columns))(
                *(_copy_formatter(c, dialect) for c in columns)
            )
            return "".join(map(line, rows))

        assert joined() == generated(), table.name
        figures = []
        for way in (joined, generated, joined, generated):
            started = time.process_time()
            for _ in range(args.repeat):
                way()
            spent = time.process_time() - started
            figures.append(f"{way.__name__} {spent / args.repeat / args.rows * 1e6:.2f}")
        print(f"{table.name:<16} {len(columns):>2} columns, us a row: {', '.join(figures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
