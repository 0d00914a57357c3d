"""Through a real bridge and worker: events posted to the API show up in a report."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from analytics.config import Settings
from api.app import create_app
from tests.conftest import wait_for


@pytest.mark.slow
def test_posted_events_reach_a_report(pg, fresh_broker, pipeline_env, start_worker, start_bridge):
    from sqlalchemy.orm import Session

    from analytics.keys import create_key

    tenant = "tenant-e2e"
    with Session(pg) as session, session.begin():
        _, key = create_key(session, tenant, "e2e")
    start_worker()
    start_bridge()
    app = create_app(Settings.from_env({**pipeline_env, "ENABLE_TEST_ENDPOINTS": "1"}))
    client = TestClient(app)
    data = {"order_id": "o-test", "total_amount": 10, "currency": "USD"}
    reply = client.post(
        "/test/publish-event",
        json={"event_type": "order.created", "tenant_id": tenant, "data": data},
    )
    assert reply.status_code == 202, reply.text
    reply = client.post(
        "/api/v1/events",
        json={"event_type": "order.created", "tenant_id": "elsewhere",
              "data": {**data, "order_id": "o-api", "total_amount": 5}},
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip
    assert reply.status_code == 202, reply.text

    def revenue() -> list:
        rows = client.get(
            "/api/v1/reports/revenue-by-day", headers={"Authorization": f"Bearer {key}"}
        ).json()
        return rows if rows and rows[0]["orders"] == 2 else []

    [row] = wait_for(revenue, timeout=60, what="both orders in revenue-by-day")
    assert row["revenue"] == 15.0 and row["currency"] == "USD"
    app.state.engine.dispose()
    app.state.redis.close()
