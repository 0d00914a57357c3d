"""The maintenance commands: `backfill rollups|rebuild|replay` and `deadletters list|replay`."""

from __future__ import annotations

import sys
import time
from datetime import date

import click

from analytics.cli import _day, _settings, format_option, main
from analytics.cli.traffic import publish
from analytics.render import render


@main.group()
def backfill() -> None:
    """Recompute rollups or aggregates for a range of days, or re-publish events."""


def _range(since: str, until: str) -> tuple[date, date]:
    first, last = _day(since, "--since"), _day(until, "--until")
    assert first is not None and last is not None
    if first > last:
        raise click.ClickException(f"--since {first} is after --until {last}")
    return first, last


@backfill.command("rollups")
@click.option(
    "--tenant", help="Only this tenant (default: every tenant with activity in the range)."
)
@click.option("--since", required=True, help="First day, YYYY-MM-DD.")
@click.option("--until", required=True, help="Last day, YYYY-MM-DD.")
@click.option("--wait", is_flag=True, help="Wait for the workers to finish, with a progress bar.")
@click.option(
    "--here", is_flag=True, help="Compute in this process instead of sending tasks to workers."
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="--wait: give up after this many seconds.",
)
def backfill_rollups(
    tenant: str | None, since: str, until: str, wait: bool, here: bool, timeout: int
) -> None:
    """Recompute the per-day rollups (DAU/WAU/MAU, response times), one task per tenant and day.

    Rollups are idempotent recomputations: running a backfill again, or over days
    beat already covered, leaves the same rows. The same task can be sent with
    `celery -A tasks call rollups.day --args='["TENANT", "YYYY-MM-DD"]'`.
    """
    from analytics import rollups
    from analytics.db import session_factory

    first, last = _range(since, until)
    all_days = list(rollups.days(first, last))
    with session_factory().begin() as session:
        tenants = [tenant] if tenant else rollups.active_tenants(session, first, last)
    jobs = [(t, d) for t in tenants for d in all_days]
    if not jobs:
        click.echo("nothing to do: no tenant has activity in that range")
        return
    if here:
        rows = 0
        with click.progressbar(jobs, label="recomputing", show_pos=True) as bar:
            for t, d in bar:
                with session_factory().begin() as session:
                    rows += rollups.day_rollups(session, t, d, d)
        click.echo(
            f"recomputed {len(jobs)} tenant-days for {len(tenants)} tenant(s): {rows} rollup rows"
        )
        return
    from tasks.app import app
    from tasks.queues import ROLLUP_DAY_TASK, ROLLUPS_QUEUE

    results = [
        app.send_task(ROLLUP_DAY_TASK, args=[t, d.isoformat()], queue=ROLLUPS_QUEUE)
        for t, d in jobs
    ]
    click.echo(
        f"queued {len(results)} {ROLLUP_DAY_TASK} tasks ({len(tenants)} tenant(s) x "
        f"{len(all_days)} day(s)) on queue {ROLLUPS_QUEUE}"
    )
    if not wait:
        return
    deadline = time.monotonic() + timeout
    pending = list(results)
    failed: list[str] = []
    rows = 0
    with click.progressbar(length=len(results), label="waiting for workers", show_pos=True) as bar:
        while pending:
            still = []
            for result in pending:
                if not result.ready():
                    still.append(result)
                elif result.successful():
                    rows += int((result.result or {}).get("rows", 0))
                    bar.update(1)
                else:
                    failed.append(f"{result.id}: {result.result!r}")
                    bar.update(1)
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"{len(pending)} task(s) unfinished after {timeout}s: "
                        f"is a worker consuming '{ROLLUPS_QUEUE}'?"
                    )
                time.sleep(0.2)
    click.echo(
        f"done: {len(results) - len(failed)} tenant-days recomputed, {rows} rollup rows, "
        f"{len(failed)} failed"
    )
    for line in failed:
        click.echo(f"failed: {line}", err=True)
    if failed:
        sys.exit(1)


@backfill.command("rebuild")
@click.option("--tenant", required=True, help="Tenant to rebuild.")
@click.option("--since", required=True, help="First day, YYYY-MM-DD.")
@click.option("--until", required=True, help="Last day, YYYY-MM-DD.")
def backfill_rebuild(tenant: str, since: str, until: str) -> None:
    """Recompute a tenant's per-event aggregates for a range from the raw event store.

    For after a handler fix: counters, activity, sales, logins, sessions, refunds and
    stock movements of the range are re-derived from the stored events; order,
    payment and stock state and alerts from all of the tenant's events. Once raw
    events were pruned (`analytics retention prune`), the range must start after the
    retention horizon and the state is left as it is. One transaction: it applies
    completely or not at all.
    """
    from analytics.db import session_factory
    from analytics.ingest import Context
    from analytics.rebuild import RebuildError, rebuild

    settings = _settings()
    first, last = _range(since, until)
    try:
        with session_factory().begin() as session:
            counts = rebuild(session, tenant, first, last, Context.from_settings(settings))
    except RebuildError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"rebuilt {tenant} {first}..{last}: {counts['events_in_range']} events in range, "
        f"{counts['events_replayed']} replayed for state"
    )


@backfill.command("replay")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.pass_context
def backfill_replay(ctx: click.Context, path: str) -> None:
    """Re-publish a JSON-lines file of events into the pipeline.

    Each line goes to the channel of its event_type, as a Rust service would send
    it. Events already ingested are harmless: ingestion is idempotent by event_id.
    """
    ctx.invoke(publish, path=path)


# ----------------------------------------------------------------- deadletters


@main.group()
def deadletters() -> None:
    """List messages that could not be ingested, and replay them after a fix."""


@deadletters.command("list")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (default: all).")
@click.option("--pending", is_flag=True, help="Only letters not replayed yet.")
@format_option
def deadletters_list(limit: int | None, pending: bool, fmt: str) -> None:
    """Show dead letters, oldest first: id, received_at, channel, error."""
    from analytics.db import session_factory
    from analytics.deadletters import listing

    with session_factory().begin() as session:
        rows = listing(session, limit, pending_only=pending)
    click.echo(render(rows, ("id", "received_at", "channel", "error"), fmt))


@deadletters.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Replay every letter not replayed yet.")
def deadletters_replay(ids: tuple[int, ...], everything: bool) -> None:
    """Re-run dead letters through validation; the ones that pass are ingested once.

    A letter that passes is counted like any event (an event already counted is not
    counted again) and marked replayed; one that still fails stays, with the reason.
    """
    from analytics.db import session_factory
    from analytics.deadletters import replay
    from analytics.ingest import Context

    if bool(ids) == everything:
        raise click.UsageError("give dead-letter IDs or --all")
    settings = _settings()
    with session_factory().begin() as session:
        result = replay(
            session,
            None if everything else list(ids),
            Context.from_settings(settings),
            max_bytes=settings.max_payload_bytes,
            max_depth=settings.max_json_depth,
            pii_salt=settings.pii_salt,
        )
    click.echo(
        f"replayed: {result.ingested} ingested, {result.duplicates} already counted, "
        f"{result.still_invalid} still invalid"
    )
    if result.missing:
        raise click.ClickException(
            "no pending dead letter with id " + ", ".join(map(str, result.missing))
        )
