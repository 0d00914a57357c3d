"""What the command line says when a service is down, a database is not migrated or a URL is
wrong: one line that names the service, where it was looked for and what to do.

:func:`expected_failure` turns such an exception into that line (or None for a real bug, which
keeps its traceback); :class:`OneLineErrors` applies it to every command of the group.
"""

from __future__ import annotations

from typing import Any

import click

from analytics.config import safe_url


def first_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message (a driver's, if it wraps one)."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else 'no details'}"


def _setting(name: str) -> str:
    """Where a setting points, without its password (the settings may themselves be broken)."""
    from analytics.config import get_settings

    try:
        return safe_url(getattr(get_settings(), name))
    except Exception:
        return "?"


def expected_failure(exc: BaseException) -> str | None:
    """One line for a failure of the environment (a service down, a schema not migrated, a bad
    URL), or None when ``exc`` is not one of those."""
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    from analytics.db import needs_migration
    from analytics.errors import AnalyticsError

    if isinstance(exc, AnalyticsError):
        return str(exc)
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return f"cannot reach Redis at {_setting('redis_url')} ({first_line(exc)}): is it running?"
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError):
        return f"Redis at {_setting('redis_url')} refused this client: {first_line(exc)}"
    if isinstance(exc, kombu.exceptions.OperationalError):
        return (
            f"cannot reach the Celery broker at {_setting('celery_broker_url')} "
            f"({first_line(exc)}): is it running?"
        )
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and needs_migration(exc):
        return f"{first_line(exc)} (the database is not migrated: run `analytics migrate`)"
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return (
            f"cannot reach the database at {_setting('database_url')} "
            f"({first_line(exc)}): is it running?"
        )
    if isinstance(exc, sqlalchemy.exc.ArgumentError | sqlalchemy.exc.NoSuchModuleError):
        return f"DATABASE_URL={_setting('database_url')!r} is not a database URL: {exc}"
    if isinstance(exc, ValueError) and "Redis URL must specify" in str(exc):
        return f"REDIS_URL={_setting('redis_url')!r} is not a Redis URL: {exc}"
    return None


class OneLineErrors(click.Group):
    """A group whose commands end an expected failure with one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            line = expected_failure(exc)
            if line is None:
                raise
            raise click.ClickException(line) from None
