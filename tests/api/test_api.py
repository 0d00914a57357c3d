"""The HTTP API: reports equal the query layer's, keys guard everything, events keep their tenant."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy.orm import Session

from analytics.events import channel_for
from analytics.reports import REPORTS, Query, run
from tests.api.conftest import settle
from tests.reports.test_against_oracle import RANGES

ENDPOINTS = [
    ("get", "/api/v1/reports/revenue-by-day"),
    ("get", "/api/v1/reports/nope"),
    ("get", "/api/v1/alerts/open"),
    ("post", "/api/v1/events"),
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def order(tenant: str = "someone-else", **extra: Any) -> dict[str, Any]:
    return {
        "event_type": "order.created",
        "tenant_id": tenant,
        "timestamp": "2024-03-05T10:00:00Z",
        "data": {"order_id": "o-1", "total_amount": 12.5, "currency": "EUR"},
        **extra,
    }


def test_every_report_over_http_equals_the_query_layer(oracle_loaded, client, new_key):
    keys = {tenant: new_key(tenant) for tenant in ("tenant-1", "tenant-2")}
    mismatches = []
    for tenant, key in keys.items():
        for name in REPORTS:
            for since, until in RANGES:
                params = {k: str(v) for k, v in (("since", since), ("until", until)) if v}
                params |= {"limit": "3", "days": "5"}
                reply = client.get(f"/api/v1/reports/{name}", params=params, headers=auth(key))
                assert reply.status_code == 200, reply.text
                with Session(oracle_loaded) as session, session.begin():
                    rows = run(session, name, Query(tenant, since, until, limit=3, days=5))
                expected = orjson.loads(REPORTS[name].render(rows, "json"))
                if reply.json() != expected:
                    mismatches.append((tenant, name, since, until))
                assert reply.content == REPORTS[name].render(rows, "json").encode()
    assert mismatches == []


def test_reports_as_csv_like_the_cli(oracle_loaded, client, new_key):
    key = new_key("tenant-1")
    with Session(oracle_loaded) as session, session.begin():
        rows = run(session, "revenue-by-day", Query("tenant-1"))
    expected = REPORTS["revenue-by-day"].render(rows, "csv") + "\n"
    by_param = client.get(
        "/api/v1/reports/revenue-by-day", params={"format": "csv"}, headers=auth(key)
    )
    by_accept = client.get(
        "/api/v1/reports/revenue-by-day", headers={**auth(key), "Accept": "text/csv"}
    )
    for reply in (by_param, by_accept):
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/csv")
        assert reply.text == expected
    assert expected.count("\n") > 5


def test_unknown_report_is_404_and_bad_dates_422(client, new_key):
    key = new_key("t")
    assert client.get("/api/v1/reports/nope", headers=auth(key)).status_code == 404
    reply = client.get("/api/v1/reports/dau", params={"since": "yesterday"}, headers=auth(key))
    assert reply.status_code == 422
    assert "since 'yesterday' is not a date (YYYY-MM-DD)" in reply.text
    reply = client.get(
        "/api/v1/reports/dau", params={"since": "2024-03-02", "until": "2024-03-01"},
        headers=auth(key),
    )  # fmt: skip
    assert reply.status_code == 422
    assert "is after" in reply.text


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_no_wrong_or_revoked_key_is_401_everywhere(client, new_key, method, path):
    revoked = new_key("t", revoked=True)
    new_key("t")
    for headers in (
        {},
        auth("ak_wrong"),
        auth(revoked),
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ):
        reply = client.request(method, path, headers=headers, json=order())
        assert reply.status_code == 401, (headers, reply.text)


def test_a_tenant_reads_nothing_of_another(oracle_loaded, client, new_key):
    other = new_key("tenant-nobody")
    mine = new_key("tenant-1")
    seen = 0
    for name in REPORTS:
        empty = client.get(f"/api/v1/reports/{name}", headers=auth(other))
        assert empty.status_code == 200
        assert empty.json() in (
            [],
            [{"hour": h, "active_users": 0, "events": 0} for h in range(24)],
        )
        seen += len(client.get(f"/api/v1/reports/{name}", headers=auth(mine)).json())
    assert seen > 100
    # A tenant given as a parameter changes nothing.
    reply = client.get(
        "/api/v1/reports/revenue-by-day", params={"tenant": "tenant-1"}, headers=auth(other)
    )
    assert reply.json() == []


def test_events_land_in_the_keys_tenant_whatever_the_body_says(
    client, new_key, received, channel_prefix
):
    key = new_key("tenant-a")
    one = client.post("/api/v1/events", json=order("tenant-b"), headers=auth(key))
    assert one.status_code == 202, one.text
    many = client.post(
        "/api/v1/events",
        json=[order("tenant-b", event_id="e-2"), {**order(), "tenant_id": None}],
        headers=auth(key),
    )
    assert many.status_code == 202, many.text
    assert many.json()["event_ids"][0] == "e-2"
    messages = settle(received, 3)
    assert len(messages) == 3
    assert {doc["tenant_id"] for _, doc in messages} == {"tenant-a"}
    assert {channel for channel, _ in messages} == {channel_for("order.created", channel_prefix)}
    ids = one.json()["event_ids"] + many.json()["event_ids"]
    assert [doc["event_id"] for _, doc in messages] == ids
    assert all(doc["timestamp"] == "2024-03-05T10:00:00Z" for _, doc in messages)


def test_missing_event_id_and_timestamp_are_filled_in(client, new_key, received):
    key = new_key("tenant-a")
    document = order()
    del document["timestamp"]
    reply = client.post("/api/v1/events", json=document, headers=auth(key))
    assert reply.status_code == 202
    [(_, published)] = settle(received, 1)
    assert published["event_id"] == reply.json()["event_ids"][0]
    assert published["timestamp"].startswith(str(date.today().year))


def test_one_invalid_event_rejects_the_batch_and_publishes_nothing(client, new_key, received):
    key = new_key("tenant-a")
    bad = {**order(), "data": {"order_id": "o-2"}}  # no total_amount
    too_old = {**order(), "timestamp": "1999-12-31T23:00:00Z"}
    reply = client.post(
        "/api/v1/events",
        json=[order(), bad, {"event_type": "nodot"}, "text", too_old],
        headers=auth(key),
    )
    assert reply.status_code == 422
    errors = reply.json()["detail"]["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3, 4]
    assert "total_amount" in errors[0]["reason"]
    assert "event_type" in errors[1]["reason"]
    assert "JSON object" in errors[2]["reason"]
    assert "outside the accepted event time window" in errors[3]["reason"]
    assert (
        client.post("/api/v1/events", json=[order()] * 1001, headers=auth(key)).status_code == 422
    )
    import time

    time.sleep(0.3)
    assert received == []


def test_events_go_to_the_stream_with_bridge_input_stream(
    pg, make_client, new_key, redis_url, channel_prefix
):
    client = make_client(BRIDGE_INPUT="stream")
    key = new_key("tenant-a")
    reply = client.post("/api/v1/events", json=order("tenant-z"), headers=auth(key))
    assert reply.status_code == 202
    stream = channel_for("order.created", channel_prefix)
    with redis.Redis.from_url(redis_url) as r:
        [(_, fields)] = r.xrange(stream)
        r.delete(stream)
    assert orjson.loads(fields[b"data"])["tenant_id"] == "tenant-a"


def test_the_test_endpoint_is_404_unless_enabled(pg, make_client, received, channel_prefix):
    body = {"event_type": "order.created", "tenant_id": "t-test", "data": order()["data"]}
    assert make_client().post("/test/publish-event", json=body).status_code == 404
    assert (
        make_client(ENABLE_TEST_ENDPOINTS="0").post("/test/publish-event", json=body).status_code
        == 404
    )
    reply = make_client(ENABLE_TEST_ENDPOINTS="1").post("/test/publish-event", json=body)
    assert reply.status_code == 202, reply.text
    [(channel, published)] = settle(received, 1)
    assert channel == channel_for("order.created", channel_prefix)
    assert published["tenant_id"] == "t-test"
    assert published["event_id"] == reply.json()["event_ids"][0]
    assert published["timestamp"]


def test_no_key_text_in_the_logs(client, new_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    key = new_key("tenant-a")
    revoked = new_key("tenant-a", revoked=True)
    for k in (key, revoked, "ak_guess"):
        client.get("/api/v1/reports/dau", headers=auth(k))
        client.post("/api/v1/events", json=order(), headers=auth(k))
        client.get("/api/v1/reports/dau", params={"since": "x"}, headers=auth(k))
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        for k in (key, revoked, key[3:]):
            assert k not in text


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["database"] == ready.json()["redis"] == ready.json()["migrations"] == "ok"
    assert client.get("/docs").status_code == 200
    assert "/api/v1/reports/{name}" in client.get("/openapi.json").json()["paths"]


def test_readiness_says_what_failed(pg, postgres_url, make_client):
    app_client = make_client(REDIS_URL="redis://127.0.0.1:1/0")
    reply = app_client.get("/readyz")
    assert reply.status_code == 503
    assert reply.json()["redis"].startswith("unreachable")
    assert reply.json()["database"] == "ok"
    down = make_client(DATABASE_URL="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    reply = down.get("/readyz")
    assert reply.status_code == 503
    assert reply.json()["database"].startswith("unreachable")
    assert "database" in reply.json()["status"]


def test_readiness_wants_the_newest_schema(pg, make_client, tmp_path):
    from alembic import command
    from analytics.migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0007")
    reply = make_client(DATABASE_URL=url).get("/readyz")
    assert reply.status_code == 503
    assert "0007" in reply.json()["migrations"]
