"""The bridge against real Redis pub/sub, with a ``send`` that records the batches it is handed."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

import orjson
import pytest

from analytics.batch import unpack
from analytics.config import Settings
from analytics.errors import InvalidEvent
from bridge.relay import route
from tasks.queues import DEADLETTER_TASK, UNKNOWN_EVENT_TASK
from tests.bridge.conftest import Recorder
from tests.conftest import wait_for

PREFIX = "events:"
LIMIT = 1024


def event(event_type: str = "order.created", **extra: Any) -> bytes:
    return orjson.dumps({"event_type": event_type, "tenant_id": "t", **extra})


@pytest.mark.parametrize(
    ("channel", "event_type", "task", "queue"),
    [
        ("events:order:created", "order.created", "order.created", "order"),
        ("events:user:logged_in", "user.logged_in", "user.logged_in", "user"),
        ("events:wishlist:added", "wishlist.added", UNKNOWN_EVENT_TASK, "misc"),
        # The type decides the task, whatever channel carried it.
        ("events:misc:x", "payment.failed", "payment.failed", "payment"),
    ],
)
def test_events_are_routed_to_the_task_of_their_type(channel, event_type, task, queue):
    routed = route(channel, event(event_type), PREFIX, LIMIT)
    assert routed[:2] == (task, queue)
    assert orjson.loads(routed[2])["event_type"] == event_type


@pytest.mark.parametrize(
    ("channel", "data", "message"),
    [
        ("events:order:created", b"\xff\xfe", "not valid UTF-8"),
        ("events:order:created", b"{nope", "invalid JSON"),
        ("events:order:created", b"[1]", "must be a JSON object, got list"),
        (
            "events:order:created",
            b'{"tenant_id": "t"}',
            "event_type: a non-empty string is required",
        ),
        (
            "events:order:created",
            b'{"event_type": 5}',
            "event_type: a non-empty string is required",
        ),
        ("events:order:created", b"x" * (LIMIT + 1), f"over the limit of {LIMIT}"),
        ("events::created", event(), "names no category"),
    ],
)
def test_messages_that_cannot_be_routed_are_rejected_with_a_reason(channel, data, message):
    with pytest.raises(InvalidEvent, match=message):
        route(channel, data, PREFIX, LIMIT)


def test_a_lone_event_is_forwarded_without_waiting_for_a_full_batch(
    run_bridge, redis_client, channel_prefix
):
    _, recorder = run_bridge(bridge_batch_size=500, bridge_flush_ms=10)
    published = time.monotonic()
    assert redis_client.publish(f"{channel_prefix}:order:created", event(event_id="e1")) == 1
    wait_for(recorder.items, timeout=5, what="the lone event")
    task, queue, items, sent_at = recorder.batches[0]
    assert (task, queue, len(items)) == ("order.created", "order", 1)
    assert sent_at - published < 2.0
    channel, text, received = items[0]
    assert channel == f"{channel_prefix}:order:created"
    assert orjson.loads(text)["event_id"] == "e1"
    assert abs(received - time.time()) < 60


def test_a_burst_goes_out_in_full_batches_grouped_by_type(run_bridge, redis_client, channel_prefix):
    # Not mixed: the first events after the quiet spell go at once, and would otherwise
    # go as one message of both types.
    _, recorder = run_bridge(bridge_batch_size=100, bridge_flush_ms=500, bridge_mix_types=False)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(1000):
        kind = "order.created" if i % 2 else "user.logged_in"
        pipe.publish(f"{channel_prefix}:{kind.replace('.', ':')}", event(kind, event_id=f"e{i}"))
    pipe.execute()
    wait_for(lambda: len(recorder.items()) == 1000, timeout=20, what="1000 events")
    for task, queue, items, _ in recorder.batches:
        assert {orjson.loads(item[1])["event_type"] for item in items} == {task}
        assert len(items) <= 100
        assert queue == task.split(".")[0]
    assert len(recorder.batches) <= 12, [len(b[2]) for b in recorder.batches]
    ids = [orjson.loads(item[1])["event_id"] for item in recorder.items()]
    assert sorted(ids) == sorted(f"e{i}" for i in range(1000))


def test_malformed_messages_become_dead_letters_and_the_bridge_goes_on(
    run_bridge, redis_client, channel_prefix
):
    _, recorder = run_bridge(bridge_flush_ms=5, max_payload_bytes=2048)
    bad = {
        "not utf-8": b"\xff\xfe\xfd",
        "invalid JSON": b'{"event_type": "order.created"',
        "array": b"[1, 2, 3]",
        "no event_type": b'{"tenant_id": "t"}',
        "oversized": b'{"pad": "' + b"x" * 4096 + b'"}',
    }
    for data in bad.values():
        redis_client.publish(f"{channel_prefix}:order:created", data)
    redis_client.publish(f"{channel_prefix}:order:created", event(event_id="fine"))
    wait_for(lambda: len(recorder.items()) == 6, timeout=10, what="all six messages")
    dead = recorder.items(DEADLETTER_TASK)
    assert len(dead) == 5
    assert [base64.b64decode(item[1]) for item in dead] == list(bad.values())
    reasons = [item[3] for item in dead]
    for reason, expected in zip(
        reasons,
        ["not valid UTF-8", "invalid JSON", "got list", "event_type", "over the limit of 2048"],
        strict=True,
    ):
        assert expected in reason
    assert [orjson.loads(i[1])["event_id"] for i in recorder.items("order.created")] == ["fine"]


def test_after_a_quiet_spell_an_event_goes_at_once_and_a_stream_waits_to_batch(
    run_bridge, redis_client, channel_prefix
):
    bridge, recorder = run_bridge(bridge_batch_size=10_000, bridge_flush_ms=60_000)
    channel = f"{channel_prefix}:payment:processed"
    redis_client.publish(channel, event("payment.processed", n="lone"))
    wait_for(recorder.items, timeout=5, what="the first event after a quiet spell")
    for i in range(50):
        redis_client.publish(channel, event("payment.processed", n=i))
    # Read (in the buffer or grouped: the sender takes them in at its group's due time).
    wait_for(lambda: bridge.received == 51, timeout=5, what="events read")
    time.sleep(0.3)
    assert len(recorder.items()) == 1  # the stream is held for a full batch or the flush time


def test_a_sender_sleeping_with_no_group_is_woken_by_the_next_message_only():
    import threading

    from bridge.holding import Holding

    wake = threading.Event()
    held = Holding(Settings.from_env({}), wake)

    def keep() -> bool:
        held.keep([(b"events:order:created", event(), time.time(), None)], 100)
        woken = wake.is_set()
        wake.clear()
        return woken

    assert not keep()  # the sender has groups: it wakes at their due time, not per message
    held.wake_on_next = True  # it sleeps with no group to wait for
    assert keep()
    assert not keep()  # once: the rest wait for the group's due time


def test_no_event_of_a_steady_stream_waits_much_past_the_hold_budget(
    run_bridge, redis_client, channel_prefix
):
    # One type: each send empties the only group, and the sender sleeps with no group
    # to wait for. If the next event did not wake it, that event's hold would start only
    # when it woke (up to relay.IDLE_WAIT, 200 ms, later).
    from bridge.relay import IDLE_WAIT

    budget = 0.06
    _, recorder = run_bridge(bridge_flush_ms=20, bridge_hold_budget_ms=budget * 1000)
    # ~1.2 s, an event every 10 ms: never a quiet spell
    published, _ = publish_steadily(redis_client, f"{channel_prefix}:order:created", 120, 0.01)
    waited = waits(recorder, published)
    assert max(waited) < budget + IDLE_WAIT / 2, sorted(waited)[-5:]


def publish_steadily(
    redis_client: Any, channel: str, count: int, every: float
) -> tuple[dict[int, float], float]:
    """Publish ``count`` events ``n=0..`` one each ``every`` seconds: when each went, and
    how long it all took."""
    published: dict[int, float] = {}
    started = time.monotonic()
    for n in range(count):
        published[n] = time.monotonic()
        redis_client.publish(channel, event(n=n))
        time.sleep(every)
    return published, time.monotonic() - started


def waits(recorder: Recorder, published: dict[int, float]) -> list[float]:
    """How long each published event waited before its batch was sent (all of them sent)."""
    wait_for(lambda: len(recorder.items()) == len(published), timeout=10, what="every event")
    return [
        sent - published[orjson.loads(item[1])["n"]]
        for _, _, items, sent in recorder.batches
        for item in items
    ]


def test_a_trickle_of_messages_is_read_a_few_at_a_time(run_bridge, redis_client, channel_prefix):
    from bridge.relay import READ_PAUSE

    bridge, recorder = run_bridge()
    channel = f"{channel_prefix}:order:created"
    started = time.monotonic()
    for n in range(100):  # one PUBLISH each, a millisecond apart
        redis_client.publish(channel, event(n=n))
        time.sleep(0.001)
    took = time.monotonic() - started
    wait_for(lambda: len(recorder.items()) == 100, timeout=10, what="every event")
    # At most one read a pause (and the first): not one wake-up a message.
    assert bridge.reads <= took / READ_PAUSE + 2, (bridge.reads, took)
    assert bridge.reads < 60


def test_while_a_batch_is_pending_a_trickle_is_read_a_few_times_a_batch(
    run_bridge, redis_client, channel_prefix
):
    # Not once every READ_PAUSE: what arrives before a pending batch is due goes in it
    # whenever it is read, so the reader waits for the batch's due time.
    from bridge.relay import READ_PAUSE

    budget = 0.3
    bridge, recorder = run_bridge(bridge_flush_ms=20, bridge_hold_budget_ms=budget * 1000)
    # ~1.2 s, an event every 6 ms: never a quiet spell
    channel = f"{channel_prefix}:order:created"
    published, took = publish_steadily(redis_client, channel, 200, 0.006)
    waited = waits(recorder, published)
    batches = len(recorder.batches)
    # A read as a batch begins, one as the sender has grouped it, one just before it goes.
    assert bridge.reads <= 3 * batches + 3, (bridge.reads, batches)
    assert bridge.reads < took / READ_PAUSE / 3, (bridge.reads, took)
    # And no event waits for it: each goes within the budget (and a read's pause).
    assert max(waited) < budget + 0.1, sorted(waited)[-5:]


def test_stopping_hands_over_everything_already_read(run_bridge, redis_client, channel_prefix):
    bridge, recorder = run_bridge(bridge_batch_size=10_000, bridge_flush_ms=60_000)
    channel = f"{channel_prefix}:payment:processed"
    redis_client.publish(channel, event("payment.processed", n="first"))  # ends the quiet spell
    wait_for(recorder.items, timeout=5, what="the first event")
    for i in range(50):
        redis_client.publish(channel, event("payment.processed", n=i))
    wait_for(lambda: bridge.received == 51, timeout=5, what="events read")
    assert len(recorder.items()) == 1
    bridge.stop()
    wait_for(lambda: len(recorder.items()) == 51, timeout=10, what="hand-over on stop")


def test_a_failing_broker_delays_a_batch_but_loses_nothing(
    run_bridge, redis_client, channel_prefix
):
    _, recorder = run_bridge(Recorder(fail_first=2), bridge_flush_ms=5)
    redis_client.publish(f"{channel_prefix}:order:created", event(event_id="kept"))
    wait_for(recorder.items, timeout=10, what="the retried batch")
    assert [orjson.loads(i[1])["event_id"] for i in recorder.items()] == ["kept"]


def test_the_bridge_resubscribes_after_its_connection_is_killed(
    run_bridge, redis_client, channel_prefix
):
    from prometheus_client import REGISTRY

    def reconnects() -> float:
        return REGISTRY.get_sample_value("analytics_bridge_reconnects_total") or 0.0

    before = reconnects()
    bridge, recorder = run_bridge(bridge_flush_ms=5)
    channel = f"{channel_prefix}:order:created"
    redis_client.publish(channel, event(event_id="before"))
    wait_for(lambda: len(recorder.items()) == 1, timeout=5, what="the first event")
    for attempt in range(3):
        mine = [c for c in redis_client.client_list() if c["name"] == bridge.client_name]
        assert mine, "the bridge's connection is not in CLIENT LIST"
        for client in mine:
            redis_client.client_kill_filter(_id=client["id"])
        probe = event(event_id=f"probe-{attempt}")

        def delivered(probe: bytes = probe) -> bool:
            return redis_client.publish(channel, probe) == 1

        wait_for(
            delivered,
            timeout=15,
            what="the bridge to resubscribe",
        )
    redis_client.publish(channel, event(event_id="after"))
    wait_for(
        lambda: "after" in {orjson.loads(i[1])["event_id"] for i in recorder.items()},
        timeout=5,
        what="an event published after the reconnect",
    )
    assert reconnects() - before == 3


class FakeApp:
    """Records what would be sent to Celery."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append({"name": name, **options})


