"""Rows as text: money with two decimals in tables and CSV, long cells cut in tables only."""

from __future__ import annotations

import csv
import io

import orjson

from analytics.render import MAX_CELL, render

ROWS = [
    {"day": "2024-03-04", "revenue": 3299.5, "orders": 3, "note": "x" * (MAX_CELL + 15)},
    {"day": "2024-03-05", "revenue": 0.0, "orders": 0, "note": None},
]
COLUMNS = ("day", "revenue", "orders", "note")


def test_money_has_two_decimals_in_csv_and_tables_and_stays_a_number_in_json():
    assert orjson.loads(render(ROWS, COLUMNS, "json", ("revenue",))) == ROWS
    parsed = list(csv.reader(io.StringIO(render(ROWS, COLUMNS, "csv", ("revenue",)))))
    assert [line[1:3] for line in parsed] == [
        ["revenue", "orders"],
        ["3299.50", "3"],
        ["0.00", "0"],
    ]
    table = render(ROWS, COLUMNS, "table", ("revenue",)).splitlines()
    assert table[2].split()[1:3] == ["3299.50", "3"]
    assert table[3].split()[1:3] == ["0.00", "0"]
    # Without the column named, a number prints as Python writes it.
    assert render(ROWS, COLUMNS, "csv").splitlines()[1].split(",")[1] == "3299.5"


def test_long_values_are_cut_in_tables_only_and_the_table_says_so():
    table = render(ROWS, COLUMNS, "table").splitlines()
    assert max(len(line) for line in table[:-1]) < 10 + 10 + 8 + MAX_CELL + 6
    assert table[2].endswith("x" * (MAX_CELL - 1) + "…")
    assert table[-1] == (
        f"(values longer than {MAX_CELL} characters are cut; csv and json show them whole)"
    )
    assert "x" * (MAX_CELL + 15) in render(ROWS, COLUMNS, "csv")
    short = render([{"day": "d", "note": "short"}], ("day", "note"), "table")
    assert "cut" not in short
