"""Fault: the disk under the bridge's spool fills up while Celery is behind.

A real ``analytics bridge`` runs with a file-size limit (``RLIMIT_FSIZE``, its
``SIGXFSZ`` ignored), so that every file it writes stops growing at
:data:`FILE_LIMIT`: a spool write past it fails part way with ``EFBIG``, as one
fails with ``ENOSPC`` on a full disk. Its memory limit is tiny and it sends one
event per task message, so a burst published at full speed overflows memory, then
the spool. Once that is handed over, and :data:`~bridge.relay.SPOOL_RETRY_AFTER`
later, a smaller burst fits the (emptied) spool again. No worker runs while the
bridge hands the bursts over: what reached the broker is counted there, each event
exactly once, before a worker stores it all. (The bridge's log file is under the
limit too; it stays far below it.)
"""

from __future__ import annotations

import resource
import signal
import time
from collections import Counter

import orjson
import pytest
import redis

from bridge.relay import SPOOL_RETRY_AFTER
from tasks.queues import DEADLETTER_QUEUE, QUEUES
from tests.conftest import wait_for
from tests.faults.helpers import assert_exact, batch_of, log, publish, settle, subset

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]

#: Largest file the bridge may write: room for ~700 events of the stream in the spool.
FILE_LIMIT = 512 << 10
#: The bridge's memory limit: ~90 events.
BUFFER = 64 << 10
#: Events of the second burst, after the disk "has room" again: ~370 KB, within the limit.
SECOND = 500


def limit_file_size() -> None:
    """In the bridge's process, before it starts: writes past FILE_LIMIT fail (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the write kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def queued_events(client: redis.Redis) -> Counter[str]:
    """How often each event id is in a batch waiting in a queue (dead letters aside)."""
    ids: Counter[str] = Counter()
    for queue in QUEUES:
        if queue == DEADLETTER_QUEUE:  # their items carry no JSON to read an id from
            continue
        for raw in client.lrange(queue, 0, -1):
            ids.update(batch_of(orjson.loads(raw)))
    return ids


def test_a_full_disk_under_the_spool_keeps_the_bridge_running_and_loses_nothing(
    pg, start_process, start_worker, pipeline_env, redis_url, redis_client, stream, tmp_path
):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    env = {
        **pipeline_env,
        "BRIDGE_MAX_BUFFER_BYTES": str(BUFFER),
        "BRIDGE_SPOOL_DIR": str(spool_dir),
    }
    bridge = start_process(
        "bridge", ["bridge", "--batch-size", "1"], env, preexec_fn=limit_file_size
    )
    bridge.wait_for_output("subscribed to")
    first = subset(stream, range(len(stream) - SECOND))
    second = subset(stream, range(len(stream) - SECOND, len(stream)))

    def all_queued(count: int) -> bool:
        assert bridge.alive, f"the bridge exited:\n{bridge.output()[-3000:]}"
        # A message cut by a partial spool write would come out as a dead letter.
        assert not redis_client.llen(DEADLETTER_QUEUE), "dead letters: cut messages"
        return sum(queued_events(redis_client).values()) >= count

    started = time.monotonic()
    published = publish(redis_url, first, rate=0)
    assert published.unreceived == 0
    wait_for(
        lambda: all_queued(len(first)), timeout=120, interval=0.5, what="the first burst queued"
    )
    handed_over_in = time.monotonic() - started
    time.sleep(max(0.0, SPOOL_RETRY_AFTER + 0.5 - handed_over_in))
    assert publish(redis_url, second, rate=0).unreceived == 0
    wait_for(lambda: all_queued(len(stream)), timeout=60, interval=0.5, what="every event queued")
    time.sleep(1.5)  # a duplicate would come now (the count lines are once a second)
    queued = queued_events(redis_client)
    output = bridge.output()
    failures = output.count("cannot write the spool")
    again = output.count("takes messages again")
    log(
        f"injected: a {FILE_LIMIT >> 10} KiB file-size limit on the bridge (EFBIG past it, "
        f"as a full disk), memory limit {BUFFER >> 10} KiB, {len(first)} events published "
        f"at {published.rate:,.0f}/s then {len(second)} more, no worker; counted: "
        f"{sum(queued.values())} events in the queues ({len(queued)} distinct; the first "
        f"burst handed over in {handed_over_in:.1f}s), {failures} failed spool writes logged, "
        f"spool usable again logged {again} times, bridge alive: {bridge.alive}"
    )
    assert bridge.alive
    assert failures > 0, output[-3000:]
    assert again > 0, output[-3000:]
    assert "spilling what Redis sends to a spool file" in output
    assert "Traceback" not in output and "CRITICAL" not in output
    assert sorted(stream.index_of(event_id) for event_id in queued.elements()) == list(
        range(len(stream))
    ), "lost or duplicated events"
    start_worker()
    settle(pg, stream, redis_client)
    assert_exact(pg, stream)
    assert bridge.alive