def ledger_settings(redis_url: str, visibility: int = 90) -> Settings:
    return Settings(redis_url=redis_url, celery_broker_url=redis_url, visibility_timeout=visibility)


def test_batches_go_to_the_broker_packed_and_compressed_with_a_short_repr(
    redis_url, redis_client, fresh_broker
):
    import zstandard
    from kombu.utils.json import loads as kombu_loads

    from tasks import serializer
    from tasks.app import make_app
    from tasks.ledger import BATCHES_KEY, read_entry
    from tasks.sender import CelerySender

    app = make_app(dataclasses.replace(ledger_settings(redis_url), celery_result_backend=redis_url))
    items = [
        ["events:order:created", f'{{"event_type": "order.created", "n": {n}}}', 1.5]
        for n in range(300)
    ]
    try:
        CelerySender(app, ledger_settings(redis_url))("order.created", "order", items)
        (raw,) = redis_client.lrange("order", 0, -1)
        (entry,) = redis_client.hvals(BATCHES_KEY)
    finally:
        app.close()
    message = kombu_loads(raw)
    headers = message["headers"]
    assert message["content-type"] == "application/json"
    assert headers["compression"] == "application/zstd"
    assert headers["argsrepr"] == "[<300 events>]"
    body = (
        zstandard.ZstdDecompressor().decompressobj().decompress(base64.b64decode(message["body"]))
    )
    # Written by orjson (no space after a comma, as kombu's writer leaves), and read alike
    # by a worker of this version and by kombu's own reader: one packed item, which a
    # worker's main process reads as one string, and its pool process unpacks.
    assert body.startswith(b'[[[{"v":2,"zstd":"')
    (batch,) = kombu_loads(body)[0]
    assert serializer.loads(body)[0] == [batch]
    assert unpack(batch) == items
    # The ledger keeps the batch as the message carries it.
    assert read_entry(entry) == ["order.created", "order", batch]
    # The body a main process reads is a tenth of the items' JSON, or less.
    assert 10 * len(body) < len(orjson.dumps(items))


