"""The ``analytics`` command: run the pipeline's processes, publish events, simulate traffic.

Every command reads its configuration from the environment (see ``analytics.config``)
and reports errors as one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import click
import orjson

from analytics.config import Settings, get_settings
from analytics.errors import AnalyticsError

log = logging.getLogger("analytics")

#: The event the seed document publishes to test an integration.
SEED_TEST_EVENT: dict[str, Any] = {
    "event_type": "order.created",
    "tenant_id": "test-tenant",
    "data": {"order_id": "test-order", "total_amount": 99.99},
}
PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


# --------------------------------------------------------------------- migrate


def alembic_config(database_url: str) -> Any:
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False  # keep the CLI's own log format
    return config


def run_migrations(database_url: str) -> str:
    """Upgrade the database to the newest schema; return the revision it is at."""
    from alembic.script import ScriptDirectory

    from alembic import command

    config = alembic_config(database_url)
    command.upgrade(config, "head")
    return str(ScriptDirectory.from_config(config).get_current_head())


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic upgrade to head).

    Safe to run again: a database already at the newest schema is left alone.
    """
    _setup_logging()
    settings = _settings()
    try:
        revision = run_migrations(settings.database_url)
    except Exception as exc:
        raise click.ClickException(f"migration failed: {describe(exc)}") from None
    click.echo(f"database is at schema revision {revision}")


# ---------------------------------------------------------------------- bridge


@main.command()
@click.option(
    "--input",
    "source",
    type=click.Choice(["pubsub", "stream"]),
    help="What to read: Redis pub/sub channels or Redis Streams (default BRIDGE_INPUT, "
    "else pubsub).",
)
@click.option(
    "--pattern",
    help="Channel pattern to psubscribe, or stream names to read (default EVENT_CHANNEL_PATTERN).",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Events per Celery message at most.")
@click.option(
    "--flush-ms", type=click.FloatRange(min=0), help="Longest wait before a batch is sent."
)
def bridge(
    source: str | None, pattern: str | None, batch_size: int | None, flush_ms: float | None
) -> None:
    """Relay events from Redis to the Celery queues of their category.

    Reads as fast as Redis sends, groups events by type and sends each group as
    one task message when it reaches --batch-size or waited --flush-ms (while
    the workers are behind, i.e. messages wait in the group's queue, up to
    BRIDGE_MAX_HOLD_MS, default 250, for fewer and larger tasks). Survives
    Redis restarts; SIGTERM or Ctrl-C stops it after everything read is handed over.

    \b
    --input pubsub (default): PSUBSCRIBE the pattern. At-most-once: what is
      published while no bridge is subscribed is lost (run two bridges).
    --input stream: read every stream whose name matches the pattern (SCAN,
      again every 5 s) in consumer group STREAM_GROUP (default analytics), the
      event's JSON in the entry's field `data` (or `payload`). Durable: an entry
      is acknowledged only once Celery accepted its batch; a dead bridge's
      entries are claimed by another after STREAM_CLAIM_IDLE_MS (default 30000).

    Memory holds at most BRIDGE_MAX_BUFFER_BYTES (default 128 MiB) of events
    not yet sent; past it pub/sub spills to a file in BRIDGE_SPOOL_DIR (Redis is
    still drained; on a full disk, memory again, past the limit) and the stream
    input stops reading until Celery catches up. Exits 1 if the bridge failed.
    """
    from bridge.relay import Bridge, CelerySender
    from bridge.streams import StreamBridge

    _setup_logging()
    settings = _settings()
    overrides: dict[str, Any] = {}
    if source:
        overrides["bridge_input"] = source
    if pattern:
        if "*" not in pattern:
            raise click.BadParameter("needs a '*' where the category goes", param_hint="--pattern")
        overrides["event_channel_pattern"] = pattern
    if batch_size:
        overrides["bridge_batch_size"] = batch_size
    if flush_ms is not None:
        overrides["bridge_flush_ms"] = flush_ms
    settings = dataclasses.replace(settings, **overrides)
    kind = StreamBridge if settings.bridge_input == "stream" else Bridge
    relay = kind(settings, CelerySender(settings=settings))

    def _stop(signum: int, _frame: Any) -> None:
        log.info(
            "%s received: handing over what was read, then stopping", signal.Signals(signum).name
        )
        relay.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        relay.run()
    except Exception as exc:
        # Logged with its traceback by the bridge; exit non-zero for a supervisor to restart.
        raise click.ClickException(f"the bridge failed: {describe(exc)}") from None
    log.info("bridge stopped")


# ------------------------------------------------------- worker, beat, flower


def _celery_argv(extra: list[str], defaults: dict[str, str]) -> list[str]:
    argv = list(extra)
    for option, value in defaults.items():
        names = {option, *option.split("|")}
        if not any(arg.split("=", 1)[0] in names for arg in extra):
            argv += [option.split("|")[0], value]
    return argv


PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": ["-h", "--help"],
}


