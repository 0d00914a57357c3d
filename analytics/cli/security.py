"""`analytics security`: least-privilege credentials for each role of the pipeline.

`redis-acl` prints a Redis ACL file with one user per role (producers, the bridge,
the workers, beat, an administrator) and the default user switched off;
`pg-roles` prints the SQL that splits PostgreSQL access into an ingest role (the
workers write) and a report role (reports and the HTTP API read). Both are
derived from the settings (channel pattern, beat's key prefix) and from the
queue and table definitions, so they name exactly what the processes touch.
The trust model they implement is in the README's "Security" section.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import click

from analytics.cli import _settings, main
from analytics.config import Settings

#: The roles that get a Redis user, in the order the ACL file lists them.
REDIS_ROLES = ("producer", "bridge", "worker", "beat", "admin")

#: Commands every internal process (bridge, workers, beat) may run: all but the
#: dangerous ones (CONFIG, FLUSHALL, KEYS, DEBUG, SHUTDOWN, MONITOR, ACL, ...),
#: then back the few harmless ones of that category the Celery clients use.
_INTERNAL_COMMANDS = "-@all +@all -@dangerous +info +client|setname +client|id"
#: A producer publishes and appends, nothing else (AUTH, HELLO and PING to connect).
_PRODUCER_COMMANDS = "-@all +publish +xadd +ping +hello +client|setname"

#: kombu's Redis transport: queue bindings (``_kombu.binding.*`` and
#: ``_kombu.binding_permanent.*``), and the messages delivered and not yet
#: acknowledged (with their index and the lock of the restore sweep).
_KOMBU_KEYS = ("_kombu.binding*", "unacked", "unacked_index", "unacked_mutex")
#: Celery's result keys and channels: a sender subscribes to its task's result
#: channel (``analytics backfill --wait`` reads the results).
_RESULT_KEYS = ("celery-task-meta-*",)
#: Remote control (``celery inspect``, Flower): each worker's command queue and a
#: reply queue per caller, with kombu's priority suffixes.
_PIDBOX_KEYS = ("*.celery.pidbox*",)
#: A worker's own event queue (gossip with the other workers).
_EVENT_KEYS = ("celeryev.*",)
#: The delivery ledger (tasks/ledger.py) keeps its keys under this prefix.
_LEDGER_KEYS = ("analytics:ledger:*",)


@dataclass(frozen=True)
class RedisUser:
    """One line of the ACL file: who, with which password, may run what on which keys
    and channels."""

    name: str
    commands: str
    keys: tuple[str, ...]
    channels: tuple[str, ...]

    def line(self, password: str) -> str:
        digest = hashlib.sha256(password.encode()).hexdigest()
        keys = " ".join(f"~{key}" for key in self.keys) or ""
        channels = " ".join(f"&{channel}" for channel in self.channels)
        parts = ["user", self.name, "on", f"#{digest}", "resetkeys", keys, "resetchannels"]
        parts += [channels, self.commands]
        return " ".join(part for part in parts if part)


def _queue_keys() -> tuple[str, ...]:
    from tasks.queues import QUEUES

    # A queue with priorities is several lists: the name, then name + separator + step.
    return tuple(f"{queue}*" for queue in QUEUES)


def _fanout_channels(settings: Settings) -> tuple[str, ...]:
    """kombu's fanout exchanges (remote control, task events): channels ``/<db>.<exchange>``.

    Publishing is checked against ``/<db>.*``; a worker subscribes with patterns
    (remote control, its peers' events), and Redis compares a pattern
    subscription with the allowed ones literally, so those are named exactly.
    """
    db = urlsplit(settings.celery_broker_url).path.strip("/") or "0"
    return (f"/{db}.*", f"/{db}.celery.pidbox", f"/{db}.celeryev/worker.*")


def redis_users(settings: Settings, prefix: str = "analytics-") -> list[RedisUser]:
    """The Redis users of a deployment with these settings."""
    events = settings.event_channel_pattern
    broker = (*_queue_keys(), *_KOMBU_KEYS)
    fanout = _fanout_channels(settings)
    return [
        # Rust services: PUBLISH and XADD on the event channels and streams, nothing else
        RedisUser(
            f"{prefix}producer",
            _PRODUCER_COMMANDS,
            (events,),
            (events,),
        ),
        # The bridge: reads the events, sends batches to the queues, keeps the ledger
        RedisUser(
            f"{prefix}bridge",
            _INTERNAL_COMMANDS,
            (events, *broker, *_LEDGER_KEYS, *_RESULT_KEYS),
            (events, *fanout, *_RESULT_KEYS),
        ),
        # Workers: take and acknowledge batches, clear them from the ledger
        RedisUser(
            f"{prefix}worker",
            _INTERNAL_COMMANDS,
            (*broker, *_LEDGER_KEYS, *_RESULT_KEYS, *_PIDBOX_KEYS, *_EVENT_KEYS),
            (*fanout, *_RESULT_KEYS),
        ),
        # Beat: its schedule and lock, and sending the rollup tasks
        RedisUser(
            f"{prefix}beat",
            _INTERNAL_COMMANDS,
            (f"{settings.beat_key_prefix}*", *broker, *_RESULT_KEYS),
            (*fanout, *_RESULT_KEYS),
        ),
        # Operators (redis-cli, backups, Flower): everything
        RedisUser(
            f"{prefix}admin",
            "+@all",
            ("*",),
            ("*",),
        ),
    ]


#: Characters a tenant bound to its channels cannot have: they would end its
#: channel's last segment (``:``) or be glob syntax in the ACL's patterns.
_NOT_IN_BOUND_TENANT = set(":*?[]\\ \t\n")


def tenant_producer(settings: Settings, tenant: str, prefix: str = "analytics-") -> RedisUser:
    """A producer for one tenant (TENANT_FROM_CHANNEL): only channels and streams ending
    with ``:<tenant>``, on which the bridge accepts that tenant's events only."""
    if not tenant or _NOT_IN_BOUND_TENANT.intersection(tenant):
        raise ValueError(f"tenant {tenant!r} cannot be bound to channels (no ':', '*', '?', '[')")
    channels = f"{settings.channel_prefix}*:{tenant}"
    return RedisUser(
        f"{prefix}producer-{tenant}",
        _PRODUCER_COMMANDS,
        (channels,),
        (channels,),
    )


def redis_acl(
    settings: Settings,
    passwords: dict[str, str],
    prefix: str = "analytics-",
    tenant_passwords: dict[str, str] | None = None,
) -> str:
    """The ACL file: one user per role (and per tenant's producers), passwords stored as
    SHA-256, the default user off."""
    # An ACL file holds user lines only: Redis refuses to load one with comments.
    lines = ["user default off resetkeys resetchannels -@all"]
    for user in redis_users(settings, prefix):
        lines.append(user.line(passwords[user.name.removeprefix(prefix)]))
    for tenant, password in (tenant_passwords or {}).items():
        lines.append(tenant_producer(settings, tenant, prefix).line(password))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ PostgreSQL

#: Tables the report role writes: the rollups a report refreshes before it reads
#: (DAU/WAU/MAU, response-time percentiles, monthly stock, payment-failure alerts, retention
#: cohorts, conversion and logins of days that received late events, users' spans of days).
REPORT_WRITES = (
    "active_users_daily",
    "daily_percentiles",
    "stock_monthly",
    "rollup_dirty_days",
    "alerts",
    "cohort_sizes",
    "cohort_weeks",
    "daily_conversion",
    "daily_logins",
    "user_hours",
    "city_users",
)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


def pg_roles_sql(prefix: str = "analytics") -> str:
    """SQL that creates the ingest and report roles (NOLOGIN groups) and grants their rights.

    Run it as the role that ran ``analytics migrate`` (the tables' owner), in the
    analytics database; then create login roles ``IN ROLE`` these groups.
    """
    from analytics.models import Base

    if not _IDENTIFIER.match(prefix):
        raise click.BadParameter(
            "lower-case letters, digits and _ only, starting with a letter", param_hint="--prefix"
        )
    ingest, report = f"{prefix}_ingest", f"{prefix}_report"
    tables = sorted(table.name for table in Base.metadata.sorted_tables)
    for name in REPORT_WRITES:
        assert name in tables, f"{name} is not a table"
    writes = ", ".join(REPORT_WRITES)
    return f"""\
-- PostgreSQL roles of the analytics pipeline. Run as the owner of the tables (the
-- role `analytics migrate` connects as), in the analytics database.
CREATE ROLE {ingest} NOLOGIN;
CREATE ROLE {report} NOLOGIN;

-- Ingest (workers, `deadletters replay`, `backfill`): read and write rows, never
-- change the schema ({len(tables)} tables).
GRANT USAGE ON SCHEMA public TO {ingest};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ingest};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ingest};

-- Reports (`analytics report`, `analytics serve`): read everything, and write only
-- the rollups a report refreshes before it reads.
GRANT USAGE ON SCHEMA public TO {report};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {report};
GRANT INSERT, UPDATE, DELETE ON {writes} TO {report};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {report};

-- Tables a later migration adds get the same rights.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ingest};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ingest};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {report};

-- Then one login per process kind, e.g.:
--   CREATE ROLE analytics_worker LOGIN PASSWORD '...' IN ROLE {ingest};
--   CREATE ROLE analytics_api LOGIN PASSWORD '...' IN ROLE {report};
"""


# ------------------------------------------------------------------------ commands


@main.group()
def security() -> None:
    """Least-privilege credentials: Redis ACL users and PostgreSQL roles per role."""


def _password_option(role: str) -> click.Option:
    variable = f"REDIS_{role.upper()}_PASSWORD"
    return click.Option(
        [f"--{role}-password"],
        envvar=variable,
        required=True,
        help=f"Password of the {role} user (default {variable}).",
    )


@security.command("redis-acl", params=[_password_option(role) for role in REDIS_ROLES])
@click.option(
    "--user-prefix",
    default="analytics-",
    show_default=True,
    help="Prefix of the user names (analytics-producer, analytics-bridge, ...).",
)
@click.option(
    "--tenant-producer",
    "tenant_producers",
    multiple=True,
    metavar="TENANT=PASSWORD",
    help="Also a producer user for one tenant (analytics-producer-TENANT) that may publish "
    "only on channels ending with :TENANT; with TENANT_FROM_CHANNEL=1 it cannot speak for "
    "another tenant. Repeat for more.",
)
def redis_acl_command(
    user_prefix: str, tenant_producers: tuple[str, ...], **passwords: str
) -> None:
    """Print a Redis ACL file: one user per role, the default user off.

    \b
    producer  PUBLISH and XADD on EVENT_CHANNEL_PATTERN (events:*) only
    bridge    reads the events; writes the Celery queues and the delivery ledger
    worker    the Celery queues, the ledger and task results
    beat      its schedule and lock (BEAT_KEY_PREFIX) and the queues
    admin     everything (operators, Flower)

    None may run CONFIG, FLUSHALL, KEYS, DEBUG, SHUTDOWN or ACL but admin.
    Passwords come from the options or REDIS_<ROLE>_PASSWORD and are written as
    SHA-256 digests. Load it with `redis-server --aclfile FILE` and give each
    process its user in its URLs: redis://analytics-bridge:PASSWORD@host:6379/0.
    """
    settings = _settings()
    given = {name.removesuffix("_password"): value for name, value in passwords.items()}
    empty = [role for role, value in given.items() if not value]
    if empty:
        raise click.ClickException(f"empty password for {', '.join(empty)}")
    tenants: dict[str, str] = {}
    for spec in tenant_producers:
        tenant, _, password = spec.partition("=")
        if not password:
            raise click.BadParameter(
                f"{spec!r} is not TENANT=PASSWORD", param_hint="--tenant-producer"
            )
        tenants[tenant] = password
    try:
        acl = redis_acl(settings, given, user_prefix, tenants)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant-producer") from None
    click.echo(acl, nl=False)


@security.command("pg-roles")
@click.option(
    "--prefix",
    default="analytics",
    show_default=True,
    help="Prefix of the role names: PREFIX_ingest and PREFIX_report.",
)
def pg_roles_command(prefix: str) -> None:
    """Print the SQL that creates the ingest (write) and report (read) roles.

    Run it with psql as the tables' owner, after `analytics migrate`:
    `analytics security pg-roles | psql -d analytics`. Migrations keep running
    as the owner; workers log in as a member of PREFIX_ingest, reports and the
    HTTP API as a member of PREFIX_report.
    """
    click.echo(pg_roles_sql(prefix), nl=False)
