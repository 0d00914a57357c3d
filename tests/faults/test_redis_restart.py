"""Redis itself restarts under a running stream-input pipeline, with its append-only file on.

A redis-server of the test's own (a free port, a temporary directory,
``appendonly yes``, ``appendfsync everysec``: what docker-compose.yml runs) holds
the event streams, the Celery queues, the unacknowledged batches and the
delivery ledger. While a producer adds a stream of events, the server is stopped
with SIGTERM and started again, then killed with SIGKILL and started again.

The documented window (README, "Durability"): Redis writes every command to the
AOF before it answers, and fsyncs the file every second. A Redis *process* that
stops or crashes therefore loses nothing it acknowledged; only a crash of the
host (the page cache lost) can lose the last second or so. This test crashes the
process, so the count must be exact: every event the producer was told was added
is stored, and none is counted twice (redelivered batches, re-read entries and
re-sent ledger batches all meet the raw-event key).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from loadgen import checking, publishing
from tests.conftest import Process, wait_for
from tests.faults.helpers import broker_backlog, log
from tests.scratch_redis import ScratchRedis, scratch_redis

pytestmark = [pytest.mark.slow, pytest.mark.fault]

TOTAL = 6_000
RATE = 1_500.0
CHUNK = 50
#: Redis's own options in docker-compose.yml.
AOF = ("--appendonly", "yes", "--appendfsync", "everysec")


class StreamProducer:
    """XADDs the stream's events in order at ``RATE``, as a producer that retries does:
    a chunk whose answer was lost to a restart is added again (the event ids make the
    copies count once)."""

    def __init__(self, server: ScratchRedis, stream: publishing.Stream):
        self.server = server
        self.stream = stream
        self.added = 0
        self.retried_chunks = 0
        self.refused_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="xadd", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> StreamProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        client = redis.Redis.from_url(self.server.url(), socket_timeout=5)
        began = time.monotonic()
        try:
            for first in range(0, TOTAL, CHUNK):
                time.sleep(max(0.0, began + first / RATE - time.monotonic()))
                while True:
                    try:
                        pipe = client.pipeline(transaction=False)
                        for index in range(first, min(TOTAL, first + CHUNK)):
                            pipe.xadd(
                                self.stream.channels[index], {"data": self.stream.payloads[index]}
                            )
                        pipe.execute()
                        break
                    except (redis.ConnectionError, redis.TimeoutError):
                        self.retried_chunks += 1
                        self.refused_seconds += 0.05
                        time.sleep(0.05)
                self.added = min(TOTAL, first + CHUNK)
        except BaseException as exc:
            self._error = exc
        finally:
            client.close()

    def wait_added(self, count: int) -> None:
        wait_for(lambda: self.added >= count, timeout=60, interval=0.01, what=f"{count} added")

    def join(self) -> None:
        self._thread.join(timeout=120)
        if self._error is not None:
            raise self._error


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[ScratchRedis]:
    root = tmp_path / "redis"
    root.mkdir()
    yield from scratch_redis(root, *AOF)


def _pending(client: redis.Redis, stream: publishing.Stream) -> int:
    total = 0
    for name in set(stream.channels):
        try:
            total += int(client.xpending(name, "analytics")["pending"])
        except redis.ResponseError:
            continue
    return total


def test_redis_stopped_and_killed_under_a_stream_pipeline_loses_and_doubles_nothing(
    pg: Engine,
    aof_redis: ScratchRedis,
    pipeline_env: dict[str, str],
    start_process: Callable[..., Process],
    channel_prefix: str,
):
    url = aof_redis.url()
    env = {
        **pipeline_env,
        "REDIS_URL": url,
        "CELERY_BROKER_URL": url,
        "BRIDGE_INPUT": "stream",
        "STREAM_CLAIM_IDLE_MS": "2000",
        # A batch whose acknowledgement was lost with a connection comes back soon.
        "CELERY_VISIBILITY_TIMEOUT": "10",
    }
    stream = publishing.build_stream(
        publishing.simulate(TOTAL, tenants=3, seed=23), channel_prefix=channel_prefix
    )
    worker = start_process("worker", ["worker", "--concurrency", "2", "-n", "aof@%h"], env)
    worker.wait_for_output("ready.")
    bridge = start_process("bridge", ["bridge"], env)
    bridge.wait_for_output("reading streams matching")
    producer = StreamProducer(aof_redis, stream).start()

    injected = []
    for sig, at in ((signal.SIGTERM, 0.3), (signal.SIGKILL, 0.65)):
        producer.wait_added(int(TOTAL * at))
        before = producer.added
        aof_redis.stop(sig)
        time.sleep(1.0)
        aof_redis.start()
        injected.append(f"{sig.name} at {before:,} added, down ~1 s")
    producer.join()

    waited = checking.wait_stored(pg, stream.tenants, TOTAL, timeout=150, stall=60)
    client = aof_redis.client()
    try:
        wait_for(
            lambda: not broker_backlog(client) and not _pending(client, stream),
            timeout=60,
            interval=0.5,
            what="no batch queued or unacknowledged and no entry pending",
        )
        ledger = int(client.zcard("analytics:ledger:sent"))
    finally:
        client.close()
    exact = checking.check_exact(pg, stream)
    log(
        f"injected: {'; '.join(injected)}, under a stream of {TOTAL:,} events XADDed at "
        f"{RATE:,.0f}/s ({producer.retried_chunks} chunk attempts refused while Redis was down)"
    )
    log(
        f"counted: {exact.stored:,} stored, {exact.counted:,} in the counters, "
        f"{exact.dead_letters} dead letters, ledger left {ledger}, in {waited.waited:.1f}s: "
        f"{exact.summary()}"
    )
    assert aof_redis.starts == 3
    assert "DB loaded from append only file" in aof_redis.log(), "Redis did not read its AOF"
    assert worker.alive and bridge.alive, "a process died with Redis"
    assert waited.complete, waited.reason
    assert exact.exact, exact.problems
    assert exact.stored == exact.counted == TOTAL and exact.dead_letters == 0