def test_a_batch_is_sent_with_no_result_channel_subscribed(redis_url, redis_client, fresh_broker):
    """No one reads a batch's result: sending one must not SUBSCRIBE to its result channel
    (Celery's Redis result backend does, for every task sent, unless told otherwise)."""
    from tasks.app import make_app
    from tasks.sender import CelerySender

    app = make_app(dataclasses.replace(ledger_settings(redis_url), celery_result_backend=redis_url))
    items = [["events:order:created", '{"event_type": "order.created"}', 1.5]]
    try:
        sender = CelerySender(app, ledger_settings(redis_url))
        for _ in range(3):
            sender("order.created", "order", items)
        consumer = app.backend.result_consumer
        subscribed = consumer._pubsub.channels if consumer._pubsub is not None else {}
        (raw,) = redis_client.lrange("order", 0, 0)
    finally:
        app.close()
    assert dict(subscribed) == {}
    assert orjson.loads(raw)["headers"]["ignore_result"] is True


def test_task_arguments_are_shown_as_a_count_not_as_the_events(redis_url, fresh_broker):
    # Logs, Flower and `celery inspect` show argsrepr: no e-mail address belongs there.
    from tasks.sender import CelerySender

    app = FakeApp()
    event = orjson.dumps(
        {"event_type": "user.registered", "data": {"email": "a@b.example"}}
    ).decode()
    CelerySender(app, ledger_settings(redis_url))(
        "user.registered", "user", [["events:user:registered", event, 0.0]] * 3
    )
    assert app.sent[0]["argsrepr"] == "[<3 events>]"
    (batch,) = app.sent[0]["args"]
    assert unpack(batch) == [["events:user:registered", event, 0.0]] * 3


