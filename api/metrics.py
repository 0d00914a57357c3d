"""The HTTP API's Prometheus metrics, all named ``analytics_api_*`` (see docs/metrics.md).

Each app has its own registry (:class:`ApiMetrics`), so that two apps in one process
(the tests) count apart. Requests are counted by the *route template* they matched
(``/api/v1/reports/{name}``), never by their raw path, so that no tenant, key or
made-up URL becomes a label: a path no route matched is counted as ``unmatched``.
:class:`RequestMetrics` is a plain ASGI middleware: it reads the route the router
left in the scope once the response is sent, and costs a few label look-ups per
request. Reports are timed by name as well (known names only), and the events the
API publishes or refuses are counted by :class:`api.app.Publisher`.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("api")

#: The ``route`` label of a request no route matched (a 404 for an unknown path).
UNMATCHED = "unmatched"

#: Methods counted by name; any other (a client's invention) is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Latency buckets in seconds: fine below 100 ms, where a report should answer.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ApiMetrics:
    """The API's metrics in a registry of their own (with the process's own metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.requests = Counter(
            "analytics_api_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "analytics_api_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response, by method and route "
            "template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.report_duration = Histogram(
            "analytics_api_report_duration_seconds",
            "Seconds a report took to query and render (a 200 answer), by report name.",
            ["report"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "analytics_api_events_accepted_total",
            "Events published by POST /api/v1/events and POST /test/publish-event.",
            registry=self.registry,
        )
        self.events_refused = Counter(
            "analytics_api_events_refused_total",
            "Events sent and not published (answered 422), by reason: invalid (failed "
            "validation), with_invalid (valid, in a request with an invalid one), too_many "
            "(in a request over the limit).",
            ["reason"],
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_template(scope: Scope) -> str:
    """The template of the route that took the request (``/api/v1/reports/{name}``)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) and template else UNMATCHED


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by method and route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts a response

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.record(scope, status, time.perf_counter() - started)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        route = route_template(scope)
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.duration.labels(method, route).observe(seconds)


def serve(metrics: ApiMetrics, port: int, host: str) -> None:
    """Serve ``metrics`` on ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
