"""The HTTP API in process (FastAPI's TestClient) on the run's PostgreSQL and Redis DB."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from analytics.config import Settings
from analytics.keys import create_key, revoke_key
from api.app import create_app
from tests.analytics.helpers import apply
from tests.reports import dataset
from tests.reports.test_against_oracle import NOW


@pytest.fixture
def api_env(postgres_url: str, redis_url: str, channel_prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "EVENT_CHANNEL_PATTERN": f"{channel_prefix}:*",
    }


@pytest.fixture
def make_client(api_env: dict[str, str]) -> Iterator[Callable[..., TestClient]]:
    apps = []

    def make(**extra: str) -> TestClient:
        app = create_app(Settings.from_env({**api_env, **extra}))
        apps.append(app)
        return TestClient(app)

    yield make
    for app in apps:
        app.state.engine.dispose()
        app.state.redis.close()


@pytest.fixture
def client(pg: Engine, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def new_key(pg: Engine) -> Callable[..., str]:
    """A key's text for a tenant (``revoked=True``: revoked at once)."""

    def make(tenant: str, revoked: bool = False) -> str:
        with Session(pg) as session, session.begin():
            info, text = create_key(session, tenant, "test")
            if revoked:
                revoke_key(session, info.id)
        return text

    return make


@pytest.fixture
def oracle_loaded(pg: Engine) -> Engine:
    """The oracle dataset of tests/reports, through the real writer (as that test loads it)."""
    from analytics.events import parse

    events = [
        parse(orjson.dumps(d), channel="events:x:y", received_at=NOW, max_bytes=1 << 20)
        for d in dataset.build()
    ]
    for start in range(0, len(events), 250):
        apply(pg, events[start : start + 250])
    return pg


@pytest.fixture
def received(redis_url: str, channel_prefix: str) -> Iterator[list[tuple[str, dict]]]:
    """What is published on the test's channel prefix, as (channel, document)."""
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.psubscribe(f"{channel_prefix}:*")
    messages: list[tuple[str, dict]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message and message["type"] == "pmessage":
                messages.append((message["channel"].decode(), orjson.loads(message["data"])))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    yield messages
    stop.set()
    thread.join()
    pubsub.close()
    client.close()


def settle(messages: list, count: int) -> list:
    from tests.conftest import wait_for

    wait_for(lambda: len(messages) >= count, timeout=5, what=f"{count} messages")
    return messages