@main.command(context_settings=PASS_THROUGH)
@click.option(
    "-Q",
    "--queues",
    default=None,
    help="Comma-separated queues to consume (default: all of user, order, payment, "
    "inventory, misc, deadletter).",
)
@click.pass_context
def worker(ctx: click.Context, queues: str | None) -> None:
    """Run a Celery worker that ingests event batches.

    Any other option goes to `celery worker` as it is, e.g.
    `analytics worker -Q order,payment --concurrency 4`.
    """
    from tasks.app import app
    from tasks.queues import QUEUES

    names = [q.strip() for q in (queues or ",".join(QUEUES)).split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if unknown:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}",
            param_hint="-Q",
        )
    argv = ["worker", "-Q", ",".join(names), *_celery_argv(ctx.args, {"--loglevel|-l": "INFO"})]
    app.worker_main(argv)


@main.command(context_settings=PASS_THROUGH)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which schedules the periodic rollups.

    Run two on different hosts for redundancy: they share a schedule and a lock in
    Redis (REDIS_URL), one sends and the other stands by, taking over within
    1.2 x BEAT_LOCK_TIMEOUT seconds (default 30) of the active one dying.
    """
    from tasks.app import app

    app.start(["beat", *_celery_argv(ctx.args, {"--loglevel|-l": "INFO"})])


@main.command(context_settings=PASS_THROUGH)
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower, the web monitor for workers and tasks (e.g. --basic-auth=user:pass)."""
    from tasks.app import app

    app.start(["flower", *ctx.args])


# --------------------------------------------------------------------- publish


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url)


def channel_for(settings: Settings, event_type: str) -> str:
    """The channel a Rust service publishes an event type on: ``events:order:created``."""
    category, _, action = event_type.partition(".")
    return f"{settings.channel_prefix}{category}:{action or category}"


@main.command()
@click.option(
    "--event", "event_json", help="The event as a JSON object (default: the seed's test event)."
)
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="Publish every line of this JSON-lines file ('-' reads stdin).",
)
@click.option("--channel", help="Channel to publish on (default: derived from event_type).")
@click.option(
    "--raw",
    is_flag=True,
    help="Publish the text as it is, even if it is not a valid event (needs --channel); "
    "for testing how the pipeline treats bad input.",
)
@click.option(
    "--stream",
    "to_stream",
    is_flag=True,
    help="XADD each event to the stream named like its channel, in the field `data`, "
    "instead of PUBLISH (for `analytics bridge --input stream`).",
)
def publish(
    event_json: str | None, path: str | None, channel: str | None, raw: bool, to_stream: bool
) -> None:
    """Publish events on Redis pub/sub, exactly as a Rust service would.

    With no option it publishes the seed document's test event:
    order.created for tenant "test-tenant", order "test-order", 99.99.
    With --stream it adds them to Redis Streams instead.
    """
    settings = _settings()
    if event_json and path:
        raise click.UsageError("give --event or --file, not both")
    lines: list[str]
    if path:
        with click.open_file(path, "r") as handle:
            lines = [line for line in handle if line.strip()]
    else:
        lines = [event_json or orjson.dumps(SEED_TEST_EVENT).decode()]
    client = _redis(settings)

    def emit(target: str, text: str) -> Any:
        if to_stream:
            return client.xadd(target, {"data": text})
        return client.publish(target, text)

    verb = "added" if to_stream else "published"
    if raw:
        if not channel:
            raise click.UsageError("--raw needs --channel")
        for line in lines:
            emit(channel, line.rstrip("\n"))
        place = f"to stream {channel}" if to_stream else f"on {channel}"
        click.echo(f"{verb} {len(lines)} raw message(s) {place}")
        return
    sent = 0
    for number, line in enumerate(lines, 1):
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"line {number} is not JSON: {exc}") from None
        event_type = document.get("event_type") if isinstance(document, dict) else None
        if not channel and not isinstance(event_type, str):
            raise click.ClickException(f"line {number} has no event_type; pass --channel")
        target = channel or channel_for(settings, str(event_type))
        reply = emit(target, line.strip())
        sent += 1
        if len(lines) == 1 and to_stream:
            click.echo(f"added {event_type} to stream {target} (entry {reply.decode()})")
        elif len(lines) == 1:
            click.echo(f"published {event_type} on {target} ({reply} subscriber(s) received it)")
            if reply == 0:
                click.echo(
                    "warning: nobody is subscribed; is `analytics bridge` running?", err=True
                )
    if len(lines) > 1:
        click.echo(f"{verb} {sent} events")


