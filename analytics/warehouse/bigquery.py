"""The BigQuery end of the sink, through the real ``google-cloud-bigquery`` client.

It creates the table when it is missing (schema, day partitions, clustering from
:mod:`analytics.warehouse.rows`) and sends rows with ``insertAll`` (the client's
``insert_rows_json``), each with its ``insertId``. It does not retry: the sink
decides, and records its backoff in the database so that a restarted worker
keeps it. The library is an optional extra (``pip install '.[bigquery]'``) and is
imported only here, only when a sink runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from analytics.config import Settings
from analytics.errors import ConfigError, WarehouseError
from analytics.warehouse.rows import CLUSTER_COLUMNS, PARTITION_COLUMN, SCHEMA, Outgoing

#: Per-row ``insertErrors`` reasons that say nothing is wrong with the row itself: it is
#: sent again. "stopped": the request failed because of another row. Every other
#: reason ("invalid", ...) makes the row a reject.
RETRYABLE_REASONS = frozenset(
    {"stopped", "backendError", "internalError", "timeout", "rateLimitExceeded", ""}
)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


@dataclass
class InsertResult:
    """What BigQuery did with a batch: the rows it refused (index -> reason, message) and
    the rows to send again (a transient per-row error)."""

    rejected: dict[int, tuple[str, str]] = field(default_factory=dict)
    retry: set[int] = field(default_factory=set)


def make_client(settings: Settings) -> Any:
    """A BigQuery client for the settings: anonymous against a local endpoint, else the
    usual application-default credentials."""
    try:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery
    except ImportError:
        raise ConfigError(
            "WAREHOUSE=bigquery needs google-cloud-bigquery: "
            "pip install 'analytics-pipeline[bigquery]'"
        ) from None
    kwargs: dict[str, Any] = {"project": settings.bigquery_project}
    endpoint = settings.bigquery_api_endpoint
    if endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        if urlsplit(endpoint).hostname in _LOCAL_HOSTS:
            kwargs["credentials"] = AnonymousCredentials()
    return bigquery.Client(**kwargs)


def _reason(errors: Sequence[dict[str, Any]]) -> tuple[str, str]:
    real = [e for e in errors if e.get("reason") not in RETRYABLE_REASONS]
    chosen = (real or list(errors) or [{}])[0]
    return str(chosen.get("reason") or ""), str(chosen.get("message") or "")


class BigQueryTable:
    """The sink's table: ``ensure`` it exists, ``insert`` batches into it."""

    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)
        self.table_id = (
            f"{settings.bigquery_project}.{settings.bigquery_dataset}.{settings.bigquery_table}"
        )
        self._ensured = False

    def ensure(self) -> None:
        """Create the dataset and the table if either is missing (once per process)."""
        if self._ensured:
            return
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        timeout = self.settings.warehouse_timeout
        try:
            try:
                self.client.get_table(self.table_id, retry=None, timeout=timeout)
            except NotFound:
                self.client.create_dataset(
                    f"{self.settings.bigquery_project}.{self.settings.bigquery_dataset}",
                    exists_ok=True,
                    retry=None,
                    timeout=timeout,
                )
                table = bigquery.Table(
                    self.table_id,
                    schema=[
                        bigquery.SchemaField(name, kind, mode=mode) for name, kind, mode in SCHEMA
                    ],
                )
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN
                )
                table.clustering_fields = list(CLUSTER_COLUMNS)
                self.client.create_table(table, exists_ok=True, retry=None, timeout=timeout)
        except Exception as exc:
            raise WarehouseError(f"cannot get or create {self.table_id}: {_line(exc)}") from exc
        self._ensured = True

    def insert(self, batch: Sequence[Outgoing]) -> InsertResult:
        """Send one batch; raise WarehouseError when the request as a whole failed."""
        self.ensure()
        try:
            errors = self.client.insert_rows_json(
                self.table_id,
                [item.row for item in batch],
                row_ids=[item.insert_id for item in batch],
                skip_invalid_rows=True,
                retry=None,
                timeout=self.settings.warehouse_timeout,
            )
        except Exception as exc:
            from google.api_core.exceptions import NotFound

            if isinstance(exc, NotFound):
                self._ensured = False  # the table went away: create it again next time
            raise WarehouseError(f"insertAll into {self.table_id} failed: {_line(exc)}") from exc
        result = InsertResult()
        for entry in errors or []:
            index = int(entry.get("index", -1))
            if not 0 <= index < len(batch):
                continue
            reason, message = _reason(entry.get("errors") or [])
            if reason in RETRYABLE_REASONS:
                result.retry.add(index)
            else:
                result.rejected[index] = (reason, message)
        return result


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no details'}"
