"""The ``analytics`` command: run the pipeline's processes, publish events, simulate traffic.

Every command reads its configuration from the environment (see ``analytics.config``)
and reports errors as one line on stderr with a non-zero exit.

This module owns the click group ``main`` and the helpers every command shares (logging,
settings, error lines, dates); the commands live one module per group and register on
``main`` when imported at the bottom of this file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any

import click

from analytics.cli.failures import OneLineErrors, expected_failure, first_line
from analytics.config import Settings, get_settings
from analytics.errors import AnalyticsError

log = logging.getLogger("analytics")


def _setup_logging(level: str = "INFO") -> None:
    from analytics import logs

    try:
        logs.configure(level)
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from None


def describe(exc: BaseException) -> str:
    """One line that says what went wrong (a driver's first line, without SQLAlchemy's notes),
    and what to do where that is known (:func:`~analytics.cli.failures.expected_failure`)."""
    return expected_failure(exc) or first_line(exc)


def _settings() -> Settings:
    try:
        return get_settings()
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="analytics-pipeline", prog_name="analytics")
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


def metrics_options(
    process: str, port_help: str, otherwise: str = "off"
) -> Callable[[Callable[..., Any]], Any]:
    """``--metrics-port`` and ``--metrics-host``, alike on every process that serves metrics,
    with ``<PROCESS>_METRICS_PORT`` and ``<PROCESS>_METRICS_HOST`` as their defaults."""
    port = click.option(
        "--metrics-port",
        type=click.IntRange(min=1, max=65535),
        envvar=f"{process}_METRICS_PORT",
        help=f"{port_help} (/metrics; default {process}_METRICS_PORT, else {otherwise}).",
    )
    host = click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        envvar=f"{process}_METRICS_HOST",
        help="Address the metrics server listens on (0.0.0.0 for every interface).",
    )
    return lambda command: port(host(command))


def start_metrics(start: Callable[[int, str], None], port: int, host: str) -> None:
    """Start a metrics server, or stop the command with one line saying why it cannot."""
    try:
        start(port, host)
    except OSError as exc:
        raise click.ClickException(f"cannot serve metrics on {host}:{port}: {exc}") from None


# The command modules register their commands on `main` as they are imported.
from analytics.cli import (  # noqa: E402
    keys,
    maintenance,
    monitor,
    processes,
    reports,
    security,
    serve,
    storage,
    traffic,
    warehouse,
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
    "storage",
    "traffic",
    "warehouse",
]