def test_a_mixed_batch_is_shown_with_the_events_of_each_type_when_sent_and_re_sent(
    redis_url, redis_client, fresh_broker
):
    from tasks.sender import CelerySender

    app = FakeApp()
    sender = CelerySender(app, ledger_settings(redis_url, visibility=1))
    items = [
        ["events:order:created", '{"event_type": "order.created"}', 1.0],
        ["events:order:updated", '{"event_type": "order.updated"}', 1.0],
        ["events:order:created", '{"event_type": "order.created"}', 1.0],
    ]
    sender("order.mixed", "order", items, by_type={"order.updated": 1, "order.created": 2})
    shown = "[<3 events: order.created=2, order.updated=1>]"
    assert (app.sent[0]["name"], app.sent[0]["queue"], app.sent[0]["argsrepr"]) == (
        "order.mixed",
        "order",
        shown,
    )
    # Re-sent from the ledger (no worker finished it): the same, read again from the items.
    time.sleep(2.1)
    assert sender.sweep() == 1
    assert (app.sent[-1]["task_id"], app.sent[-1]["argsrepr"]) == (app.sent[0]["task_id"], shown)


#: The one event of each batch :func:`two_batches_in_the_ledger` sends.
LEDGER_ITEMS = [["events:order:created", '{"event_type": "order.created"}', 1.0]]


