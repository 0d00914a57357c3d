"""With TENANT_FROM_CHANNEL the HTTP API publishes an event on its key's tenant's channel."""

from __future__ import annotations

import orjson
import redis

from analytics.events import channel_for
from tests.api.test_api import auth, order


def test_events_go_to_the_channel_of_the_keys_tenant(
    pg, make_client, new_key, redis_url, channel_prefix
):
    client = make_client(BRIDGE_INPUT="stream", TENANT_FROM_CHANNEL="1")
    key = new_key("tenant-a")

    reply = client.post("/api/v1/events", json=order("tenant-z"), headers=auth(key))

    assert reply.status_code == 202, reply.text
    stream = channel_for("order.created", channel_prefix, tenant="tenant-a")
    with redis.Redis.from_url(redis_url) as r:
        [(_, fields)] = r.xrange(stream)
        r.delete(stream)
    assert orjson.loads(fields[b"data"])["tenant_id"] == "tenant-a"
