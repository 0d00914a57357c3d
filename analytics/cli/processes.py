"""The commands that run the pipeline's processes: migrate, bridge, worker, up (beat and
flower: ``analytics.cli.monitor``).

The bridge and the Celery processes are imported inside the command bodies, so that
`analytics --help` and the other commands load neither.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click

from analytics import runtime
from analytics.cli import (
    _settings,
    _setup_logging,
    describe,
    log,
    main,
    metrics_options,
    start_metrics,
)
from analytics.cli.waiting import wait_for
from analytics.config import safe_url
from analytics.logs import log_format
from analytics.migrations import run_migrations


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic upgrade to head) and its partitions.

    Safe to run again: a database already at the newest schema is left alone.
    """
    _setup_logging()
    settings = _settings()
    try:
        revision = run_migrations(settings.database_url, settings.raw_partitions_ahead)
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
@metrics_options("BRIDGE", "Serve Prometheus metrics on this port")
def bridge(
    source: str | None,
    pattern: str | None,
    batch_size: int | None,
    flush_ms: float | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Relay events from Redis to the Celery queues of their category.

    Reads as fast as Redis sends, groups events by type and sends each group as
    one task message when it reaches --batch-size or waited --flush-ms; a group
    of fewer than BRIDGE_FILL_EVENTS (default 100) waits to fill, since a task's
    CPU is mostly fixed: up to BRIDGE_HOLD_BUDGET_MS (default 210) for a trickle,
    less the busier the stream, by BRIDGE_HOLD_EVENT_US (default 250) for each
    event the batch will carry, so that publish -> commit stays within the
    budget (187 ms at 500 events/s, 140 at 2,000). While the workers are behind
    (messages wait in the group's queue) it waits up to BRIDGE_MAX_HOLD_MS
    (default 250) instead, for fewer and larger tasks.
    A due group of fewer than BRIDGE_FILL_EVENTS goes in one message with the
    other under-filled groups: of its category (task <category>.mixed,
    BRIDGE_MIX_TYPES), then of the others (task events.mixed, on the queue of
    the category with most events in it; BRIDGE_MIX_CATEGORIES=0 keeps each
    category on its own queue). Survives Redis restarts; SIGTERM or Ctrl-C stops
    it after everything read is handed over.

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
    from bridge.relay import Bridge
    from bridge.streams import StreamBridge
    from tasks.sender import CelerySender

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
    if metrics_port:
        from bridge import metrics

        metrics.watch(relay)
        start_metrics(metrics.serve, metrics_port, metrics_host)

    def _stop(signum: int, _frame: Any) -> None:
        log.info(
            "%s received: handing over what was read, then stopping", signal.Signals(signum).name
        )
        relay.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runtime.freeze_startup_objects("bridge")
    try:
        relay.run()
    except Exception as exc:
        # Logged with its traceback by the bridge; exit non-zero for a supervisor to restart.
        raise click.ClickException(f"the bridge failed: {describe(exc)}") from None
    log.info("bridge stopped")


# ---------------------------------------------------------------------- worker


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


class WorkerCommand(click.Command):
    """`worker`, whose --help names the queues from the task layer, imported only for help."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from tasks.queues import QUEUES

        for param in self.params:
            if param.name == "queues" and isinstance(param, click.Option) and param.help:
                param.help = param.help.replace("{queues}", ", ".join(QUEUES))
        super().format_options(ctx, formatter)


@main.command(cls=WorkerCommand, context_settings=PASS_THROUGH)
@click.option(
    "-Q",
    "--queues",
    default=None,
    help="Comma-separated queues to consume (default: all of {queues}).",
)
@metrics_options("WORKER", "Serve Prometheus metrics of every worker process on this port")
@click.pass_context
def worker(
    ctx: click.Context, queues: str | None, metrics_port: int | None, metrics_host: str
) -> None:
    """Run a Celery worker that ingests event batches.

    Any other option goes to `celery worker` as it is, e.g.
    `analytics worker -Q order,payment --concurrency 4`. With --metrics-port the
    pool's processes share their metrics through a fresh temporary directory
    (PROMETHEUS_MULTIPROC_DIR), removed when the worker exits.
    """
    metrics_dir = None
    if metrics_port:
        # Before anything imports prometheus-client: it picks its mode on import.
        metrics_dir = tempfile.mkdtemp(prefix="analytics-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _run_worker(ctx, queues, metrics_port, metrics_host)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_worker(
    ctx: click.Context, queues: str | None, metrics_port: int | None, metrics_host: str
) -> None:
    from celery import signals

    from tasks.app import app
    from tasks.queues import QUEUES

    _setup_logging()  # before Celery starts: its warnings (e.g. running as root) are records
    names = [q.strip() for q in (queues or ",".join(QUEUES)).split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if unknown:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}",
            param_hint="-Q",
        )
    if metrics_port:
        from tasks import metrics

        def serve(port: int, host: str) -> None:
            metrics.serve(port, host, app.conf.broker_url, names)

        start_metrics(serve, metrics_port, metrics_host)
    argv = ["worker", "-Q", ",".join(names), *_celery_argv(ctx.args, {"--loglevel|-l": "INFO"})]
    if log_format() == "json":
        argv.insert(0, "--quiet")  # celery's own option: the banner is not a JSON line
    # Each process, once set up: the pool's after they forked, the main one when ready.
    signals.worker_process_init.connect(_freeze_pool_process, weak=False)
    signals.worker_ready.connect(_freeze_main_process, weak=False)
    app.worker_main(argv)


def _freeze_pool_process(**_: Any) -> None:
    runtime.freeze_startup_objects("worker pool process")


def _freeze_main_process(**_: Any) -> None:
    runtime.freeze_startup_objects("worker main process")


# -------------------------------------------------------------------------- up


def _ping(url: str) -> Callable[[], object]:
    def ping() -> object:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        try:
            return client.ping()
        finally:
            client.close()

    return ping


def _die_with_parent() -> None:
    """In a child: have Linux send SIGTERM when the parent process dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def up_commands(
    concurrency: int, no_beat: bool, metrics_base: int | None, metrics_host: str
) -> list[tuple[str, list[str]]]:
    """(name, argv) of each process `up` starts, in the order it starts them."""
    command = [sys.executable, "-m", "analytics"]

    def metrics(offset: int) -> list[str]:
        if metrics_base is None:
            return []
        return ["--metrics-port", str(metrics_base + offset), "--metrics-host", metrics_host]

    # The worker's own options before Celery's, which it passes through.
    specs = [("worker", [*command, "worker", *metrics(1), "--concurrency", str(concurrency)])]
    if not no_beat:
        specs.append(("beat", [*command, "beat"]))
    specs.append(("bridge", [*command, "bridge", *metrics(0)]))
    return specs


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes.",
)
@click.option("--no-beat", is_flag=True, help="Do not start celery beat.")
@click.option(
    "--metrics-port",
    "metrics_base",
    metavar="BASE",
    type=click.IntRange(min=1, max=65534),
    help="Serve Prometheus metrics: the bridge's on port BASE, the worker's on BASE+1 "
    "(default off).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address both metrics servers listen on (with --metrics-port).",
)
def up(concurrency: int, no_beat: bool, metrics_base: int | None, metrics_host: str) -> None:
    """Migrate the database, then run the bridge, a worker and beat until Ctrl-C.

    The one command a new user needs: on the default settings it stores everything
    in ./analytics.db and uses Redis on localhost. Each process logs to this terminal.
    """
    _setup_logging()
    settings = _settings()
    # Started before its services (a boot, a compose file): wait for them, one line a try.
    wait_for(f"Redis at {safe_url(settings.redis_url)}", _ping(settings.redis_url), log)
    revision = wait_for(
        f"the database at {safe_url(settings.database_url)}",
        lambda: run_migrations(settings.database_url, settings.raw_partitions_ahead),
        log,
    )
    log.info("database at revision %s: %s", revision, safe_url(settings.database_url))
    specs = up_commands(concurrency, no_beat, metrics_base, metrics_host)
    if metrics_base:
        log.info(
            "metrics: bridge http://%s:%d/metrics, worker http://%s:%d/metrics",
            metrics_host, metrics_base, metrics_host, metrics_base + 1,
        )  # fmt: skip
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
        log.info("stopped %s (exit code %s)", name, child.returncode)
    if failed:
        sys.exit(1)