def two_batches_in_the_ledger(redis_url: str) -> tuple[FakeApp, Any]:
    """A sender with a ledger that re-sends after 2 s, having sent an ``order.created``
    batch then an ``order.updated`` one, each of :data:`LEDGER_ITEMS`."""
    from tasks.sender import CelerySender

    app = FakeApp()
    sender = CelerySender(app, ledger_settings(redis_url, visibility=1))
    sender("order.created", "order", LEDGER_ITEMS)
    sender("order.updated", "order", LEDGER_ITEMS)
    assert sender.ledger is not None
    return app, sender


def test_a_batch_no_worker_finished_is_re_sent_under_its_id_once_its_queue_is_empty(
    redis_url, redis_client, fresh_broker
):
    from tasks.sender import CelerySender

    app, sender = two_batches_in_the_ledger(redis_url)
    lost, finished = app.sent[0]["task_id"], app.sent[1]["task_id"]
    sender.ledger.done(finished)  # a worker finished this one; the other was lost
    assert sender.sweep() == 0  # not overdue yet
    time.sleep(2.1)
    redis_client.rpush("order", b"a message still queued")
    assert sender.sweep() == 0  # overdue, but its queue holds messages: not re-sent
    redis_client.delete("order")
    time.sleep(2.1)
    assert sender.sweep() == 1
    assert (app.sent[-1]["name"], app.sent[-1]["task_id"]) == ("order.created", lost)
    assert app.sent[-1]["args"] == app.sent[0]["args"] and app.sent[-1]["queue"] == "order"
    assert unpack(app.sent[-1]["args"][0]) == LEDGER_ITEMS
    # A second bridge sweeping at the same moment does not re-send it again.
    assert CelerySender(FakeApp(), ledger_settings(redis_url, visibility=1)).sweep() == 0
    assert sender.ledger.pending() == 1


def test_a_ledger_entry_that_does_not_unpack_does_not_hold_up_the_others(
    redis_url, redis_client, fresh_broker
):
    from tasks.ledger import BATCHES_KEY

    app, sender = two_batches_in_the_ledger(redis_url)
    broken_id, good_id = app.sent[0]["task_id"], app.sent[1]["task_id"]
    broken = [{"v": 2, "zstd": "not base64!"}]
    sender.ledger.client.hset(
        BATCHES_KEY, broken_id, orjson.dumps(["order.created", "order", broken])
    )
    time.sleep(2.1)
    assert sender.sweep() == 2
    resent = {message["task_id"]: message for message in app.sent[2:]}
    assert resent[broken_id]["args"] == [broken]  # as it is: a worker refuses it and says why
    assert unpack(resent[good_id]["args"][0]) == LEDGER_ITEMS


def test_the_sender_reads_the_backlog_of_each_queue_from_a_redis_broker(
    redis_url, redis_client, fresh_broker
):
    from tasks.sender import CelerySender

    sender = CelerySender(FakeApp(), ledger_settings(redis_url))
    redis_client.rpush("order", b"one", b"two")
    assert sender.backlog(["order", "user"]) == {"order": 2, "user": 0}
    amqp = dataclasses.replace(ledger_settings(redis_url), celery_broker_url="amqp://localhost//")
    assert CelerySender(FakeApp(), amqp).backlog(["order"]) == {}  # never held


