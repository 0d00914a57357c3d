"""TENANT_FROM_CHANNEL: an event is accepted only from a channel that ends with its tenant.

With a Redis ACL user per tenant (``analytics security redis-acl --tenant-producer``)
that may publish only on channels ending with ``:<tenant>``, a producer's
credentials then speak for its own tenant only.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from analytics.cli.security import redis_acl, tenant_producer
from analytics.config import Settings
from analytics.errors import InvalidEvent
from analytics.events import channel_for, tenant_of
from bridge.routing import route
from tests.conftest import wait_for
from tests.scratch_redis import ScratchRedis, scratch_redis

PREFIX = "events:"
LIMIT = 1024 * 1024


def event(tenant: str | None = "t1") -> bytes:
    envelope = {"event_type": "order.created", "event_id": "e1", "data": {"order_id": "o"}}
    if tenant is not None:
        envelope["tenant_id"] = tenant
    return orjson.dumps(envelope)


def test_the_channel_of_a_bound_tenant_ends_with_it():
    assert channel_for("order.created", "events", tenant="t1") == "events:order:created:t1"
    assert tenant_of("events:order:created:t1", PREFIX) == "t1"
    assert tenant_of("events:order:created", PREFIX) is None
    assert tenant_of("events:order:created:", PREFIX) is None


def test_a_bound_channel_routes_its_own_tenants_events():
    task, queue, _ = route("events:order:created:t1", event("t1"), PREFIX, LIMIT, 32, True)

    assert (task, queue) == ("order.created", "order")


@pytest.mark.parametrize(
    ("channel", "data", "message"),
    [
        ("events:order:created:t1", event("t2"), "tenant_id 't2' is not 't1'"),
        ("events:order:created:t1", event(None), "tenant_id None is not 't1'"),
        ("events:order:created", event("created"), "names no tenant"),
    ],
)
def test_an_event_for_another_tenant_than_its_channels_is_refused(channel, data, message):
    with pytest.raises(InvalidEvent, match=message):
        route(channel, data, PREFIX, LIMIT, 32, True)


def test_without_the_binding_the_channel_says_nothing_about_the_tenant():
    task, _, _ = route("events:order:created:t1", event("t2"), PREFIX, LIMIT)

    assert task == "order.created"


def test_the_bridge_dead_letters_an_event_forged_for_another_tenant(
    run_bridge, redis_client, channel_prefix
):
    _, recorder = run_bridge(bridge_flush_ms=10, tenant_from_channel=True)
    own = f"{channel_prefix}:order:created:t1"
    redis_client.publish(own, event("t1"))
    redis_client.publish(own, event("t2"))

    wait_for(lambda: len(recorder.items()) >= 2, timeout=10, what="both messages handed over")
    assert [item[1] for item in recorder.items("order.created")] == [event("t1").decode()]
    (dead,) = recorder.items("deadletter.record")
    assert "tenant_id 't2' is not 't1'" in orjson.dumps(dead).decode()


def test_a_tenant_with_glob_characters_or_a_colon_cannot_be_bound():
    for tenant in ("a:b", "t*", "t?", "[t]", ""):
        with pytest.raises(ValueError, match="cannot be bound"):
            tenant_producer(Settings(), tenant)


PASSWORDS = {role: f"pw-{role}" for role in ("producer", "bridge", "worker", "beat", "admin")}


@pytest.fixture
def bound_redis(tmp_path: Path) -> Iterator[ScratchRedis]:
    acl = tmp_path / "users.acl"
    acl.write_text(redis_acl(Settings(), PASSWORDS, tenant_passwords={"t1": "pw-t1"}))
    yield from scratch_redis(tmp_path, "--aclfile", str(acl))


def test_a_tenants_producer_may_publish_on_its_own_channels_only(bound_redis: ScratchRedis):
    client = redis.Redis.from_url(bound_redis.url(0, "analytics-producer-t1", "pw-t1"))
    try:
        client.publish("events:order:created:t1", b"{}")
        client.xadd("events:order:created:t1", {"data": b"{}"})
        for channel in ("events:order:created:t2", "events:order:created", "events:t1:x"):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.publish(channel, b"{}")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.xadd(channel, {"data": b"{}"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.xrange("events:order:created:t1")
    finally:
        client.close()


def test_publish_puts_the_tenant_at_the_end_of_the_channel(redis_client, redis_url, channel_prefix):
    env = {
        "REDIS_URL": redis_url,
        "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*",
        "TENANT_FROM_CHANNEL": "1",
        "PATH": "/usr/bin:/bin",
    }
    streams = [f"{channel_prefix}:order:created:test-tenant"]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "analytics", "publish", "--stream"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert f"to stream {streams[0]} (entry" in done.stdout
        [(_, fields)] = redis_client.xrange(streams[0])
        assert orjson.loads(fields[b"data"])["tenant_id"] == "test-tenant"
    finally:
        redis_client.delete(*streams)
