"""The stream input end to end: real bridge and worker processes, Redis Streams, PostgreSQL.

Fault test 5 of issue 5: a bridge killed with SIGKILL in the middle of a stream
loses nothing, because what it read and did not acknowledge stays pending in
Redis and the next bridge claims it (XAUTOCLAIM); the totals are exact.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from loadgen import checking, publishing
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.fault]

GROUP = "analytics"


@pytest.fixture(autouse=True)
def fresh_broker(redis_client: redis.Redis) -> Iterator[None]:
    """No task message or stream outlives its test."""
    yield
    redis_client.flushdb()


def xadd(
    client: redis.Redis, stream: publishing.Stream, start: int, end: int, rate: float = 0
) -> None:
    """Add events ``start:end`` to the streams of their channels, ``rate`` a second (0: at once)."""
    pipe = client.pipeline(transaction=False)
    chunk = 100
    began = time.monotonic()
    for first in range(start, end, chunk):
        if rate:
            time.sleep(max(0.0, began + (first - start) / rate - time.monotonic()))
        for index in range(first, min(end, first + chunk)):
            pipe.xadd(stream.channels[index], {"data": stream.payloads[index]})
        pipe.execute()


def pending_by_consumer(client: redis.Redis, stream: publishing.Stream) -> dict[str, int]:
    """Entries read and not acknowledged, per consumer, over the streams of ``stream``."""
    totals: dict[str, int] = {}
    for name in set(stream.channels):
        try:
            summary = client.xpending(name, GROUP)
        except redis.ResponseError:  # no such stream or group yet
            continue
        for consumer in summary["consumers"]:
            key = consumer["name"].decode()
            totals[key] = totals.get(key, 0) + int(consumer["pending"])
    return totals


def acknowledged(client: redis.Redis, stream: publishing.Stream) -> int:
    """Entries of ``stream``'s streams the group has read and acknowledged."""
    done = 0
    for name in set(stream.channels):
        try:
            groups = client.xinfo_groups(name)
        except redis.ResponseError:
            continue
        for group in groups:
            if group["name"].decode() == GROUP:
                done += int(group["entries-read"] or 0) - int(group["pending"])
    return done


def test_a_stream_bridge_killed_mid_stream_leaves_nothing_behind(
    pg: Engine, start_worker, start_bridge, pipeline_env, redis_client, channel_prefix
):
    total = 6_000
    stream = publishing.build_stream(
        publishing.simulate(total, tenants=3, seed=21), channel_prefix=channel_prefix
    )
    env = {**pipeline_env, "BRIDGE_INPUT": "stream", "STREAM_CLAIM_IDLE_MS": "1000"}
    ready = f"reading stream {channel_prefix}:"
    start_worker()
    # Added before any bridge runs: a stream keeps them.
    xadd(redis_client, stream, 0, 2_000)
    # The first bridge holds what it reads for a second before sending it, so that
    # while events keep coming the kill finds entries it read and did not
    # acknowledge as well as entries it did.
    doomed = start_bridge(
        env={**env, "BRIDGE_FLUSH_MS": "1000", "BRIDGE_BATCH_SIZE": "5000"}, ready=ready
    )
    producer = threading.Thread(target=xadd, args=(redis_client, stream, 2_000, 4_000, 1_000))
    producer.start()
    group = doomed.popen.pid

    def stopped_holding_entries() -> bool:
        # Stopped first, then looked at: a bridge still running may acknowledge what it
        # holds between the look and the kill (its batch fell due), leaving nothing to
        # test. A stop that finds nothing held lets it go on, to be tried again.
        if acknowledged(redis_client, stream) < 2_000:
            return False
        os.killpg(group, signal.SIGSTOP)
        time.sleep(0.05)  # an acknowledgement it sent just before reaches Redis
        if sum(pending_by_consumer(redis_client, stream).values()) >= 100:
            return True
        os.killpg(group, signal.SIGCONT)
        return False

    try:
        wait_for(
            stopped_holding_entries,
            timeout=30,
            what="2,000 entries acknowledged and 100 more read but not acknowledged",
        )
        os.killpg(group, signal.SIGKILL)
        doomed.popen.wait()
        acknowledged_at_kill = acknowledged(redis_client, stream)
        orphaned = pending_by_consumer(redis_client, stream)
    finally:
        producer.join()
    # Added while no bridge runs.
    xadd(redis_client, stream, 4_000, total)
    heir = start_bridge(env=env, ready=ready)
    waited = checking.wait_stored(pg, stream.tenants, total, timeout=90, stall=30)
    exact = checking.check_exact(pg, stream)
    wait_for(
        lambda: not any(pending_by_consumer(redis_client, stream).values()),
        timeout=10,
        what="every entry acknowledged",
    )
    claims = [int(n) for n in re.findall(r"claimed (\d+) entries left pending", heir.output())]
    print(
        f"\ninjected: SIGKILL to the stream bridge while {total:,} events were added (2,000 "
        f"before it started, 2,000 at 1,000/s while it ran, 2,000 after it died), with "
        f"{acknowledged_at_kill:,} acknowledged and {sum(orphaned.values()):,} read but not "
        f"acknowledged {orphaned}"
        f"\ncounted: {exact.stored:,} stored, {exact.counted:,} counted, "
        f"{exact.dead_letters} dead letters, waited {waited.waited:.1f}s: {exact.summary()}; "
        f"the new bridge claimed {sum(claims):,} ({' + '.join(map(str, claims))})"
    )
    assert sum(orphaned.values()) > 0, "the kill found nothing pending: it tested nothing"
    assert waited.complete, waited.reason
    assert exact.exact, exact.problems
    assert exact.stored == exact.counted == total and exact.dead_letters == 0
    assert sum(claims) == sum(orphaned.values())
