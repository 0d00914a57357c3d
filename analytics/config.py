"""Settings: the one place that reads the environment, validated once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from analytics.errors import ConfigError

#: Where Rust services publish, and the default Celery broker.
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: The bridge psubscribes this; the category is the first segment the ``*`` matches.
DEFAULT_CHANNEL_PATTERN = "events:*"
#: Zero-setup storage: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///analytics.db"
#: Whether the writer's statements are PREPAREd once per database connection (off
#: behind a pooler that hands one session's transactions to different connections).
DEFAULT_DATABASE_PREPARE = True
#: Currency of an order or payment that names none.
DEFAULT_CURRENCY = "USD"
#: Largest message the bridge parses; anything bigger is a dead letter.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
#: A dead letter keeps at most this many bytes of its message (and the size and
#: SHA-256 of the whole): an oversized message must not travel whole through the
#: broker nor be stored whole. 64 KiB holds any real event many times over.
DEFAULT_DEAD_LETTER_KEEP_BYTES = 64 * 1024
#: Events must be dated in [EVENT_TIME_MIN, EVENT_TIME_MAX) (UTC); others are dead
#: letters. A date at either end of the calendar (year 1, year 9999) is garbage, and
#: the day arithmetic of rollups (MAU looks 29 days back) cannot go past them.
DEFAULT_EVENT_TIME_MIN = datetime(2000, 1, 1)
DEFAULT_EVENT_TIME_MAX = datetime(2100, 1, 1)
#: JSON nested deeper than this is a dead letter, found from the bytes before parsing
#: (an event of the contract nests 4 levels: envelope, data, items, item).
DEFAULT_MAX_JSON_DEPTH = 32
#: The bridge hands a group to Celery when it holds this many events ...
DEFAULT_BRIDGE_BATCH_SIZE = 500
#: ... or when its oldest event has waited this long, whichever comes first (an
#: event after a quiet spell of this long goes at once). Each task costs a few ms
#: however small: at 10 ms, 1,000 events/s became tasks of ~3 events and the
#: workers fell behind (benchmarks/pipeline.py); 50 ms gives ~15 per task.
DEFAULT_BRIDGE_FLUSH_MS = 50.0
#: A partial batch of fewer than BRIDGE_FILL_EVENTS events waits up to this long to
#: fill (a quiet stream), one that holds that many goes at BRIDGE_FLUSH_MS (a busy
#: stream): a task costs ~10-20 ms of CPU whatever it carries, so at everyday rates
#: small tasks spent most of the pipeline's CPU (benchmarks/pipeline.py --only cpu).
#: It is the hold of a trickle: a busier stream holds less (BRIDGE_HOLD_EVENT_US).
#: p99 publish -> commit is about the hold plus the task: 210 ms with 250 us an event
#: gave p99 205-208 ms at 500 events/s and 211-226 at 2,000, where a fixed 150 gave
#: 167-169 and 234-256 (2026-12-07). Never below BRIDGE_FLUSH_MS.
DEFAULT_BRIDGE_HOLD_BUDGET_MS = 210.0
#: Microseconds of the hold budget each event of a batch takes: a batch's task takes
#: longer the more it carries, and the budget is for publish -> commit. A batch of a
#: stream of ``r`` events a second holds ``r x hold`` events, so the hold is
#: BRIDGE_HOLD_BUDGET_MS / (1 + this x r), r read over about the last second: 187 ms
#: at 500 events/s, 140 at 2,000. 0: the hold is the budget whatever the rate.
DEFAULT_BRIDGE_HOLD_EVENT_US = 250.0
#: ... the events a batch needs to go at BRIDGE_FLUSH_MS rather than at the budget.
DEFAULT_BRIDGE_FILL_EVENTS = 100
#: Whether a due batch of fewer than BRIDGE_FILL_EVENTS goes out as one message with
#: the other under-filled batches of its category (the ``<category>.mixed`` task)
#: rather than as one message per event type: the fixed cost of a task dominates at
#: everyday rates, and a category has up to four types.
DEFAULT_BRIDGE_MIX_TYPES = True
#: Whether such a message also takes the under-filled batches of the other categories
#: (the ``events.mixed`` task, on the queue of the category with most events in it):
#: at a few hundred events a second every category is under-filled, and one task per
#: hold instead of one per category and hold is what halves the CPU per event then.
#: Busy types keep their own tasks on their own queue either way.
DEFAULT_BRIDGE_MIX_CATEGORIES = True
#: While the workers are behind (messages wait in a group's queue on a Redis broker),
#: a partial batch is held up to this long instead: sending it would only put one
#: more small task, with its few ms of fixed cost, behind the others. Fewer, larger
#: tasks let the workers catch up (1,000 events/s beside a CPU hog: p99 1.5 s at a
#: fixed 50 ms, see README "Performance"). Never below BRIDGE_FLUSH_MS.
DEFAULT_BRIDGE_MAX_HOLD_MS = 250.0
#: Bytes the bridge holds in memory, read and not yet handed to Celery (channel and
#: payload plus 256 bytes of Python objects per message; measured RSS growth up to
#: ~1.35x that). Past it, the pub/sub bridge spills to a file and the stream bridge
#: stops reading until there is room. 128 MiB (~130,000 simulated events) keeps the
#: bridge within the 300 MB of issue 4's target (benchmarks/backpressure.py).
DEFAULT_BRIDGE_MAX_BUFFER_BYTES = 128 * 1024 * 1024
#: What the bridge reads: Redis pub/sub (at-most-once) or Redis Streams (durable).
BRIDGE_INPUTS = ("pubsub", "stream")
DEFAULT_BRIDGE_INPUT = "pubsub"
#: The consumer group every stream bridge reads in (one group: each entry to one bridge).
DEFAULT_STREAM_GROUP = "analytics"
#: A stream entry read and not acknowledged for this long is taken over (XAUTOCLAIM)
#: by another bridge: its reader died. Well above the time an entry normally waits
#: for its batch to be sent (BRIDGE_FLUSH_MS plus one send).
DEFAULT_STREAM_CLAIM_IDLE_MS = 30_000
#: Seconds between the bridge's per-category count log lines.
DEFAULT_BRIDGE_LOG_INTERVAL = 10.0
#: Seconds before Redis redelivers a message a worker took and never acknowledged.
#: It must exceed the longest a worker legitimately holds one: a batch takes well
#: under a second, but a retried batch waits in the worker for its countdown (up
#: to 30 s) and a rollup can take seconds. A shorter timeout only costs duplicate
#: deliveries (counted once); a longer one delays a lost worker's batches, which
#: come back after it plus one restore sweep: 90 + 10 s, within two minutes.
DEFAULT_VISIBILITY_TIMEOUT = 90
#: Retries of a batch whose database is unreachable (backoff 1, 2, 4 ... 30 s).
DEFAULT_TASK_MAX_RETRIES = 12
#: An hour needs this many processed + failed payments before its failure rate alerts ...
DEFAULT_PAYMENT_ALERT_MIN_PAYMENTS = 20
#: ... and alerts at this failure rate (failed / (processed + failed)) or above.
DEFAULT_PAYMENT_ALERT_FAILURE_RATE = 0.25
#: Seconds between beat's rollup refreshes.
DEFAULT_ROLLUP_INTERVAL = 300.0
#: Days (ending today) that every rollup refresh recomputes.
DEFAULT_ROLLUP_RECENT_DAYS = 2
#: Seconds the active beat's lock outlives its last renewal. Beat renews it at
#: least every fifth of this (its longest sleep), and a standby beat tries to take
#: it as often, so a dead beat is replaced within 1.2 times this.
DEFAULT_BEAT_LOCK_TIMEOUT = 30.0
#: Where beat keeps its schedule and its lock in REDIS_URL's database.
DEFAULT_BEAT_KEY_PREFIX = "analytics:beat:"
#: Where stored events are copied: nowhere, or BigQuery (analytics/warehouse/).
WAREHOUSES = ("", "bigquery")
#: The BigQuery table the sink writes when BIGQUERY_TABLE is not set.
DEFAULT_BIGQUERY_TABLE = "events"
#: Rows per insertAll request: BigQuery's own recommendation is up to 500 rows a
#: request (the hard limits are 50,000 rows and 10 MB).
DEFAULT_WAREHOUSE_BATCH = 500
MAX_WAREHOUSE_BATCH = 50_000
#: Seconds between the sink's runs (beat): the longest a stored event waits for a
#: partial batch, plus the time its transaction's neighbours take to commit.
DEFAULT_WAREHOUSE_INTERVAL = 5.0
#: Seconds one insertAll request may take before it counts as failed (and is sent again).
DEFAULT_WAREHOUSE_TIMEOUT = 30.0
#: insertAll requests one sink run has in flight at once: each waits for BigQuery's answer
#: (tens of ms), so one at a time would cap the rate at a few batches a second.
DEFAULT_WAREHOUSE_CONCURRENCY = 4
#: Longest wait between two attempts while BigQuery keeps failing (backoff 1, 2, 4 ... s).
DEFAULT_WAREHOUSE_MAX_BACKOFF = 60.0
#: Days of event time the raw store keeps (``events`` and dead letters); 0 keeps them
#: forever. Beat prunes past it once a day; aggregates are never pruned.
DEFAULT_RAW_RETENTION_DAYS = 0
#: Monthly partitions of ``events`` created ahead of the current month (PostgreSQL):
#: an event dated next month must find its partition waiting, not the DEFAULT one.
DEFAULT_RAW_PARTITIONS_AHEAD = 2


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _time(env: Mapping[str, str], name: str, default: datetime) -> datetime:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an ISO 8601 date or time") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a flag (1 or 0)")


def safe_url(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


#: URL schemes that name PostgreSQL without the driver this project installs.
_POSTGRES_SCHEMES = ("postgres://", "postgresql://")


def database_url(url: str) -> str:
    """``url`` with the installed PostgreSQL driver named: ``postgres://`` (Heroku's spelling)
    and ``postgresql://`` (SQLAlchemy 2.1 reads it as psycopg 3) both mean psycopg2 here."""
    if "://" not in url:
        raise ConfigError(
            f"DATABASE_URL={safe_url(url)!r} is not a URL "
            "(e.g. postgresql://user:password@host:5432/analytics or sqlite:///analytics.db)"
        )
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


