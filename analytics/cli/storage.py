"""The raw store's commands: `retention prune|partitions` and `export`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from analytics.cli import _settings, describe, format_option, main
from analytics.cli.maintenance import _range
from analytics.render import render


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@main.group()
def retention() -> None:
    """Keep the raw event store bounded: drop old partitions, create the coming ones.

    Aggregates (every report) are never pruned; only raw events and dead letters.
    RAW_RETENTION_DAYS makes beat prune once a day.
    """


@retention.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Age past which raw events and dead letters go: 90d, 12w, or days.",
)
@click.option(
    "--keep-from-id",
    type=click.IntRange(min=1),
    help="Keep every partition holding an event with this id or higher. With a warehouse "
    "sink configured, what it has not delivered yet is always kept.",
)
@format_option
def retention_prune(older_than: str, keep_from_id: int | None, fmt: str) -> None:
    """Remove raw events and dead letters older than the given age.

    On PostgreSQL whole monthly partitions of events are dropped, once all of their
    month is past the age (so up to a month more is kept); on SQLite the old rows
    are deleted. Events re-sent after their raw row is gone count again: see the
    README's "Retention" section.
    """
    from analytics.db import session_factory
    from analytics.retention import RetentionError, parse_age, prune
    from analytics.warehouse import undelivered_floor

    settings = _settings()
    try:
        age = parse_age(older_than)
    except RetentionError as exc:
        raise click.ClickException(f"--older-than {exc}") from None
    try:
        with session_factory().begin() as session:
            # Never past what the warehouse sink has not delivered, whatever was asked.
            floors = [f for f in (keep_from_id, undelivered_floor(session, settings)) if f]
            result = prune(session, age, _now(), min(floors, default=None))
    except Exception as exc:
        raise click.ClickException(f"prune failed: {describe(exc)}") from None
    row = {
        "cutoff": result.cutoff.isoformat(sep=" ", timespec="seconds"),
        "events": result.events,
        "dead_letters": result.dead_letters,
        "dropped": " ".join(result.dropped),
        "kept_for_warehouse": " ".join(result.kept_for_warehouse),
    }
    click.echo(render([row], tuple(row), fmt))


@retention.command("partitions")
@click.option(
    "--ahead",
    type=click.IntRange(min=0, max=120),
    help="Months to create after the current one (default: RAW_PARTITIONS_AHEAD).",
)
@format_option
def retention_partitions(ahead: int | None, fmt: str) -> None:
    """Create the coming months' partitions of events (PostgreSQL) and list them all.

    Also moves any events the DEFAULT partition caught (a month without a partition)
    into a partition of their month. `analytics migrate` and beat do the same.
    """
    from sqlalchemy import text

    from analytics.db import session_factory
    from analytics.retention import ensure_partitions, partitions

    settings = _settings()
    try:
        with session_factory().begin() as session:
            made = ensure_partitions(
                session, _now(), settings.raw_partitions_ahead if ahead is None else ahead
            )
            rows = [
                {
                    "partition": part.name,
                    "from": part.start.date().isoformat() if part.start else "DEFAULT",
                    "to": part.end.date().isoformat() if part.end else "",
                    "events": session.execute(text(f"SELECT count(*) FROM {part.name}")).scalar(),
                    "created": part.name in made.created,
                }
                for part in partitions(session)
            ]
    except Exception as exc:
        raise click.ClickException(f"partitions failed: {describe(exc)}") from None
    if not rows:
        click.echo("events is not partitioned here (SQLite): nothing to do", err=True)
        return
    click.echo(render(rows, ("partition", "from", "to", "events", "created"), fmt))


@main.command("export")
@click.option("--since", required=True, help="First day, YYYY-MM-DD (UTC event time).")
@click.option("--until", required=True, help="Last day, YYYY-MM-DD (inclusive).")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True
)
@click.option("--tenant", help="Only this tenant (default: every tenant).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("export"),
    show_default=True,
    help="Directory; files go to OUT/<tenant>/<YYYY-MM-DD>.<format>.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_command(
    since: str, until: str, fmt: str, tenant: str | None, out: Path, quiet: bool
) -> None:
    """Write the raw events of a range to files: one per tenant and UTC day.

    Streams from the database with bounded memory; each file appears under its final
    name only once complete (an interrupted export leaves none half written, and a
    rerun replaces them). Parquet needs the `parquet` extra (pyarrow). Prints
    "exported N events to M files in OUT".
    """
    from analytics import export as exporting
    from analytics.db import session_factory

    first, last = _range(since, until)
    _settings()
    try:
        exporting.check_format(fmt)
    except exporting.ExportError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with session_factory().begin() as session:
            total = 0 if quiet else exporting.count_between(session, first, last, tenant)
            rows = exporting.rows_between(session, first, last, tenant)
            if quiet:
                done = exporting.export(rows, out, fmt)
            else:
                with click.progressbar(
                    length=total, label="exporting", show_pos=True, file=sys.stderr
                ) as bar:
                    done = exporting.export(rows, out, fmt, bar.update)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: no partial file left") from None
    except OSError as exc:
        raise click.ClickException(f"export failed: {exc}") from None
    except Exception as exc:
        raise click.ClickException(f"export failed: {describe(exc)}") from None
    click.echo(f"exported {done.events:,} events to {len(done.files)} files in {out}")
