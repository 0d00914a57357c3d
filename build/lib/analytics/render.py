"""Rows as text: a JSON array, CSV with a header row, or an aligned table.

Shared by the command line (`report`, `deadletters list`) and the HTTP API, so that both
print the same JSON and CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Sequence
from typing import Any

import orjson

#: A table cell's width at most: a longer value is cut with "…" (CSV and JSON keep it whole).
MAX_CELL = 60


def _cell(value: Any, two_decimals: bool = False) -> str:
    if value is None:
        return ""
    if two_decimals and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.2f}"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def render(
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    two_decimals: Collection[str] = (),
) -> str:
    """Rows as JSON (an array of objects), CSV (with a header row) or an aligned table.

    Columns in ``two_decimals`` (money) print with exactly two decimals in CSV and tables
    (``3299.50``, ``0.00``); JSON keeps numbers as numbers.
    """
    if fmt == "json":
        return orjson.dumps(rows).decode()
    cells = [[_cell(row.get(c), c in two_decimals) for c in columns] for row in rows]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buffer.getvalue().rstrip("\n")
    cut = any(len(value) > MAX_CELL for line in cells for value in line)
    if cut:
        cells = [[_shorten(value) for value in line] for line in cells]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if v and _numeric(v) else v.ljust(w)
            for v, w in zip(values, widths, strict=True)
        ).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(values) for values in cells]
    if not rows:
        out.append("(no rows)")
    if cut:
        out.append(
            f"(values longer than {MAX_CELL} characters are cut; csv and json show them whole)"
        )
    return "\n".join(out)


def _shorten(value: str) -> str:
    return value if len(value) <= MAX_CELL else value[: MAX_CELL - 1] + "…"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