#: ``ssl_cert_reqs`` of a ``rediss://`` URL: how the server's certificate is checked.
REDIS_CERT_REQS = ("required", "optional", "none")


def tls_redis_url(name: str, url: str) -> str:
    """A ``rediss://`` URL with ``ssl_cert_reqs`` (``required`` unless it says otherwise).

    Celery's result backend refuses a rediss URL without it, and kombu, RedBeat and
    redis-py then all verify the server's certificate against the system's CAs or
    the URL's ``ssl_ca_certs``: TLS is on for every process, verified by default.
    """
    if not url.startswith("rediss://"):
        return url
    base, _, query = url.partition("?")
    params = [pair for pair in query.split("&") if pair]
    given = [p.partition("=")[2] for p in params if p.partition("=")[0] == "ssl_cert_reqs"]
    if not given:
        return f"{base}?{'&'.join([*params, 'ssl_cert_reqs=required'])}"
    value = given[-1].lower().removeprefix("cert_")
    if value not in REDIS_CERT_REQS:
        raise ConfigError(
            f"{name}: ssl_cert_reqs={given[-1]!r} is not one of {', '.join(REDIS_CERT_REQS)}"
        )
    return url


#: Settings whose values are URLs that may carry a password.
_URL_FIELDS = ("redis_url", "celery_broker_url", "database_url", "celery_result_backend")


