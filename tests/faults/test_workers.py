"""Faults of the workers: killed outright, shut down warm, or slower than the visibility timeout.

Each test publishes the shared 5,000-event stream, injects its fault mid-stream and
asserts exact totals once the stream settled (stored, and nothing left in the broker).
"""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
from sqlalchemy import text

from tests.conftest import wait_for
from tests.faults.helpers import (
    Publisher,
    assert_exact,
    batch_of,
    broker_backlog,
    held_batches,
    log,
    queued_task_ids,
    received,
    results,
    settle,
    stored_ids,
)

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]

#: A short visibility timeout, so that a lost worker's batches come back quickly.
VISIBILITY = 5


def test_a_worker_killed_with_sigkill_mid_stream_loses_nothing_and_its_batches_come_back(
    pg, start_worker, start_bridge, pipeline_env, redis_url, redis_client, stream
):
    env = {**pipeline_env, "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY)}
    worker = start_worker(env=env)
    # The bridge re-sends a batch the kill took off its queue before kombu recorded it
    # (see the next-but-two test) after twice the visibility timeout.
    start_bridge(env=env)
    publisher = Publisher(redis_url, stream).start()
    publisher.wait_sent(0.4)
    wait_for(lambda: redis_client.hlen("unacked"), timeout=10, what="the worker to hold a batch")
    os.killpg(worker.popen.pid, signal.SIGKILL)  # the main process and its pool children
    killed_at = time.monotonic()
    worker.popen.wait()
    held = held_batches(redis_client)  # nobody acknowledges or restores them now
    log(
        f"injected: kill -9 of worker group {worker.popen.pid} after {publisher.sent} of "
        f"{len(stream)} events published; it held {len(held)} batches "
        f"({sum(map(len, held.values()))} events) unacknowledged"
    )
    assert held
    restarted = start_worker(env=env)
    log(f"restarted a worker {time.monotonic() - killed_at:.1f}s after the kill")
    publisher.join()

    def held_batches_done() -> bool:
        done = {task_id for task_id, _ in results(restarted)}
        return set(held) <= done

    wait_for(held_batches_done, timeout=120, interval=0.2, what="the held batches to be redone")
    back_after = time.monotonic() - killed_at
    log(f"every held batch was redelivered and finished {back_after:.1f}s after the kill")
    assert stored_ids(pg, [e for events in held.values() for e in events]) == {
        e for events in held.values() for e in events
    }
    # Back once the visibility timeout passed, found by the next restore sweep (a quarter
    # of the timeout here; kombu's default found them ~100 s later), with time for the
    # restarted worker to start and work through the backlog.
    assert back_after < VISIBILITY + 20
    settle(pg, stream, redis_client)
    assert_exact(pg, stream)


def test_a_worker_shut_down_warm_mid_stream_hands_back_its_prefetched_batches(
    pg, start_worker, start_bridge, redis_url, redis_client, stream
):
    worker = start_worker()
    start_bridge()
    publisher = Publisher(redis_url, stream).start()
    publisher.wait_sent(0.4)
    sent, stopping_at = publisher.sent, time.monotonic()
    code = worker.stop()
    took = time.monotonic() - stopping_at
    backlog = broker_backlog(redis_client)
    log(
        f"injected: SIGTERM (warm shutdown) of the worker after {sent} of {len(stream)} "
        f"events published; it exited with {code} after {took:.1f}s "
        f"leaving {backlog} in the broker"
    )
    assert code == 0
    # A pool process that ran a job the shutdown had discarded used to wait 30 s for its
    # result to be read (tasks.app.POOL_EXIT_WAIT).
    assert took < 15
    assert "Warm shutdown" in worker.output()
    # It finished what it was running and put what it had prefetched back in the queues.
    assert "unacked" not in backlog
    start_worker()
    publisher.join()
    # With the default visibility timeout (90 s), settling in well under it shows that
    # nothing waited to be redelivered: the batches the worker had were finished or handed back.
    waited = settle(pg, stream, redis_client, timeout=60)
    log(f"settled {waited:.1f}s after the stream was published")
    assert_exact(pg, stream)


def test_a_batch_that_outlives_the_visibility_timeout_is_delivered_twice_and_counted_once(
    pg, start_worker, start_bridge, pipeline_env, redis_url, redis_client, stream
):
    timeout = 2
    worker = start_worker(env={**pipeline_env, "CELERY_VISIBILITY_TIMEOUT": str(timeout)})
    start_bridge()
    # Every batch begins by inserting its raw events: with the table locked, the
    # worker's batches wait (as a slow batch would) while the stream goes out.
    blocker = pg.connect()
    transaction = blocker.begin()
    blocker.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))
    locked_at = time.monotonic()
    try:
        publisher = Publisher(redis_url, stream).start()
        first = wait_for(
            lambda: held_batches(redis_client), timeout=30, what="the worker to take batches"
        )

        def back_in_a_queue() -> set[str]:
            return set(first) & queued_task_ids(redis_client)

        again = wait_for(back_in_a_queue, timeout=30, interval=0.1, what="a batch redelivered")
        log(
            f"injected: events table locked for {time.monotonic() - locked_at:.1f}s with "
            f"CELERY_VISIBILITY_TIMEOUT={timeout}: {len(again)} of the {len(first)} batches the "
            f"worker was holding went back to their queue while it still had them"
        )
    finally:
        transaction.rollback()
        blocker.close()
    publisher.join()
    settle(pg, stream, redis_client)
    assert_exact(pg, stream)
    done = results(worker)
    twice = {task_id for task_id, n in received(worker).items() if n > 1}
    log(
        f"counted: {len(twice)} batches were received twice, among them the "
        f"{len(again)} seen back in the queue; {len(done)} batch runs in all"
    )
    assert again <= twice
    for task_id in again:
        # One delivery stored the batch; the other(s) found every event already there.
        stored = sorted(result["stored"] for seen, result in done if seen == task_id)
        assert len(stored) >= 2
        assert stored == [0] * (len(stored) - 1) + [len(first[task_id])]


def test_a_batch_taken_off_its_queue_by_a_worker_that_died_at_once_is_re_sent_by_the_bridge(
    pg, start_worker, start_bridge, pipeline_env, redis_url, redis_client, stream
):
    # kombu's Redis transport BRPOPs a message and records it as unacknowledged only
    # afterwards: a worker killed in between loses it, and no visibility timeout
    # brings it back. Here the test is that worker: it pops a batch and drops it.
    env = {**pipeline_env, "CELERY_VISIBILITY_TIMEOUT": "2"}  # re-sent after 4 s
    start_bridge(env=env)
    publish_stream = Publisher(redis_url, stream).start()
    publish_stream.join()
    wait_for(lambda: redis_client.llen("order") >= 5, timeout=30, what="batches queued")
    raw = redis_client.rpop("order")  # the oldest, as BRPOP takes it
    message = orjson.loads(raw)
    lost = batch_of(message)
    lost_at = time.monotonic()
    log(
        f"injected: batch {message['headers']['id']} of {len(lost)} events taken off its "
        f"queue and never recorded as unacknowledged (a worker killed right after BRPOP)"
    )
    assert redis_client.hlen("unacked") == 0
    worker = start_worker(env=env)
    settle(pg, stream, redis_client)
    log(f"the bridge re-sent it; settled {time.monotonic() - lost_at:.1f}s after the loss")
    assert message["headers"]["id"] in {task_id for task_id, _ in results(worker)}
    assert_exact(pg, stream)
    assert redis_client.zcard("analytics:ledger:sent") == 0  # every batch struck off
