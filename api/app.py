"""The ASGI app: ``create_app(settings)`` (no ``from __future__ import annotations``: FastAPI
reads the annotations of the routes, which name dependencies local to create_app).

- ``GET /api/v1/reports/{name}``: the rows of ``analytics report NAME --format json`` (or
  csv) for the key's tenant, from the same query layer (:func:`analytics.reports.run`);
- ``GET /api/v1/alerts/open``: the alerts report's rows of the alerts not resolved yet;
- ``GET /``: the dashboard (static files in ``api/static/``, served as they are);
- ``POST /api/v1/events``: one event or an array of them, for the key's tenant, validated
  like the worker validates them (:func:`analytics.events.parse`) and, only if all are
  valid, published where a Rust service would publish them;
- ``POST /test/publish-event``: the same without a key, only with ENABLE_TEST_ENDPOINTS=1;
- ``GET /healthz``, ``GET /readyz``;
- ``GET /metrics``: Prometheus text (:mod:`api.metrics`), unless served on a port of its own.

Keys come as ``Authorization: Bearer <key>``; the tenant is the key's, never a parameter.
Nothing here logs a key.
"""

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import redis
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from analytics.config import Settings
from analytics.db import make_engine
from analytics.errors import InvalidEvent
from analytics.events import channel_for, parse
from analytics.ingest import Context, plan
from analytics.keys import KeyInfo, authenticate
from analytics.reports import REPORTS, ReportError, run, stock
from analytics.reports import Query as ReportQuery
from api.metrics import ApiMetrics, RequestMetrics

#: Events one POST /api/v1/events may carry at most.
MAX_EVENTS_PER_REQUEST = 1000

#: The dashboard's HTML, CSS, JavaScript and vendored Chart.js (package data of ``api``).
STATIC_DIR = Path(__file__).parent / "static"

#: The page loads only this app's files and talks only to it; a framing page cannot
#: overlay it, and a new version of it is fetched on every visit.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'none'"
    ),
    "Cache-Control": "no-cache",
}

_bearer = HTTPBearer(auto_error=False, description="An API key from `analytics keys create`.")


