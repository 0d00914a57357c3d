"""The commands that put traffic on Redis: publish, simulate, bench.

`publish` sends events as a Rust service would; `simulate` and `bench` use the load
generator (``loadgen``), imported inside their bodies so that `--help` stays light.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from analytics.cli import _settings, describe, main
from analytics.config import Settings
from analytics.events import channel_for

#: The event the seed document publishes to test an integration.
SEED_TEST_EVENT: dict[str, Any] = {
    "event_type": "order.created",
    "tenant_id": "test-tenant",
    "data": {"order_id": "test-order", "total_amount": 99.99},
}


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url)


def test_event() -> dict[str, Any]:
    """The seed's test event with a new ``event_id`` and the current ``timestamp``, as the
    seed's ``POST /test/publish-event`` fills them in: published twice, it counts twice."""
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"event_id": str(uuid.uuid4()), "timestamp": now, **SEED_TEST_EVENT}


def _event_key(document: Any) -> tuple[str, str] | None:
    """(tenant, event id) under which the worker will store a document, if it can tell."""
    from analytics.events.parse import derive_event_id

    if not isinstance(document, dict) or not isinstance(document.get("tenant_id"), str):
        return None
    event_id = document.get("event_id")
    if event_id is None:
        payload = {key: value for key, value in document.items() if key != "event_id"}
        event_id = derive_event_id(payload)
    return (document["tenant_id"], str(event_id)) if isinstance(event_id, str | int) else None


def already_stored(keys: list[tuple[str, str]]) -> int | None:
    """How many of these (tenant, event id) are stored already; None if the database cannot
    say (unreachable, not migrated): publishing needs Redis only."""
    from sqlalchemy import select, tuple_

    from analytics.db import get_engine
    from analytics.models import EventKey

    if not keys:
        return 0
    found = 0
    try:
        with get_engine().connect() as conn:
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                # The keys of every event ever stored (pruned ones too: they count once).
                query = select(EventKey.tenant_id, EventKey.event_id).where(
                    tuple_(EventKey.tenant_id, EventKey.event_id).in_(chunk)
                )
                found += len(conn.execute(query).all())
    except Exception:
        return None
    return found


def _say_duplicates(keys: list[tuple[str, str]], what: str) -> None:
    """One line on stderr when events about to be published are stored already."""
    stored = already_stored(keys)
    if stored:
        click.echo(
            f"note: {stored} of the {len(keys)} {what} are already stored (same tenant and "
            "event_id): the pipeline counts each event once, so these change nothing",
            err=True,
        )


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

    With no option it publishes the seed document's test event: order.created
    for tenant "test-tenant", order "test-order", 99.99, with a new event_id and
    the current timestamp (so each run is a new event). With --stream it adds
    them to Redis Streams instead. Events whose tenant and event_id are already
    stored in DATABASE_URL (when it can be read) are named in a note: they count once.
    """
    settings = _settings()
    if event_json and path:
        raise click.UsageError("give --event or --file, not both")
    lines: list[str]
    if path:
        with click.open_file(path, "r") as handle:
            lines = [line for line in handle if line.strip()]
    else:
        lines = [event_json or orjson.dumps(test_event()).decode()]
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
    documents = []
    for number, line in enumerate(lines, 1):
        try:
            documents.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"line {number} is not JSON: {exc}") from None
    keys = [key for key in map(_event_key, documents) if key is not None]
    _say_duplicates(keys, "events to publish")
    sent = 0
    for number, (line, document) in enumerate(zip(lines, documents, strict=True), 1):
        event_type = document.get("event_type") if isinstance(document, dict) else None
        if not channel and not isinstance(event_type, str):
            raise click.ClickException(f"line {number} has no event_type; pass --channel")
        try:
            tenant = document.get("tenant_id") if settings.tenant_from_channel else None
            target = channel or channel_for(
                str(event_type), settings.channel_prefix, None if tenant is None else str(tenant)
            )
        except ValueError as exc:
            raise click.ClickException(f"line {number}: {exc}; pass --channel") from None
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
    default=None,
    help="Random seed: the same seed (and options) gives the same stream, whose events "
    "then count once. Default: a new seed each run, printed.",
)
def simulate(tenants: int, count: int, rate: float, days: int, seed: int | None) -> None:
    """Publish a realistic mixed stream of all 15 event types, with a progress bar.

    Users register, log in and out, order 1-4 items, pay (some payments fail),
    get refunds; stock runs low, runs out and is restocked.
    """
    import random

    from loadgen import Simulator

    settings = _settings()
    client = _redis(settings)
    prefix = settings.channel_prefix.rstrip(":")
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1_000_000)
    click.echo(f"seed {seed} (simulate --seed {seed} repeats this stream)")
    stream = Simulator(tenants=tenants, seed=seed, days=days).events(count)
    first = list(itertools.islice(stream, 100))
    _say_duplicates([key for key in map(_event_key, first) if key], "first events of this stream")
    chunk = max(1, min(500, int(rate / 20) if rate else 500))
    started = time.monotonic()
    published = 0
    with click.progressbar(length=count, label="publishing", show_pos=True) as bar:
        pipe = client.pipeline(transaction=False)
        pending = 0
        for envelope in itertools.chain(first, stream):
            tenant = envelope["tenant_id"] if settings.tenant_from_channel else None
            pipe.publish(
                channel_for(envelope["event_type"], prefix, tenant), orjson.dumps(envelope)
            )
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
    whole benchmark, with its own processes and targets: python -m benchmarks.pipeline.
    """
    import math

    from analytics.db import get_engine
    from loadgen import checking, publishing

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
    stream = publishing.build_stream(
        publishing.simulate(count, tenants, seed),
        channel_prefix=settings.channel_prefix.rstrip(":"),
        spread=max(count / rate, 1.0) if rate else 1.0,
        default_currency=settings.default_currency,
    )
    names = f"{stream.tenants[0]} .. {stream.tenants[-1]}"
    click.echo(
        f"publishing {count:,} events for {len(stream.tenants)} tenant(s) ({names}) on "
        f"{settings.event_channel_pattern}" + (f" at {rate:,.0f}/s" if rate else "")
    )
    published = publishing.publish(client, stream, rate)
    click.echo(
        f"published in {published.finished - published.started:.1f}s ({published.rate:,.0f}/s)"
    )
    if published.unreceived:
        click.echo(
            f"warning: {published.unreceived} event(s) reached no subscriber "
            f"(is the bridge subscribed to {settings.event_channel_pattern}?)",
            err=True,
        )
    waited = checking.wait_stored(
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
    rows = checking.fetch_stored(engine, stream.tenants)
    speed = checking.throughput(published, rows)
    delay = checking.latency(stream, published, rows)
    exact = checking.check_exact(engine, stream)

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
        deleted = checking.delete_tenants(engine, stream.tenants)
        click.echo(f"cleanup      deleted {deleted:,} rows of the bench tenants")
    if not (waited.complete and exact.exact):
        sys.exit(1)
