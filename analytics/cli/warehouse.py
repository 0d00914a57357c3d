"""The `warehouse` commands: `status` (how far behind each sink is), `backfill` (send again)."""

from __future__ import annotations

import click

from analytics.cli import _settings, describe, format_option, main
from analytics.cli.maintenance import _range
from analytics.errors import AnalyticsError
from analytics.render import render

STATUS_COLUMNS = (
    "sink",
    "configured",
    "delivered_id",
    "lag_events",
    "lag_seconds",
    "delivered_at",
    "rows_delivered",
    "rejected",
    "failures",
    "last_error",
)


@main.group()
def warehouse() -> None:
    """The BigQuery sink: every stored event copied once to a BigQuery table.

    It runs as the `warehouse.deliver` task on the `warehouse` queue, sent by beat
    every WAREHOUSE_INTERVAL seconds when WAREHOUSE=bigquery, BIGQUERY_PROJECT and
    BIGQUERY_DATASET are set (BIGQUERY_TABLE, default `events`; BIGQUERY_API_ENDPOINT
    for an emulator). Start a worker for it with `analytics worker -Q warehouse`.
    """


@warehouse.command("status")
@format_option
def status(fmt: str) -> None:
    """Lag of every sink: events stored and not yet delivered, and for how long (seconds).

    Also the last delivery, rows delivered, rows BigQuery refused (kept in the
    warehouse_rejects table) and consecutive failures with the last error.
    """
    from analytics.db import session_factory
    from analytics.warehouse.sink import utcnow
    from analytics.warehouse.status import status as sink_status

    settings = _settings()
    try:
        with session_factory().begin() as session:
            rows = sink_status(session, settings, utcnow())
    except Exception as exc:
        raise click.ClickException(describe(exc)) from None
    if not rows and fmt == "table":
        click.echo("no warehouse configured (set WAREHOUSE=bigquery) and no sink has run")
        return
    click.echo(render(rows, STATUS_COLUMNS, fmt))


@warehouse.command("backfill")
@click.option("--since", required=True, help="First day (event time, UTC), YYYY-MM-DD.")
@click.option("--until", required=True, help="Last day (inclusive), YYYY-MM-DD.")
def backfill(since: str, until: str) -> None:
    """Send every stored event of a range of days to BigQuery again.

    Safe to repeat: each row carries its event's insertId, so BigQuery drops copies
    it received within its deduplication window (about a minute; older copies are
    removed by the queries' dedup on tenant_id, event_id). Runs in this process,
    beside the sink, with a progress bar; refused rows go to warehouse_rejects.
    """
    from analytics.db import session_factory
    from analytics.warehouse import backfill as refill
    from analytics.warehouse.bigquery import BigQueryTable

    settings = _settings()
    if not settings.warehouse_enabled:
        raise click.ClickException(
            "no warehouse configured: set WAREHOUSE=bigquery, BIGQUERY_PROJECT and BIGQUERY_DATASET"
        )
    first, last = _range(since, until)
    sessions = session_factory()
    try:
        with sessions.begin() as session:
            total = refill.count(session, first, last)
        if total == 0:
            click.echo(f"nothing to send: no stored event dated {first} to {last}")
            return
        table = BigQueryTable(settings)
        with click.progressbar(length=total, label="sending", show_pos=True) as bar:
            done = refill.backfill(sessions, settings, table, first, last, progress=bar.update)
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(describe(exc)) from None
    click.echo(
        f"sent {done.sent} events dated {first} to {last} to {table.table_id} "
        f"in {done.batches} batches; {done.rejected} refused"
    )