@main.command()
@click.option("--tenants", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Events to publish.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=500.0,
    show_default=True,
    help="Events per second (0: as fast as possible).",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Days the event timestamps span, ending now.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed: the same seed gives the same stream.",
)
def simulate(tenants: int, count: int, rate: float, days: int, seed: int) -> None:
    """Publish a realistic mixed stream of all 15 event types, with a progress bar.

    Users register, log in and out, order 1-4 items, pay (some payments fail),
    get refunds; stock runs low, runs out and is restocked.
    """
    from analytics.simulate import Simulator
    from analytics.simulate import channel_for as sim_channel

    settings = _settings()
    client = _redis(settings)
    prefix = settings.channel_prefix.rstrip(":")
    simulator = Simulator(tenants=tenants, seed=seed, days=days)
    chunk = max(1, min(500, int(rate / 20) if rate else 500))
    started = time.monotonic()
    published = 0
    with click.progressbar(length=count, label="publishing", show_pos=True) as bar:
        pipe = client.pipeline(transaction=False)
        pending = 0
        for envelope in simulator.events(count):
            pipe.publish(sim_channel(envelope["event_type"], prefix), orjson.dumps(envelope))
            pending += 1
            if pending == chunk:
                pipe.execute()
                published += pending
                bar.update(pending)
                pending = 0
                if rate:
                    ahead = published / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        if pending:
            pipe.execute()
            published += pending
            bar.update(pending)
    elapsed = time.monotonic() - started
    speed = published / max(elapsed, 1e-9)
    click.echo(
        f"published {published} events for {tenants} tenant(s) in {elapsed:.1f}s ({speed:,.0f}/s)"
    )


# -------------------------------------------------------------------------- up


