"""The API's Prometheus metrics count what was done: requests by route template, reports, events."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_api import auth, order
from tests.conftest import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

REPORTS_ROUTE = "/api/v1/reports/{name}"


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(found: Samples, route: str, status: str, method: str = "GET") -> float:
    return value(found, "analytics_api_requests_total", method=method, route=route, status=status)


def test_requests_are_counted_and_timed_by_route_template(pg, client, new_key):
    key = new_key("tenant-secret-name")
    for name in ("dau", "dau", "revenue-by-day"):
        assert client.get(f"/api/v1/reports/{name}", headers=auth(key)).status_code == 200
    assert client.get("/api/v1/reports/csv-please", headers=auth(key)).status_code == 404
    assert client.get("/api/v1/reports/dau", headers=auth("ak_wrong")).status_code == 401
    assert (
        client.get("/api/v1/reports/dau", params={"since": "soon"}, headers=auth(key)).status_code
        == 422
    )
    assert client.get("/tenants/tenant-secret-name/x").status_code == 404
    assert client.request("BREW", "/healthz").status_code == 405
    assert client.get("/healthz").status_code == 200

    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    found = samples(reply.text)

    assert requests(found, REPORTS_ROUTE, "200") == 3
    assert requests(found, REPORTS_ROUTE, "404") == 1
    assert requests(found, REPORTS_ROUTE, "401") == 1
    assert requests(found, REPORTS_ROUTE, "422") == 1
    assert requests(found, "unmatched", "404") == 1
    assert requests(found, "/healthz", "405", method="other") == 1
    assert requests(found, "/healthz", "200") == 1
    assert (
        value(
            found, "analytics_api_request_duration_seconds_count", method="GET", route=REPORTS_ROUTE
        )
        == 6
    )
    # The scrape itself is counted once it is answered.
    assert requests(found, "/metrics", "200") == 0
    assert requests(samples(client.get("/metrics").text), "/metrics", "200") == 1
    # Reports are timed by name, only when they answered.
    report_count = "analytics_api_report_duration_seconds_count"
    assert value(found, report_count, report="dau") == 2
    assert value(found, report_count, report="revenue-by-day") == 1
    assert not any(labels and dict(labels).get("report") == "csv-please" for _, labels in found)
    # No tenant, key or raw path becomes a label.
    for secret in ("tenant-secret-name", key, "csv-please", "soon"):
        assert secret not in reply.text


def test_the_duration_histogram_holds_the_time_taken(pg, client, new_key):
    key = new_key("t")
    started = time.perf_counter()
    for _ in range(5):
        client.get("/api/v1/reports/dau", headers=auth(key))
    elapsed = time.perf_counter() - started
    found = samples(client.get("/metrics").text)
    total = value(
        found, "analytics_api_request_duration_seconds_sum", method="GET", route=REPORTS_ROUTE
    )
    assert 0 < total <= elapsed


def test_events_accepted_and_refused_are_counted(pg, client, new_key, received):
    key = new_key("tenant-a")
    bad = {**order(), "data": {"order_id": "o-2"}}  # no total_amount
    assert client.post("/api/v1/events", json=order(), headers=auth(key)).status_code == 202
    assert client.post("/api/v1/events", json=[order()] * 3, headers=auth(key)).status_code == 202
    mixed = [order(), bad, "text", order(), order()]
    assert client.post("/api/v1/events", json=mixed, headers=auth(key)).status_code == 422
    assert (
        client.post("/api/v1/events", json=[order()] * 1001, headers=auth(key)).status_code == 422
    )
    assert client.post("/api/v1/events", json=order(), headers=auth("ak_no")).status_code == 401

    found = samples(client.get("/metrics").text)

    assert value(found, "analytics_api_events_accepted_total") == 4
    assert value(found, "analytics_api_events_refused_total", reason="invalid") == 2
    assert value(found, "analytics_api_events_refused_total", reason="with_invalid") == 3
    assert value(found, "analytics_api_events_refused_total", reason="too_many") == 1001
    assert requests(found, "/api/v1/events", "202", method="POST") == 2
    assert requests(found, "/api/v1/events", "422", method="POST") == 2
    assert requests(found, "/api/v1/events", "401", method="POST") == 1
    assert len(wait_for(lambda: len(received) >= 4 and received, timeout=5)) == 4


def test_two_apps_count_apart(pg, make_client):
    first, second = make_client(), make_client()
    first.get("/healthz")
    assert requests(samples(first.get("/metrics").text), "/healthz", "200") == 1
    assert requests(samples(second.get("/metrics").text), "/healthz", "200") == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_metrics_port_moves_metrics_off_the_api(pg, pipeline_env, start_process, new_key):
    api_port, metrics_port = free_port(), free_port()
    env = pipeline_env
    server = start_process(
        "serve", ["serve", "--port", str(api_port), "--metrics-port", str(metrics_port)], env
    )
    server.wait_for_output("Uvicorn running")
    key = new_key("tenant-a")
    api = f"http://127.0.0.1:{api_port}"
    for _ in range(3):
        assert httpx.get(f"{api}/api/v1/reports/dau", headers=auth(key)).status_code == 200
    assert httpx.get(f"{api}/metrics").status_code == 404

    reply = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")

    assert reply.status_code == 200
    found = samples(reply.text)
    assert requests(found, REPORTS_ROUTE, "200") == 3
    assert requests(found, "unmatched", "404") == 1
    assert value(found, "process_cpu_seconds_total") > 0

    # A port that is taken: one line on stderr and a non-zero exit, before serving anything.
    clash = start_process(
        "serve-clash", ["serve", "--port", str(free_port()), "--metrics-port", str(metrics_port)],
        env,
    )  # fmt: skip
    assert clash.popen.wait(timeout=60) == 1
    assert f"Error: cannot serve metrics on 127.0.0.1:{metrics_port}" in clash.output()


def test_every_api_metric_is_documented_and_the_dashboard_names_only_real_ones(pg, client):
    import json
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    exported = {
        family.name
        for family in text_string_to_metric_families(client.get("/metrics").text)
        if family.name.startswith("analytics_api_") and not family.name.endswith("_created")
    }
    assert len(exported) == 5
    documented = (docs / "metrics.md").read_text()
    for name in exported:
        suffix = "_total" if f"`{name}_total`" in documented else ""
        assert f"`{name}{suffix}`" in documented, name
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for expr in expressions
        for name in re.findall(r"analytics_api_[a-z_]+", expr)
    }
    assert used and used <= exported
