"""A bridge whose thread dies stops altogether: ``run`` raises, and nothing is left reading.

Real Redis on this test's channels (or streams); the failure is injected in the
sender (a ``send`` raising an error that escapes its retries) or in the reader (a
read raising a bug). A reader with no sender would fill memory forever, and a
sender with no reader would look alive while reading nothing: in both cases the
process must exit, non-zero, for its supervisor to restart it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis

from analytics.config import Settings
from bridge import subscriber
from bridge.relay import Bridge, BridgeFailed
from bridge.streams import StreamBridge
from tests.bridge.conftest import Recorder
from tests.conftest import wait_for


class Crash(BaseException):
    """What no ``except Exception`` catches: it escapes the sender's retries."""


class CrashingSend(Recorder):
    """A ``send`` that records batches and then, on the batch that carries ``poison``, crashes."""

    def __call__(self, task: str, queue: str, items: list[list[Any]], **options: Any) -> None:
        if any('"poison"' in item[1] for item in items):
            raise Crash("an error send did not expect")
        super().__call__(task, queue, items, **options)


class Running:
    """``bridge.run()`` in a thread, keeping what it raised."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert bridge.subscribed.wait(10), "bridge did not start reading"

    def _run(self) -> None:
        try:
            self.bridge.run()
        except BaseException as exc:
            self.error = exc

    def wait_ended(self, timeout: float = 15.0) -> BaseException | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"run() still going {timeout}s after the failure"
        return self.error


@pytest.fixture
def make_bridge(redis_url: str, channel_prefix: str, redis_client) -> Iterator[Any]:
    started: list[Running] = []

    def make(kind: type[Bridge], send: Recorder) -> Running:
        settings = dataclasses.replace(
            Settings.from_env({}),
            redis_url=redis_url,
            event_channel_pattern=f"{channel_prefix}:*",
            bridge_flush_ms=5,
        )
        running = Running(kind(settings, send))
        started.append(running)
        return running

    yield make
    for running in started:
        running.bridge.stop()
        running.thread.join(30)
    keys = list(redis_client.scan_iter(match=f"{channel_prefix}:*"))
    if keys:
        redis_client.delete(*keys)


def event(event_id: str) -> bytes:
    return orjson.dumps({"event_type": "order.created", "tenant_id": "t", "event_id": event_id})


def connections(client: redis.Redis, name: str) -> int:
    return sum(1 for entry in client.client_list() if entry.get("name") == name)


@pytest.mark.parametrize("kind", [Bridge, StreamBridge], ids=["pubsub", "stream"])
def test_a_sender_that_dies_stops_the_reader_and_run_raises(
    kind, make_bridge, redis_client, channel_prefix, caplog
):
    caplog.set_level(logging.INFO, logger="bridge")
    send = CrashingSend()
    running = make_bridge(kind, send)
    bridge = running.bridge
    channel = f"{channel_prefix}:order:created"

    def put(payload: bytes, subscribers: int = 1) -> None:
        if kind is StreamBridge:
            redis_client.xadd(channel, {"data": payload})
        else:
            assert redis_client.publish(channel, payload) == subscribers

    put(event("before"))
    wait_for(lambda: send.items(), timeout=10, what="the first event handed over")
    put(event("poison"))
    error = running.wait_ended()
    assert isinstance(error, BridgeFailed), error
    assert isinstance(error.__cause__, Crash)
    assert bridge.sender is not None and not bridge.sender.is_alive()
    assert not bridge.subscribed.is_set()
    # The reader let go of Redis: no connection of this bridge is left.
    wait_for(
        lambda: connections(redis_client, bridge.client_name) == 0,
        timeout=5,
        what="the bridge's connections to close",
    )
    received = bridge.received
    put(event("after"), subscribers=0)
    assert bridge.received == received
    assert [orjson.loads(item[1])["event_id"] for item in send.items()] == ["before"]
    failures = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert failures and "the sender failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # with its traceback
    if kind is StreamBridge:
        # Not acknowledged: left pending for another bridge to claim.
        assert redis_client.xpending(channel, bridge.settings.stream_group)["pending"] == 1


def test_a_reader_that_dies_hands_over_what_it_read_then_run_raises(
    make_bridge, redis_client, channel_prefix, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="bridge")
    read = subscriber.Subscription.read

    def buggy_read(self: subscriber.Subscription) -> Iterator[tuple[bytes, bytes]]:
        for channel, data in read(self):
            if b'"poison"' in data:
                raise RuntimeError("a bug in the reader")
            yield channel, data

    monkeypatch.setattr(subscriber.Subscription, "read", buggy_read)
    # A broker as slow as to still hold events when the reader dies.
    send = Recorder(seconds_per_event=0.01)
    running = make_bridge(Bridge, send)
    channel = f"{channel_prefix}:order:created"
    for n in range(50):
        redis_client.publish(channel, event(f"e{n}"))
    wait_for(lambda: running.bridge.received == 50, timeout=10, what="50 events read")
    redis_client.publish(channel, event("poison"))
    error = running.wait_ended()
    assert isinstance(error, RuntimeError) and str(error) == "a bug in the reader"
    # The sender handed over everything read before it stopped.
    assert [orjson.loads(item[1])["event_id"] for item in send.items()] == [
        f"e{n}" for n in range(50)
    ]
    assert running.bridge.sender is not None and not running.bridge.sender.is_alive()
    assert connections(redis_client, running.bridge.client_name) == 0
    assert any(
        r.levelno == logging.CRITICAL and "the reader failed" in r.getMessage()
        for r in caplog.records
    )