def test_with_rabbitmq_as_broker_batches_go_without_a_ledger(redis_url, redis_client, fresh_broker):
    from tasks.ledger import BATCHES_KEY, SENT_KEY
    from tasks.sender import CelerySender

    amqp = dataclasses.replace(ledger_settings(redis_url), celery_broker_url="amqp://localhost//")
    app = FakeApp()
    sender = CelerySender(app, amqp)
    sender("order.created", "order", [["events:order:created", "{}", 1.0]])
    assert sender.ledger is None and len(app.sent) == 1
    assert sender.sweep() == 0
    assert not redis_client.exists(BATCHES_KEY, SENT_KEY)


@dataclasses.dataclass
class BusyRecorder(Recorder):
    """A recorder whose broker reports a backlog on the queues in ``busy``."""

    busy: set[str] = dataclasses.field(default_factory=set)

    def backlog(self, queues: list[str]) -> dict[str, int]:
        return {queue: 3 if queue in self.busy else 0 for queue in queues}


def _with_busy_order_queue(run_bridge: Any, hold_ms: float) -> tuple[Any, BusyRecorder]:
    """A bridge flushing at 20 ms whose broker shows a backlog on the order queue."""
    return run_bridge(
        BusyRecorder(busy={"order"}),
        bridge_batch_size=500,
        bridge_flush_ms=20,
        bridge_max_hold_ms=hold_ms,
    )


def _sent_after(recorder: Recorder, task: str, published: float) -> float:
    wait_for(lambda: recorder.items(task), timeout=10, what=f"a batch of {task}")
    return next(sent for t, _, _, sent in recorder.batches if t == task) - published


def test_a_partial_batch_waits_for_more_events_while_its_queue_has_a_backlog(
    run_bridge, redis_client, channel_prefix
):
    _, recorder = _with_busy_order_queue(run_bridge, 800)
    published = time.monotonic()
    redis_client.publish(f"{channel_prefix}:user:logged_in", event("user.logged_in"))
    redis_client.publish(f"{channel_prefix}:order:created", event(event_id="o1"))
    time.sleep(0.3)
    redis_client.publish(f"{channel_prefix}:order:created", event(event_id="o2"))
    # The idle queue's event goes at the flush time, the busy one's waits up to the hold.
    assert _sent_after(recorder, "user.logged_in", published) < 0.4
    held = _sent_after(recorder, "order.created", published)
    assert 0.7 < held < 2.0, held
    assert [orjson.loads(i[1])["event_id"] for i in recorder.items("order.created")] == [
        "o1",
        "o2",
    ]


def test_a_held_batch_goes_as_soon_as_its_queue_drains(run_bridge, redis_client, channel_prefix):
    bridge, recorder = _with_busy_order_queue(run_bridge, 5_000)
    published = time.monotonic()
    redis_client.publish(f"{channel_prefix}:order:created", event(event_id="o1"))
    wait_for(lambda: bridge.totals.held, timeout=5, what="the batch to be held")
    time.sleep(0.3)
    assert not recorder.items()
    recorder.busy.clear()
    assert _sent_after(recorder, "order.created", published) < 1.5
    assert bridge.totals.held >= 1


def test_without_a_longer_hold_a_busy_queue_changes_nothing(
    run_bridge, redis_client, channel_prefix
):
    _, recorder = _with_busy_order_queue(run_bridge, 0)
    published = time.monotonic()
    redis_client.publish(f"{channel_prefix}:order:created", event(event_id="o1"))
    assert _sent_after(recorder, "order.created", published) < 0.5


def test_the_ledger_keeps_batches_compressed_and_still_reads_plain_ones(
    redis_url, redis_client, fresh_broker
):
    from tasks.ledger import BATCHES_KEY, SENT_KEY, Ledger

    ledger = Ledger(redis_url)
    items = [["events:order:created", '{"event_type": "order.created", "n": 1}', 1.5]] * 200
    ledger.record("compressed", "order.created", "order", items)
    stored = redis_client.hget(BATCHES_KEY, "compressed")
    assert len(stored) * 10 < len(orjson.dumps(["order.created", "order", items]))
    # An entry written by an older bridge: plain JSON.
    redis_client.hset(BATCHES_KEY, "plain", orjson.dumps(["order.updated", "order", items[:1]]))
    redis_client.zadd(SENT_KEY, {"plain": time.time()})
    due = {task_id: rest for task_id, *rest in ledger.overdue(older_than=-1)}
    assert due == {
        "compressed": ["order.created", "order", items],
        "plain": ["order.updated", "order", items[:1]],
    }
