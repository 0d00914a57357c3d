"""A small BigQuery REST server for the tests: the calls the real client makes, and faults on demand.

It speaks what ``google-cloud-bigquery`` sends for the sink (datasets get/insert,
tables get/insert, ``tabledata.insertAll``) under ``/bigquery/v2``, checks rows
against the table's schema (required fields, TIMESTAMP and JSON values), and
deduplicates by ``insertId`` as BigQuery does, while recording every delivery.
Faults (:class:`Faults`) make it answer 503, hang past the client's timeout,
refuse rows (``insertErrors``), fail rows transiently, or drop the connection
after it accepted the rows.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PREFIX = "/bigquery/v2/projects/"
_DATASETS = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets(?:/([^/]+))?$")
_TABLES = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables(?:/([^/]+))?$")
_INSERT = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)/insertAll$")


@dataclass
class Faults:
    """What the server does wrong, changed by the test while it runs."""

    #: Answer insertAll (and table calls) with 503 while set.
    unavailable: bool = False
    #: Accept the rows, then sleep this long before answering (past the client's timeout).
    hang_seconds: float = 0.0
    #: Accept the rows of this many requests, then close the connection without answering.
    drop_after_accept: int = 0
    #: Rows for which this returns a reason are refused with it (an ``insertErrors`` entry).
    reject: Callable[[dict[str, Any]], str | None] | None = None
    #: Fail every row of this many requests with a transient per-row error (backendError).
    transient_requests: int = 0
    #: Called with the insertIds of each request the server accepted, before it answers.
    on_accept: Callable[[list[str]], None] | None = None


@dataclass
class Store:
    """What the server holds: tables, and every row by insertId with how often it came."""

    datasets: set[tuple[str, str]] = field(default_factory=set)
    tables: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Every accepted row's insertId, in arrival order, duplicates included.
    arrivals: list[str] = field(default_factory=list)
    requests: int = 0
    refused_requests: int = 0


def _valid(schema: list[dict[str, Any]], row: dict[str, Any]) -> str | None:
    """Why BigQuery would refuse this row, or None."""
    names = {f["name"]: f for f in schema}
    for name in row:
        if name not in names:
            return f"no such field: {name}"
    for name, spec in names.items():
        value = row.get(name)
        if value is None:
            if spec.get("mode") == "REQUIRED":
                return f"missing required field: {name}"
            continue
        kind = spec["type"]
        if kind == "TIMESTAMP":
            try:
                datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                return f"invalid timestamp {value!r} for field {name}"
        elif kind == "JSON":
            try:
                json.loads(value)
            except (TypeError, ValueError):
                return f"invalid JSON for field {name}"
        elif kind == "STRING" and not isinstance(value, str):
            return f"not a string: {name}"
    return None


class BigQueryServer:
    """A threaded HTTP server on 127.0.0.1; ``url`` is the client's ``api_endpoint``."""

    def __init__(self, check_rows: bool = True) -> None:
        #: Check each row against the schema (off: only deduplicate, for the benchmark).
        self.check_rows = check_rows
        self.faults = Faults()
        self.store = Store()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BigQueryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def distinct(self) -> set[str]:
        with self.lock:
            return set(self.store.rows)

    def arrivals(self) -> list[str]:
        with self.lock:
            return list(self.store.arrivals)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm
                # and the client's delayed ACK hold each answer ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, reason: str, message: str) -> None:
                self._send(
                    status,
                    {
                        "error": {
                            "code": status,
                            "message": message,
                            "errors": [{"reason": reason, "message": message}],
                        }
                    },
                )

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if server.faults.unavailable:
                    return self._error(503, "backendError", "service unavailable")
                match = _TABLES.match(path)
                if match and match.group(3):
                    key = (match.group(1), match.group(2), match.group(3))
                    with server.lock:
                        table = server.store.tables.get(key)
                    if table is None:
                        return self._error(404, "notFound", f"Not found: Table {':'.join(key)}")
                    return self._send(200, table)
                match = _DATASETS.match(path)
                if match and match.group(2):
                    key2 = (match.group(1), match.group(2))
                    if key2 not in server.store.datasets:
                        return self._error(404, "notFound", f"Not found: Dataset {key2}")
                    return self._send(
                        200, {"datasetReference": {"projectId": key2[0], "datasetId": key2[1]}}
                    )
                self._error(404, "notFound", f"no route for GET {path}")

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                body = self._body()
                if server.faults.unavailable:
                    return self._error(503, "backendError", "service unavailable")
                match = _INSERT.match(path)
                if match:
                    return self._insert_all((match.group(1), match.group(2), match.group(3)), body)
                match = _TABLES.match(path)
                if match and not match.group(3):
                    ref = body["tableReference"]
                    key = (ref["projectId"], ref["datasetId"], ref["tableId"])
                    with server.lock:
                        if (key[0], key[1]) not in server.store.datasets:
                            return self._error(404, "notFound", "Not found: Dataset")
                        if key in server.store.tables:
                            return self._error(409, "duplicate", "Already Exists: Table")
                        server.store.tables[key] = body
                    return self._send(200, body)
                match = _DATASETS.match(path)
                if match and not match.group(2):
                    ref = body["datasetReference"]
                    key2 = (ref["projectId"], ref["datasetId"])
                    with server.lock:
                        if key2 in server.store.datasets:
                            return self._error(409, "duplicate", "Already Exists: Dataset")
                        server.store.datasets.add(key2)
                    return self._send(200, body)
                self._error(404, "notFound", f"no route for POST {path}")

            def _insert_all(self, key: tuple[str, str, str], body: dict[str, Any]) -> None:
                faults = server.faults
                with server.lock:
                    server.store.requests += 1
                    table = server.store.tables.get(key)
                    if table is None:
                        return self._error(404, "notFound", f"Not found: Table {':'.join(key)}")
                    schema = table["schema"]["fields"]
                    rows = body.get("rows", [])
                    if faults.transient_requests > 0:
                        faults.transient_requests -= 1
                        server.store.refused_requests += 1
                        errors = [
                            {
                                "index": i,
                                "errors": [{"reason": "backendError", "message": "try again"}],
                            }
                            for i in range(len(rows))
                        ]
                        return self._send(
                            200,
                            {"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors},
                        )
                    errors = []
                    for index, entry in enumerate(rows):
                        why = _valid(schema, entry["json"]) if server.check_rows else None
                        if why is None and faults.reject is not None:
                            why = faults.reject(entry["json"])
                        if why is not None:
                            errors.append(
                                {"index": index, "errors": [{"reason": "invalid", "message": why}]}
                            )
                    if errors and not body.get("skipInvalidRows"):
                        bad = {e["index"] for e in errors}
                        errors += [
                            {"index": i, "errors": [{"reason": "stopped", "message": ""}]}
                            for i in range(len(rows))
                            if i not in bad
                        ]
                        accepted: list[dict[str, Any]] = []
                    else:
                        bad = {e["index"] for e in errors}
                        accepted = [entry for i, entry in enumerate(rows) if i not in bad]
                    for entry in accepted:
                        server.store.arrivals.append(entry["insertId"])
                        server.store.rows.setdefault(entry["insertId"], entry["json"])
                    drop = faults.drop_after_accept > 0
                    if drop:
                        faults.drop_after_accept -= 1
                if faults.on_accept is not None:
                    faults.on_accept([entry["insertId"] for entry in accepted])
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if faults.hang_seconds:
                    time.sleep(faults.hang_seconds)
                response: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
                if errors:
                    response["insertErrors"] = sorted(errors, key=lambda e: e["index"])
                self._send(200, response)

        return Handler


@contextmanager
def running() -> Iterator[BigQueryServer]:
    server = BigQueryServer().start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    """``python -m tests.warehouse.bigquery_server [--no-checks]``: serve until killed."""
    server = BigQueryServer(check_rows="--no-checks" not in sys.argv).start()
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