@dataclass(frozen=True)
class Settings:
    """Every knob of every process, read from the environment by :func:`from_env`.

    Its repr hides secrets (URL passwords, the PII salt): settings end up in logs
    and tracebacks.
    """

    redis_url: str = DEFAULT_REDIS_URL
    event_channel_pattern: str = DEFAULT_CHANNEL_PATTERN
    celery_broker_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    database_prepare: bool = DEFAULT_DATABASE_PREPARE
    pii_salt: str | None = field(default=None, repr=False)
    default_currency: str = DEFAULT_CURRENCY
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    dead_letter_keep_bytes: int = DEFAULT_DEAD_LETTER_KEEP_BYTES
    event_time_min: datetime = DEFAULT_EVENT_TIME_MIN
    event_time_max: datetime = DEFAULT_EVENT_TIME_MAX
    bridge_batch_size: int = DEFAULT_BRIDGE_BATCH_SIZE
    bridge_flush_ms: float = DEFAULT_BRIDGE_FLUSH_MS
    bridge_max_hold_ms: float = DEFAULT_BRIDGE_MAX_HOLD_MS
    bridge_hold_budget_ms: float = DEFAULT_BRIDGE_HOLD_BUDGET_MS
    bridge_hold_event_us: float = DEFAULT_BRIDGE_HOLD_EVENT_US
    bridge_fill_events: int = DEFAULT_BRIDGE_FILL_EVENTS
    bridge_mix_types: bool = DEFAULT_BRIDGE_MIX_TYPES
    bridge_mix_categories: bool = DEFAULT_BRIDGE_MIX_CATEGORIES
    bridge_log_interval: float = DEFAULT_BRIDGE_LOG_INTERVAL
    bridge_max_buffer_bytes: int = DEFAULT_BRIDGE_MAX_BUFFER_BYTES
    #: Where the pub/sub bridge's spool file goes; empty: the system's temporary directory.
    bridge_spool_dir: str = ""
    bridge_input: str = DEFAULT_BRIDGE_INPUT
    stream_group: str = DEFAULT_STREAM_GROUP
    #: This bridge's name in the consumer group; empty: ``<hostname>-<pid>``.
    stream_consumer: str = ""
    stream_claim_idle_ms: int = DEFAULT_STREAM_CLAIM_IDLE_MS
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    task_max_retries: int = DEFAULT_TASK_MAX_RETRIES
    payment_alert_min_payments: int = DEFAULT_PAYMENT_ALERT_MIN_PAYMENTS
    payment_alert_failure_rate: float = DEFAULT_PAYMENT_ALERT_FAILURE_RATE
    rollup_interval: float = DEFAULT_ROLLUP_INTERVAL
    rollup_recent_days: int = DEFAULT_ROLLUP_RECENT_DAYS
    beat_lock_timeout: float = DEFAULT_BEAT_LOCK_TIMEOUT
    beat_key_prefix: str = DEFAULT_BEAT_KEY_PREFIX
    celery_result_backend: str = DEFAULT_REDIS_URL
    #: Events must carry the tenant their channel ends with (events:order:created:T):
    #: a producer whose Redis user may publish on T's channels speaks for T only.
    tenant_from_channel: bool = False
    #: The HTTP API's POST /test/publish-event (no key needed): for tests and demos only.
    enable_test_endpoints: bool = False
    #: "bigquery" copies every stored event to BigQuery; empty: no warehouse.
    warehouse: str = ""
    bigquery_project: str = ""
    bigquery_dataset: str = ""
    bigquery_table: str = DEFAULT_BIGQUERY_TABLE
    #: Another API root (an emulator, the tests' server); empty: Google's.
    bigquery_api_endpoint: str = ""
    warehouse_batch: int = DEFAULT_WAREHOUSE_BATCH
    warehouse_interval: float = DEFAULT_WAREHOUSE_INTERVAL
    warehouse_timeout: float = DEFAULT_WAREHOUSE_TIMEOUT
    warehouse_concurrency: int = DEFAULT_WAREHOUSE_CONCURRENCY
    warehouse_max_backoff: float = DEFAULT_WAREHOUSE_MAX_BACKOFF
    raw_retention_days: int = DEFAULT_RAW_RETENTION_DAYS
    raw_partitions_ahead: int = DEFAULT_RAW_PARTITIONS_AHEAD

    def __repr__(self) -> str:
        shown = []
        for item in fields(self):
            if not item.repr:
                continue
            value = getattr(self, item.name)
            if item.name in _URL_FIELDS:
                value = safe_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def restore_interval(self) -> float:
        """Seconds between the broker's sweeps for batches whose visibility timeout passed.

        A quarter of the timeout, from 1 to 10 s: a lost worker's batches come back
        at most a quarter of the timeout after it, for one cheap Redis query a sweep.
        """
        return min(10.0, max(1.0, self.visibility_timeout / 4))

    @property
    def ledger_resend_after(self) -> float:
        """Seconds after which the bridge re-sends a batch no worker finished (tasks/ledger.py).

        Twice the visibility timeout: by then Redis's own redelivery has had its turn.
        """
        return 2.0 * self.visibility_timeout

    @property
    def beat_max_interval(self) -> float:
        """Beat's longest sleep: it renews its lock, or a standby tries to take it, this often."""
        return self.beat_lock_timeout / 5

    @property
    def warehouse_enabled(self) -> bool:
        """Whether stored events are copied to a warehouse (validated complete by from_env)."""
        return self.warehouse == "bigquery"

    @property
    def warehouse_sink(self) -> str:
        """The sink's name: its destination (a new destination starts from the first event)."""
        if not self.warehouse_enabled:
            return ""
        return f"bigquery:{self.bigquery_project}.{self.bigquery_dataset}.{self.bigquery_table}"

    @property
    def channel_prefix(self) -> str:
        """The part of the pattern before ``*``: ``events:`` for ``events:*``."""
        return self.event_channel_pattern.split("*", 1)[0]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
        pattern = env.get("EVENT_CHANNEL_PATTERN") or DEFAULT_CHANNEL_PATTERN
        if "*" not in pattern:
            raise ConfigError(
                f"EVENT_CHANNEL_PATTERN={pattern!r} needs a '*' where the category goes"
            )
        for name in ("REDIS_URL", "CELERY_BROKER_URL"):
            value = env.get(name)
            if value and "://" not in value:
                raise ConfigError(f"{name}={value!r} is not a URL (e.g. redis://localhost:6379/0)")
        redis_url = tls_redis_url("REDIS_URL", redis_url)
        broker_url = tls_redis_url("CELERY_BROKER_URL", env.get("CELERY_BROKER_URL") or redis_url)
        result_backend = tls_redis_url(
            "CELERY_RESULT_BACKEND", env.get("CELERY_RESULT_BACKEND") or redis_url
        )
        bridge_input = (env.get("BRIDGE_INPUT") or DEFAULT_BRIDGE_INPUT).lower()
        if bridge_input not in BRIDGE_INPUTS:
            raise ConfigError(
                f"BRIDGE_INPUT={bridge_input!r} is not one of {', '.join(BRIDGE_INPUTS)}"
            )
        currency = (env.get("DEFAULT_CURRENCY") or DEFAULT_CURRENCY).upper()
        if len(currency) != 3 or not currency.isalpha():
            raise ConfigError(f"DEFAULT_CURRENCY={currency!r} is not a 3-letter currency code")
        time_min = _time(env, "EVENT_TIME_MIN", DEFAULT_EVENT_TIME_MIN)
        time_max = _time(env, "EVENT_TIME_MAX", DEFAULT_EVENT_TIME_MAX)
        if time_min >= time_max or time_min.year < 2 or time_max.year > 9998:
            raise ConfigError(
                f"EVENT_TIME_MIN={time_min:%Y-%m-%d} must come before "
                f"EVENT_TIME_MAX={time_max:%Y-%m-%d}, both between years 2 and 9998"
            )
        return cls(
            **_warehouse(env),
            redis_url=redis_url,
            event_channel_pattern=pattern,
            celery_broker_url=broker_url,
            database_url=database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            database_prepare=_flag(env, "DATABASE_PREPARE", DEFAULT_DATABASE_PREPARE),
            pii_salt=env.get("PII_SALT") or None,
            default_currency=currency,
            max_payload_bytes=_int(env, "MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES),
            max_json_depth=_int(env, "MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH),
            dead_letter_keep_bytes=_int(
                env, "DEAD_LETTER_KEEP_BYTES", DEFAULT_DEAD_LETTER_KEEP_BYTES
            ),
            event_time_min=time_min,
            event_time_max=time_max,
            bridge_batch_size=_int(env, "BRIDGE_BATCH_SIZE", DEFAULT_BRIDGE_BATCH_SIZE),
            bridge_flush_ms=_float(env, "BRIDGE_FLUSH_MS", DEFAULT_BRIDGE_FLUSH_MS),
            bridge_max_hold_ms=_float(env, "BRIDGE_MAX_HOLD_MS", DEFAULT_BRIDGE_MAX_HOLD_MS),
            bridge_hold_budget_ms=_float(
                env, "BRIDGE_HOLD_BUDGET_MS", DEFAULT_BRIDGE_HOLD_BUDGET_MS
            ),
            bridge_hold_event_us=_float(env, "BRIDGE_HOLD_EVENT_US", DEFAULT_BRIDGE_HOLD_EVENT_US),
            bridge_fill_events=_int(env, "BRIDGE_FILL_EVENTS", DEFAULT_BRIDGE_FILL_EVENTS),
            bridge_mix_types=_flag(env, "BRIDGE_MIX_TYPES", DEFAULT_BRIDGE_MIX_TYPES),
            bridge_mix_categories=_flag(
                env, "BRIDGE_MIX_CATEGORIES", DEFAULT_BRIDGE_MIX_CATEGORIES
            ),
            bridge_log_interval=_float(
                env, "BRIDGE_LOG_INTERVAL", DEFAULT_BRIDGE_LOG_INTERVAL, minimum=0.1
            ),
            bridge_max_buffer_bytes=_int(
                env, "BRIDGE_MAX_BUFFER_BYTES", DEFAULT_BRIDGE_MAX_BUFFER_BYTES
            ),
            bridge_spool_dir=env.get("BRIDGE_SPOOL_DIR") or "",
            bridge_input=bridge_input,
            stream_group=env.get("STREAM_GROUP") or DEFAULT_STREAM_GROUP,
            stream_consumer=env.get("STREAM_CONSUMER") or "",
            stream_claim_idle_ms=_int(env, "STREAM_CLAIM_IDLE_MS", DEFAULT_STREAM_CLAIM_IDLE_MS),
            visibility_timeout=_int(env, "CELERY_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT),
            task_max_retries=_int(env, "TASK_MAX_RETRIES", DEFAULT_TASK_MAX_RETRIES, minimum=0),
            payment_alert_min_payments=_int(
                env, "PAYMENT_ALERT_MIN_PAYMENTS", DEFAULT_PAYMENT_ALERT_MIN_PAYMENTS
            ),
            payment_alert_failure_rate=_float(
                env, "PAYMENT_ALERT_FAILURE_RATE", DEFAULT_PAYMENT_ALERT_FAILURE_RATE
            ),
            rollup_interval=_float(env, "ROLLUP_INTERVAL", DEFAULT_ROLLUP_INTERVAL, minimum=1),
            rollup_recent_days=_int(env, "ROLLUP_RECENT_DAYS", DEFAULT_ROLLUP_RECENT_DAYS),
            beat_lock_timeout=_float(
                env, "BEAT_LOCK_TIMEOUT", DEFAULT_BEAT_LOCK_TIMEOUT, minimum=5
            ),
            beat_key_prefix=env.get("BEAT_KEY_PREFIX") or DEFAULT_BEAT_KEY_PREFIX,
            celery_result_backend=result_backend,
            enable_test_endpoints=_flag(env, "ENABLE_TEST_ENDPOINTS"),
            raw_retention_days=_int(
                env, "RAW_RETENTION_DAYS", DEFAULT_RAW_RETENTION_DAYS, minimum=0
            ),
            raw_partitions_ahead=_int(
                env, "RAW_PARTITIONS_AHEAD", DEFAULT_RAW_PARTITIONS_AHEAD, minimum=1
            ),
            tenant_from_channel=_flag(env, "TENANT_FROM_CHANNEL"),
        )


def _warehouse(env: Mapping[str, str]) -> dict[str, Any]:
    """The warehouse settings: all of them valid when WAREHOUSE is set, else only defaults."""
    warehouse = (env.get("WAREHOUSE") or "").strip().lower()
    if warehouse not in WAREHOUSES:
        raise ConfigError(f"WAREHOUSE={warehouse!r} is not one of: bigquery (or empty for none)")
    names = {
        "bigquery_project": env.get("BIGQUERY_PROJECT") or "",
        "bigquery_dataset": env.get("BIGQUERY_DATASET") or "",
        "bigquery_table": env.get("BIGQUERY_TABLE") or DEFAULT_BIGQUERY_TABLE,
    }
    endpoint = env.get("BIGQUERY_API_ENDPOINT") or ""
    if warehouse:
        for key, value in names.items():
            variable = key.upper()
            if not value:
                raise ConfigError(f"WAREHOUSE=bigquery needs {variable} (it is not set)")
            # Project ids may hold '-', '.' and ':' (domain-scoped); datasets and tables
            # only letters, digits and '_'.
            allowed = _BQ_PROJECT if key == "bigquery_project" else _BQ_NAME
            if not allowed.fullmatch(value):
                raise ConfigError(f"{variable}={value!r} is not a valid BigQuery name")
        if endpoint and "://" not in endpoint:
            raise ConfigError(
                f"BIGQUERY_API_ENDPOINT={endpoint!r} is not a URL (e.g. http://localhost:9050)"
            )
    batch = _int(env, "WAREHOUSE_BATCH", DEFAULT_WAREHOUSE_BATCH)
    if batch > MAX_WAREHOUSE_BATCH:
        raise ConfigError(
            f"WAREHOUSE_BATCH={batch} is over BigQuery's limit of "
            f"{MAX_WAREHOUSE_BATCH:,} rows a request"
        )
    return {
        "warehouse": warehouse,
        **names,
        "bigquery_api_endpoint": endpoint,
        "warehouse_batch": batch,
        "warehouse_interval": _float(
            env, "WAREHOUSE_INTERVAL", DEFAULT_WAREHOUSE_INTERVAL, minimum=0.1
        ),
        "warehouse_timeout": _float(
            env, "WAREHOUSE_TIMEOUT", DEFAULT_WAREHOUSE_TIMEOUT, minimum=0.1
        ),
        "warehouse_concurrency": _int(env, "WAREHOUSE_CONCURRENCY", DEFAULT_WAREHOUSE_CONCURRENCY),
        "warehouse_max_backoff": _float(
            env, "WAREHOUSE_MAX_BACKOFF", DEFAULT_WAREHOUSE_MAX_BACKOFF, minimum=1
        ),
    }


_BQ_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,127}")
_BQ_NAME = re.compile(r"[A-Za-z0-9_]{1,1024}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings.from_env()
