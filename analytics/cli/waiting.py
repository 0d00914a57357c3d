"""Waiting for a service that is not there yet: long-running commands (`up`) start before
Redis or the database and go on once they answer, logging one line a try."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from analytics.cli.failures import first_line

T = TypeVar("T")

#: Longest pause between two tries (they start at 1 s and double).
MAX_DELAY = 30.0


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a service did not answer (down, starting, refusing connections),
    as opposed to a mistake that waiting will not mend (a bad URL, a refused password)."""
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    from analytics.db import needs_migration

    if isinstance(exc, redis.exceptions.AuthenticationError):
        return False
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(exc, kombu.exceptions.OperationalError):
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return not needs_migration(exc) and "password authentication failed" not in str(exc)
    return False


def wait_for(
    what: str,
    attempt: Callable[[], T],
    log: logging.Logger,
    max_delay: float = MAX_DELAY,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()``'s result, trying again with backoff (1, 2, 4 … ``max_delay`` s) while it
    fails because ``what`` does not answer; any other failure is raised at once."""
    delay, tries = 1.0, 1
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            log.warning(
                "waiting for %s (try %d, again in %.0fs): %s", what, tries, delay, first_line(exc)
            )
        sleep(delay)
        delay, tries = min(delay * 2, max_delay), tries + 1