def _die_with_parent() -> None:
    """In a child: have Linux send SIGTERM when the parent process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes.",
)
@click.option("--no-beat", is_flag=True, help="Do not start celery beat.")
def up(concurrency: int, no_beat: bool) -> None:
    """Migrate the database, then run the bridge, a worker and beat until Ctrl-C.

    The one command a new user needs: on the default settings it stores everything
    in ./analytics.db and uses Redis on localhost. Each process logs to this terminal.
    """
    _setup_logging()
    settings = _settings()
    revision = run_migrations(settings.database_url)
    log.info("database at revision %s: %s", revision, settings.database_url.split("@")[-1])
    command = [sys.executable, "-m", "analytics"]
    specs = [("worker", [*command, "worker", "--concurrency", str(concurrency)])]
    if not no_beat:
        specs.append(("beat", [*command, "beat"]))
    specs.append(("bridge", [*command, "bridge"]))
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for name, argv in specs:
        # Own sessions, so that Ctrl-C reaches `up` alone and it stops them in
        # order; and a death signal, so that none outlives an `up` that was killed.
        children[name] = subprocess.Popen(
            argv, env=os.environ.copy(), start_new_session=True, preexec_fn=_die_with_parent
        )
        log.info("started %s (pid %d)", name, children[name].pid)
    failed = None
    while not stopping and failed is None:
        time.sleep(0.5)
        failed = next((name for name, child in children.items() if child.poll() is not None), None)
    if failed:
        log.error(
            "%s exited with code %s; stopping the others", failed, children[failed].returncode
        )
    # The bridge first, so that what it read is handed to the still-running workers.
    for name in ("bridge", "beat", "worker"):
        child = children.get(name)
        if child is None or child.poll() is not None:
            continue
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        log.info("%s stopped", name)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------- report


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.ClickException(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def render(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows as JSON (an array of objects), CSV (with a header row) or an aligned table."""
    if fmt == "json":
        return orjson.dumps(rows).decode()
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if v and _numeric(v) else v.ljust(w)
            for v, w in zip(values, widths, strict=True)
        ).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(values) for values in cells]
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
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
    header row; table is aligned for reading. Money is rounded to 2 decimals.
    """
    from analytics.db import session_factory
    from analytics.reports import REPORTS, Query, ReportError, run

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
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"report failed: {describe(exc)}") from None
    click.echo(render(rows, REPORTS[name].columns, fmt))


# -------------------------------------------------------------------- backfill


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
    """Recompute DAU/WAU/MAU rollups for a range, one task per tenant and day.

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
                    rows += rollups.active_users(session, t, d, d)
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
    payment and stock state and alerts from all of the tenant's events. One
    transaction: it applies completely or not at all.
    """
    from analytics.db import session_factory
    from analytics.ingest import Context
    from analytics.rebuild import rebuild

    settings = _settings()
    first, last = _range(since, until)
    with session_factory().begin() as session:
        counts = rebuild(session, tenant, first, last, Context.from_settings(settings))
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
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


# ----------------------------------------------------------------------- bench


@main.command(name="bench")
@click.option(
    "--tenants",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Tenants in the stream, named bench-<run>-1 .. bench-<run>-N.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Events to publish.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=1_000.0,
    show_default=True,
    help="Events per second offered (0: as fast as this process can publish).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for every event to be stored.",
)
@click.option(
    "--stall",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Give up when no new event was stored for this many seconds.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed.")
@click.option(
    "--cleanup",
    is_flag=True,
    help="Afterwards, delete every row of the bench tenants (events and aggregates).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Also write the figures here."
)
def bench_command(
    tenants: int,
    count: int,
    rate: float,
    timeout: float,
    stall: float,
    seed: int,
    cleanup: bool,
    json_path: str | None,
) -> None:
    """Measure a RUNNING deployment: publish a realistic stream, wait for it, report.

    Publishes COUNT events of `analytics simulate`'s mix of all 15 types at RATE
    events/s on the channels of EVENT_CHANNEL_PATTERN (so the running bridge takes
    them), for tenants of their own (bench-<run>-N, never a real tenant), then
    polls DATABASE_URL until every event is stored, and prints:

    \b
    - throughput: events / (last stored_at - first publish);
    - latency p50/p90/p99/max: stored_at (when a worker wrote the event) minus
      the moment this command published it; the workers' clocks must agree with
      this host's (NTP), or the figures include the skew;
    - exactness: stored events, per-type event counters and revenue per currency
      equal what was published, and no dead letters.

    The bench tenants' rows stay in the database unless --cleanup is given. Exit
    status 1 when not every event arrived or the aggregates are not exact. For the
    whole benchmark, with its own processes and targets: benchmarks/pipeline.py.
    """
    import math

    from analytics import bench
    from analytics.db import get_engine

    settings = _settings()
    client = _redis(settings)
    try:
        patterns = int(client.pubsub_numpat())
    except Exception as exc:
        raise click.ClickException(f"cannot reach Redis: {describe(exc)}") from None
    if patterns == 0:
        raise click.ClickException(
            f"nobody is subscribed to any pattern on {settings.redis_url.split('@')[-1]}: "
            "is `analytics bridge` running?"
        )
    engine = get_engine()
    stream = bench.build_stream(
        bench.simulate(count, tenants, seed),
        channel_prefix=settings.channel_prefix.rstrip(":"),
        spread=max(count / rate, 1.0) if rate else 1.0,
        default_currency=settings.default_currency,
    )
    names = f"{stream.tenants[0]} .. {stream.tenants[-1]}"
    click.echo(
        f"publishing {count:,} events for {len(stream.tenants)} tenant(s) ({names}) on "
        f"{settings.event_channel_pattern}" + (f" at {rate:,.0f}/s" if rate else "")
    )
    published = bench.publish(client, stream, rate)
    click.echo(
        f"published in {published.finished - published.started:.1f}s ({published.rate:,.0f}/s)"
    )
    if published.unreceived:
        click.echo(
            f"warning: {published.unreceived} event(s) reached no subscriber "
            f"(is the bridge subscribed to {settings.event_channel_pattern}?)",
            err=True,
        )
    waited = bench.wait_stored(
        engine,
        stream.tenants,
        len(stream),
        timeout=timeout,
        stall=stall,
        progress=lambda stored, elapsed: click.echo(
            f"  stored {stored:,}/{len(stream):,} after {elapsed:.0f}s", err=True
        ),
        progress_every=5.0,
    )
    rows = bench.fetch_stored(engine, stream.tenants)
    speed = bench.throughput(published, rows)
    delay = bench.latency(stream, published, rows)
    exact = bench.check_exact(engine, stream)

    def ms(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value * 1000:,.0f} ms"

    click.echo(f"stored       {waited.stored:,}/{len(stream):,} ({waited.reason})")
    click.echo(
        f"throughput   {speed.per_second:,.0f} events/s "
        f"(first publish -> last stored_at: {speed.seconds:.2f}s)"
    )
    click.echo(
        f"latency      p50 {ms(delay.p50)}  p90 {ms(delay.p90)}  p99 {ms(delay.p99)}  "
        f"max {ms(delay.max)} (publish -> stored_at, {delay.count:,} events)"
    )
    click.echo(f"exactness    {exact.summary()}")
    for problem in exact.problems[3:]:
        click.echo(f"  {problem}", err=True)
    if json_path:
        figures = {
            "tenants": list(stream.tenants),
            "events": len(stream),
            "offered_rate": rate,
            "publish_rate": published.rate,
            "unreceived": published.unreceived,
            "stored": waited.stored,
            "complete": waited.complete,
            "wait": waited.reason,
            "throughput": dataclasses.asdict(speed),
            "latency": dataclasses.asdict(delay),
            "exactness": dataclasses.asdict(exact),
        }
        Path(json_path).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    if cleanup:
        deleted = bench.delete_tenants(engine, stream.tenants)
        click.echo(f"cleanup      deleted {deleted:,} rows of the bench tenants")
    if not (waited.complete and exact.exact):
        sys.exit(1)
