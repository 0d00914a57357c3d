"""The ``analytics`` command: run the pipeline's processes, publish events, simulate traffic.

Every command reads its configuration from the environment (see ``analytics.config``)
and reports errors as one line on stderr with a non-zero exit.

This module owns the click group ``main`` and the helpers every command shares (logging,
settings, error lines, dates); the commands live one module per group and register on
``main`` when imported at the bottom of this file.
"""

from __future__ import annotations

import logging
import sys
from datetime import date

import click

from analytics.config import Settings, get_settings
from analytics.errors import AnalyticsError

log = logging.getLogger("analytics")


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def describe(exc: BaseException) -> str:
    """One line that says what went wrong (a driver's first line, without SQLAlchemy's notes)."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else 'no details'}"


def _settings() -> Settings:
    try:
        return get_settings()
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Analytics event pipeline: Redis pub/sub -> bridge -> Celery -> SQL aggregates.

    Configuration comes from the environment: REDIS_URL, EVENT_CHANNEL_PATTERN,
    CELERY_BROKER_URL, DATABASE_URL (default sqlite:///analytics.db), PII_SALT.
    Start everything at once with `analytics up`, or each process on its own.
    """


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.ClickException(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


#: ``--format table|json|csv``: every command that prints rows takes it the same way.
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="table for people; json (one array of row objects) or csv for programs.",
)


# The command modules register their commands on `main` as they are imported.
from analytics.cli import (  # noqa: E402
    keys,
    maintenance,
    monitor,
    processes,
    reports,
    security,
    serve,
    traffic,
)

__all__ = [
    "describe",
    "keys",
    "main",
    "maintenance",
    "monitor",
    "processes",
    "reports",
    "security",
    "serve",
    "traffic",
]