class TestEvent(BaseModel):
    event_type: str
    tenant_id: str
    data: dict[str, Any] = {}


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _day(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


def _key_or_401(db: Session, credentials: HTTPAuthorizationCredentials | None) -> KeyInfo:
    key = authenticate(db, credentials.credentials if credentials else None)
    if key is None:
        raise HTTPException(
            401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


class Publisher:
    """Validates documents as the worker will and publishes them as a Rust service would."""

    def __init__(self, settings: Settings, client: redis.Redis, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.context = Context.from_settings(settings)

    def prepare(self, document: Any, tenant_id: str | None) -> tuple[str, str, str]:
        """(event id, channel, JSON text) of one document, or InvalidEvent saying why not."""
        if not isinstance(document, dict):
            raise InvalidEvent("event must be a JSON object")
        document = dict(document)
        if tenant_id is not None:
            document["tenant_id"] = tenant_id
        if not document.get("event_id"):
            document["event_id"] = uuid.uuid4().hex
        if not document.get("timestamp"):
            document["timestamp"] = _utcnow().isoformat(timespec="microseconds") + "Z"
        raw = orjson.dumps(document)
        event_type = document.get("event_type")
        try:
            channel = channel_for(
                event_type if isinstance(event_type, str) else "",
                self.settings.channel_prefix,
                tenant=str(document.get("tenant_id"))
                if self.settings.tenant_from_channel
                else None,
            )
        except ValueError as exc:
            raise InvalidEvent(f"invalid envelope: event_type: {exc}") from None
        event = parse(
            raw,
            channel=channel,
            received_at=_utcnow(),
            max_bytes=self.settings.max_payload_bytes,
            max_depth=self.settings.max_json_depth,
            pii_salt=self.settings.pii_salt,
        )
        # What the worker would refuse after parsing (a value its column cannot hold,
        # a time outside the accepted window) is refused here too, before publishing.
        plan(event, self.context)
        return event.event_id, channel, raw.decode()

    def publish(self, prepared: list[tuple[str, str, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for _, channel, payload in prepared:
            if self.settings.bridge_input == "stream":
                pipe.xadd(channel, {"data": payload})
            else:
                pipe.publish(channel, payload)
        pipe.execute()

    def accept(self, documents: list[Any], tenant_id: str | None) -> list[str]:
        """Publish all documents, or none: HTTPException 422 with every invalid one's reason."""
        prepared, errors = [], []
        for index, document in enumerate(documents):
            try:
                prepared.append(self.prepare(document, tenant_id))
            except InvalidEvent as exc:
                errors.append({"index": index, "reason": exc.summary, "messages": exc.messages})
        if errors:
            refused = self.metrics.events_refused
            refused.labels("invalid").inc(len(errors))
            refused.labels("with_invalid").inc(len(documents) - len(errors))
            raise HTTPException(
                422, {"message": f"{len(errors)} of {len(documents)} invalid", "errors": errors}
            )
        self.publish(prepared)
        self.metrics.events_accepted.inc(len(prepared))
        return [event_id for event_id, _, _ in prepared]


def create_app(settings: Settings, metrics_route: bool = True) -> FastAPI:
    """The API for ``settings`` (its database, Redis and channel prefix).

    Its metrics are ``app.state.metrics``, served at ``/metrics`` unless ``metrics_route``
    is false (``analytics serve --metrics-port`` serves them on a port of their own).
    """
    from alembic.script import ScriptDirectory

    from analytics.migrations import alembic_config

    engine = make_engine(settings.database_url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    metrics = ApiMetrics()
    publisher = Publisher(settings, client, metrics)
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()

    app = FastAPI(
        title="analytics-pipeline",
        summary="Per-tenant reports and event intake; one API key per tenant.",
        version="1",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.redis = client
    app.state.metrics = metrics
    app.add_middleware(RequestMetrics, metrics=metrics)

    def session() -> Iterator[Session]:
        with sessions() as db, db.begin():
            yield db

    def tenant(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        db: Annotated[Session, Depends(session)],
    ) -> KeyInfo:
        return _key_or_401(db, credentials)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        from alembic.migration import MigrationContext

        checks: dict[str, str] = {}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                current = MigrationContext.configure(conn).get_current_revision()
            checks["database"] = "ok"
            checks["migrations"] = (
                "ok" if current == head else f"at {current}, head is {head}: run analytics migrate"
            )
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
            checks["migrations"] = "unknown"
        try:
            client.ping()
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
        ready = all(value == "ok" for value in checks.values())
        failed = [name for name, value in checks.items() if value != "ok"]
        body = {"status": "ready" if ready else "not ready: " + ", ".join(failed), **checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    def answer(
        credentials: HTTPAuthorizationCredentials | None,
        name: str,
        since: str | None,
        until: str | None,
        limit: int,
        days: int,
        fmt: str,
    ) -> Response:
        with sessions() as db, db.begin():
            key = _key_or_401(db, credentials)
            if name not in REPORTS:
                raise HTTPException(
                    404, f"unknown report {name!r}; choose from {', '.join(REPORTS)}"
                )
            first, last = _day(since, "since"), _day(until, "until")
            started = time.perf_counter()
            try:
                query = ReportQuery(
                    key.tenant_id,
                    first,
                    last,
                    limit=limit,
                    days=days,
                    default_currency=settings.default_currency,
                )
                rows = run(db, name, query)
            except ReportError as exc:
                raise HTTPException(422, str(exc).replace("--", "")) from None
        body = REPORTS[name].render(rows, fmt)
        if fmt == "csv":
            reply = Response(body + "\n", media_type="text/csv")
        else:
            reply = Response(body, media_type="application/json")
        metrics.report_duration.labels(name).observe(time.perf_counter() - started)
        return reply

    @app.get("/api/v1/reports/{name}")
    async def report(
        name: str,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        since: Annotated[str | None, Query(description="First day, YYYY-MM-DD (UTC)")] = None,
        until: Annotated[str | None, Query(description="Last day, YYYY-MM-DD (UTC)")] = None,
        limit: Annotated[int, Query(ge=1, description="top-products: rows per currency")] = 10,
        days: Annotated[int, Query(ge=1, description="dead-stock: days without a sale")] = 30,
        format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
    ) -> Response:
        """The rows of `analytics report NAME --format json` for the key's tenant."""
        wants_csv = format == "csv" or (
            format is None and "text/csv" in request.headers.get("accept", "")
        )
        # The key check, the query and the rendering in one trip to the thread pool: a
        # route with sync dependencies makes one trip for each of them (and two for the
        # session), and under load those hand-overs cost as much CPU as the query.
        return await run_in_threadpool(
            answer, credentials, name, since, until, limit, days, "csv" if wants_csv else "json"
        )

    @app.get("/api/v1/alerts/open")
    def open_alerts(
        key: Annotated[KeyInfo, Depends(tenant)], db: Annotated[Session, Depends(session)]
    ) -> Response:
        """The key's tenant's alerts not resolved yet, newest first (keys of the alerts report)."""
        rows = stock.open_alerts(db, key.tenant_id)
        return Response(REPORTS["alerts"].render(rows, "json"), media_type="application/json")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=DASHBOARD_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.post("/api/v1/events", status_code=202)
    async def events(request: Request, key: Annotated[KeyInfo, Depends(tenant)]) -> dict[str, Any]:
        """One event object or an array of them (at most 1,000), for the key's tenant."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"invalid JSON: {exc}") from None
        documents = body if isinstance(body, list) else [body]
        if not documents:
            raise HTTPException(422, "no events")
        if len(documents) > MAX_EVENTS_PER_REQUEST:
            metrics.events_refused.labels("too_many").inc(len(documents))
            raise HTTPException(
                422, f"{len(documents)} events; at most {MAX_EVENTS_PER_REQUEST} per request"
            )
        # Validating and publishing block (Redis): not on the event loop, which serves everyone.
        ids = await run_in_threadpool(publisher.accept, documents, key.tenant_id)
        return {"accepted": len(ids), "event_ids": ids}

    if metrics_route:

        @app.get("/metrics", include_in_schema=False)
        def prometheus() -> Response:
            body, content_type = metrics.exposition()
            return Response(body, media_type=content_type)

    if settings.enable_test_endpoints:

        @app.post("/test/publish-event", status_code=202)
        def publish_event(event: TestEvent) -> dict[str, Any]:
            """Publish one event without a key (ENABLE_TEST_ENDPOINTS=1 only)."""
            ids = publisher.accept([event.model_dump()], None)
            return {"accepted": 1, "event_ids": ids}

    return app
