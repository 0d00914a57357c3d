"""With PII_SALT set, no e-mail or IP address reaches any table or log: real bridge and worker."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from analytics.events import PII_KEYS, hash_pii
from analytics.models import Base, DeadLetter, StoredEvent
from loadgen import Simulator, channel_for, seed_examples
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

SALT = "test-pepper"


@pytest.fixture(autouse=True)
def fresh_broker(redis_client):
    yield
    redis_client.flushdb()


def personal_values(value: Any, personal: bool = False) -> set[str]:
    """Every string under an e-mail or IP key of a document, however nested."""
    if isinstance(value, dict):
        return set().union(
            *(personal_values(item, personal or key in PII_KEYS) for key, item in value.items())
        )
    if isinstance(value, list):
        return set().union(*(personal_values(item, personal) for item in value))
    return {value} if personal and isinstance(value, str) else set()


def everything_stored(engine: Engine) -> dict[str, bytes]:
    """Every text, JSON and binary value of every table, joined per ``table.column``."""
    found: dict[str, list[bytes]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for column, value in row.items():
                    if isinstance(value, str):
                        data = value.encode()
                    elif isinstance(value, bytes | memoryview):
                        data = bytes(value)
                    elif isinstance(value, dict | list):
                        data = orjson.dumps(value)
                    else:
                        continue
                    found.setdefault(f"{table.name}.{column}", []).append(data)
    return {name: b"\n".join(values) for name, values in found.items()}


def appears(value: str, blob: bytes) -> bool:
    # An address must not be found inside a longer one ("10.0.0.1" in "10.0.0.12").
    return re.search(rb"(?<![\w.])" + re.escape(value.encode()) + rb"(?![\w.])", blob) is not None


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def test_with_a_pii_salt_emails_and_ips_are_only_stored_as_salted_hashes(
    pg, start_worker, start_bridge, pipeline_env, redis_client, channel_prefix
):
    env = {**pipeline_env, "PII_SALT": SALT}
    worker = start_worker(env=env)
    bridge = start_bridge(env=env)
    documents = list(Simulator(tenants=1, seed=5, days=2).events(300))
    seed = seed_examples(tenant_id="privacy")
    for document in seed:
        document["metadata"]["ip_address"] = "198.51.100.23"
        if document["event_type"] == "user.registered":
            document["data"]["email"] = "seed.user@privacy.example"
        if document["event_type"] == "user.profile_updated":
            document["data"]["previous_values"] = {"email": "old.address@privacy.example"}
            document["data"]["new_values"] = {"email": ["new.address@privacy.example"]}
    # An unknown type (stored raw) and an id-less event (its id is derived) carry PII too.
    unknown = {
        "event_type": "newsletter.subscribed",
        "tenant_id": "privacy",
        "data": {"email": "reader@privacy.example", "ip_address": "203.0.113.9"},
    }
    documents += [*seed, unknown]
    channels = [channel_for(d["event_type"], channel_prefix) for d in documents]
    bad = {
        # Valid JSON, not an event (no tenant_id): hashed where it is kept.
        f"{channel_prefix}:user:registered": orjson.dumps(
            {
                "event_type": "user.registered",
                "data": {"email": "no.tenant@privacy.example"},
                "metadata": {"ip_address": "203.0.113.44"},
            }
        ),
        # Cut off, and not UTF-8: the values of e-mail and IP keys are hashed in the text.
        f"{channel_prefix}:user:logged_in": (
            b'{"event_type": "user.logged_in", "tenant_id": "privacy", '
            b'"metadata": {"ip_address": "203.0.113.45"}, "data": {"email": "cut.off@privacy.example'
        ),
        f"{channel_prefix}:order:created": (
            b'{"event_type": "order.created", "note": "\xff", "email": "not.utf8@privacy.example"}'
        ),
    }
    pipe = redis_client.pipeline(transaction=False)
    for channel, document in zip(channels, documents, strict=True):
        pipe.publish(channel, orjson.dumps(document))
    for channel, raw in bad.items():
        pipe.publish(channel, raw)
    assert all(receivers == 1 for receivers in pipe.execute())
    wait_for(lambda: count(pg, StoredEvent) == len(documents), timeout=60, what="every event")
    wait_for(lambda: count(pg, DeadLetter) == len(bad), timeout=30, what="the dead letters")

    personal = set().union(*(personal_values(d) for d in documents))
    personal |= {
        "no.tenant@privacy.example",
        "203.0.113.44",
        "203.0.113.45",
        "cut.off@privacy.example",
        "not.utf8@privacy.example",
    }
    assert len(personal) > 100
    stored = everything_stored(pg)
    everywhere = b"\n".join(stored.values())
    leaks = {
        name: sorted(v for v in personal if appears(v, blob))
        for name, blob in stored.items()
        if any(appears(v, blob) for v in personal)
    }
    assert leaks == {}
    missing = sorted(v for v in personal if hash_pii(v, SALT).encode() not in everywhere)
    assert missing == []
    logs = (worker.output() + bridge.output()).encode()
    assert sorted(v for v in personal if appears(v, logs)) == []
    # Dead letters are still recognisable: channel, reason, and what was not personal.
    with pg.connect() as conn:
        letters = dict(conn.execute(select(DeadLetter.channel, DeadLetter.raw)).all())
    assert b"tenant_id" not in letters[f"{channel_prefix}:user:registered"]
    assert orjson.loads(letters[f"{channel_prefix}:user:registered"])["data"]["email"] == (
        hash_pii("no.tenant@privacy.example", SALT)
    )
    assert letters[f"{channel_prefix}:order:created"].startswith(
        b'{"event_type": "order.created", "note": "\xff", "email": "hmac-sha256:'
    )
