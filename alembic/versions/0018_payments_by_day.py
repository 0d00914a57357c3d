"""payments counted by day; their hourly outcomes in one counter for the failure-rate alert

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 02:00:00.000000

``payments_processed`` (by currency) and ``payments_failed`` (by failure reason) were
counted by hour, for the hourly failure-rate alert alone: the ``payments`` and
``failure-reasons`` reports, which read whole days, summed up to 24 rows a day and
dimension, and took three to five times longer at 5 M events than at 0.5 M. They are
now summed into one row a day (at midnight), as every other metric but ``events``,
and the alert reads a new hourly metric, ``payment_outcomes``: one row an hour for
``processed`` and one for ``failed`` (no currency or reason), counted from the hourly
rows here.

The downgrade puts the hours back where 0017's code reads them, with every sum it
reads exact: each hour's outcome count goes back as a row of that hour under the
day's first dimension (currency or reason), and that dimension's midnight row gives
up as much (it may go below zero; a day's and a dimension's sums are unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTCOMES = {"payments_processed": "processed", "payments_failed": "failed"}
_METRICS = ", ".join(f"'{metric}'" for metric in _OUTCOMES)
_COLUMNS = "hour, count, total, tenant_id, metric, dimension"


def _midnight(postgresql: bool, column: str = "hour") -> str:
    # SQLite keeps a DateTime as text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    if postgresql:
        return f"date_trunc('day', {column})"
    return f"substr({column}, 1, 10) || ' 00:00:00.000000'"


def _case(column: str, pairs: dict[str, str]) -> str:
    """SQL mapping ``column``'s values to others (each key of ``pairs`` to its value)."""
    return f"CASE {column} " + " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in pairs.items()) + " END"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    outcome = _case("metric", _OUTCOMES)
    op.execute(
        f"""
        INSERT INTO metric_counters ({_COLUMNS})
        SELECT hour, sum(count), 0, tenant_id, 'payment_outcomes', {outcome}
        FROM metric_counters WHERE metric IN ({_METRICS})
        GROUP BY tenant_id, hour, {outcome}
        HAVING sum(count) <> 0
        """
    )
    midnight = _midnight(postgresql)
    op.execute(
        f"""
        CREATE TABLE metric_counters_payment_days AS
        SELECT {midnight} AS hour, sum(count) AS count, sum(total) AS total,
               tenant_id, metric, dimension
        FROM metric_counters WHERE metric IN ({_METRICS})
        GROUP BY tenant_id, metric, {midnight}, dimension
        """
    )
    op.execute(f"DELETE FROM metric_counters WHERE metric IN ({_METRICS})")
    op.execute(
        f"INSERT INTO metric_counters ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM metric_counters_payment_days"
    )
    op.execute("DROP TABLE metric_counters_payment_days")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    metric = _case("o.dimension", {name: metric for metric, name in _OUTCOMES.items()})
    day = _midnight(postgresql, "o.hour")
    # Each day's first dimension of each metric, and its hours after midnight.
    op.execute(
        f"""
        CREATE TABLE metric_counters_payment_hours AS
        SELECT o.hour AS hour, o.count AS count, o.tenant_id AS tenant_id,
               {metric} AS metric,
               coalesce((SELECT min(d.dimension) FROM metric_counters d
                WHERE d.tenant_id = o.tenant_id AND d.metric = {metric}
                  AND d.hour = {day}), '') AS dimension
        FROM metric_counters o
        WHERE o.metric = 'payment_outcomes' AND o.hour <> {day}
        """
    )
    op.execute(
        f"""
        UPDATE metric_counters SET count = count - coalesce((
            SELECT sum(h.count) FROM metric_counters_payment_hours h
            WHERE h.tenant_id = metric_counters.tenant_id
              AND h.metric = metric_counters.metric
              AND h.dimension = metric_counters.dimension
              AND {_midnight(postgresql, "h.hour")} = metric_counters.hour), 0)
        WHERE metric IN ({_METRICS})
        """
    )
    op.execute(
        f"INSERT INTO metric_counters ({_COLUMNS}) "
        "SELECT hour, count, 0, tenant_id, metric, dimension FROM metric_counters_payment_hours"
    )
    op.execute("DROP TABLE metric_counters_payment_hours")
    op.execute("DELETE FROM metric_counters WHERE metric = 'payment_outcomes'")
