"""A Redis database claimed by one benchmark at a time.

A benchmark empties its Redis database before it starts and again when it ends, so two
run on the same database wreck each other: the second one's start (or the first one's
end) deletes the other's queued batches and delivery ledger, and the other then stalls
and reports events lost that no code of the pipeline lost. Each claims its database
first, under :data:`CLAIM_KEY`; a claim whose process is gone (on this host) is taken
over. Emptying the database at the end takes the claim with it.
"""

from __future__ import annotations

import os
import socket

import redis

#: The key a benchmark holds in its Redis database while it uses it.
CLAIM_KEY = "analytics:benchmark:claim"


class DatabaseInUse(RuntimeError):
    """Another benchmark, still running, holds this Redis database."""


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def claim(client: redis.Redis, what: str) -> None:
    """Claim ``client``'s database for this process, or raise :class:`DatabaseInUse`."""
    host = socket.gethostname()
    mine = f"{host} {os.getpid()} {what}"
    for _ in range(2):
        if client.set(CLAIM_KEY, mine, nx=True):
            return
        held = client.get(CLAIM_KEY)
        if held is None:
            continue  # released meanwhile
        other_host, pid, other = [*_text(held).split(" ", 2), "", ""][:3]
        if other_host == host and pid.isdigit() and not _alive(int(pid)):
            client.delete(CLAIM_KEY)  # its process is gone: a leftover claim
            continue
        where = client.connection_pool.connection_kwargs.get("db", 0)
        raise DatabaseInUse(
            f"Redis database {where} is in use by another benchmark ({other or 'unknown'}, "
            f"pid {pid} on {other_host}); wait for it to finish or give this one another "
            "database with --redis-db N (it is emptied before and after the run)"
        )
    raise DatabaseInUse(f"could not claim the Redis database for {what}")
