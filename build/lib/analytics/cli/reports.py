"""The `report` command (rows rendered by :meth:`analytics.reports.Report.render`)."""

from __future__ import annotations

import click

from analytics.cli import _day, _settings, describe, format_option, main

__all__ = ["REPORT_NAMES", "report"]


#: Report names, listed here so that `--help` needs no database imports (a test
#: keeps it equal to analytics.reports.REPORTS).
REPORT_NAMES = (
    "revenue-by-day", "top-products", "activity-heatmap", "dau", "wau", "mau", "retention",
    "aov", "conversion", "sessions", "payments", "failure-reasons", "geo", "inventory",
    "dead-stock", "alerts", "logins", "operations",
)  # fmt: skip


@main.command(
    epilog="\b\nReports: "
    + ", ".join(REPORT_NAMES)
    + ".\n\nDefinitions of every number: docs/reports.md."
)
@click.argument("name")
@click.option("--tenant", help="Tenant whose data to report (required).")
@click.option("--since", help="First day, YYYY-MM-DD (UTC, inclusive).")
@click.option("--until", help="Last day, YYYY-MM-DD (UTC, inclusive).")
@format_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="top-products: rows per currency.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="dead-stock: days without a sale.",
)
def report(
    name: str,
    tenant: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    limit: int,
    days: int,
) -> None:
    """Print report NAME for one tenant.

    --format json prints one JSON array of row objects and nothing else; csv has a
    header row; table is aligned for reading. Money is rounded to 2 decimals (printed
    as 12.50 in table and csv, a number in json).
    """
    from analytics.db import session_factory
    from analytics.reports import REPORTS, Query, ReportError, run, tenants

    settings = _settings()
    if name not in REPORTS:
        raise click.ClickException(f"unknown report {name!r}; choose from {', '.join(REPORTS)}")
    if not tenant:
        raise click.ClickException("--tenant is required: every report is for one tenant")
    first, last = _day(since, "--since"), _day(until, "--until")
    try:
        query = Query(
            tenant, first, last, limit=limit, days=days, default_currency=settings.default_currency
        )
        with session_factory().begin() as session:
            rows = run(session, name, query)
            known = tenants(session) if not rows else []
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"report failed: {describe(exc)}") from None
    click.echo(REPORTS[name].render(rows, fmt))
    if not rows and tenant not in known:
        # On stderr, so that json and csv on stdout stay what a program expects.
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        click.echo(
            f"no events stored for tenant {tenant!r}; tenants with data: {shown or 'none yet'}",
            err=True,
        )
