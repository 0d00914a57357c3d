"""The dashboard queries in BigQuery SQL: they parse in sqlglot's BigQuery dialect and say what
our reports say (same rows, a tenant's events, event time, one row per event)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from analytics.reports import REPORTS
from analytics.warehouse.rows import PARTITION_COLUMN, SCHEMA

SQL_DIR = Path(__file__).resolve().parents[2] / "analytics" / "warehouse" / "sql"
#: Query file -> the report it reproduces.
QUERIES = {
    "revenue_by_day.sql": "revenue-by-day",
    "top_products.sql": "top-products",
    "activity_heatmap.sql": "activity-heatmap",
}
COLUMNS = {name for name, _, _ in SCHEMA}


def parse(name: str) -> Any:
    return sqlglot.parse_one((SQL_DIR / name).read_text(), read="bigquery")


def test_every_sql_file_is_one_of_the_dashboard_queries():
    assert sorted(p.name for p in SQL_DIR.glob("*.sql")) == sorted(QUERIES)


@pytest.mark.parametrize(("name", "report"), QUERIES.items())
def test_a_query_returns_the_columns_of_its_report(name, report):
    query = parse(name)
    assert isinstance(query, exp.Select)
    assert tuple(query.named_selects) == REPORTS[report].columns


@pytest.mark.parametrize("name", QUERIES)
def test_a_query_reads_only_the_sinks_table_and_its_columns(name):
    query = parse(name)
    ctes = {cte.alias for cte in query.find_all(exp.CTE)}
    tables = {t.name for t in query.find_all(exp.Table)} - ctes
    assert tables == {"events"}
    aliases = {a.alias for a in query.find_all(exp.Alias)} | {"item"}
    unknown = {c.name for c in query.find_all(exp.Column)} - COLUMNS - aliases
    assert not unknown, f"{name} uses columns the table does not have: {unknown}"


@pytest.mark.parametrize("name", QUERIES)
def test_a_query_filters_one_tenant_by_event_time_and_counts_each_event_once(name):
    query = parse(name)
    sql = query.sql("bigquery")
    assert {p.name for p in query.find_all(exp.Parameter)} >= {
        "tenant_id",
        "start_date",
        "end_date",
    }
    assert "tenant_id = @tenant_id" in sql
    # The partition column bounds the range on both sides (BigQuery reads only those days).
    assert f"{PARTITION_COLUMN} >= TIMESTAMP(@start_date)" in sql
    assert f"{PARTITION_COLUMN} < TIMESTAMP(DATE_ADD(@end_date, INTERVAL '1' DAY))" in sql
    # insertId deduplication is best effort: the queries keep one row per event themselves.
    dedup = [
        w
        for w in query.find_all(exp.Window)
        if isinstance(w.this, exp.RowNumber)
        and [c.name for c in w.args["partition_by"]] == ["event_id"]
    ]
    assert dedup


def test_money_is_cast_before_it_is_summed():
    """JSON_VALUE returns STRING; the seed's SUM(JSON_EXTRACT_SCALAR(...)) fails in BigQuery."""
    for name in ("revenue_by_day.sql", "top_products.sql"):
        for total in parse(name).find_all(exp.Sum):
            assert not isinstance(total.this, exp.JSONExtractScalar | exp.JSONExtract), name


def test_revenue_is_per_currency_and_refunds_are_netted():
    sql = parse("revenue_by_day.sql").sql("bigquery")
    assert "GROUP BY date, currency" in sql
    assert "event_type = 'payment.refunded'" in sql
    assert "net_revenue" in sql and "order.cancelled" not in sql
