"""The seed's consumer, kept as the benchmark's baseline: one process, one transaction per event.

It works the way the seed document's consumer does: PSUBSCRIBE to the event
channels, ``json.loads`` each message as it arrives, and write it in a
transaction of its own before reading the next one. Validation and writes are the
project's own (``analytics.events.parse`` and ``analytics.ingest.apply_events``
with a batch of one), so the only differences from the pipeline are the
architecture's: no batching, no parallelism, reading and writing in one thread.
Events the project would reject become dead letters, as in the pipeline.

Run on its own (configuration from the environment, like every process)::

    DATABASE_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/baseline \\
    EVENT_CHANNEL_PATTERN='events:*' python -m benchmarks.naive_consumer

It logs "subscribed to <pattern>" once subscribed and a count line every
``--log-interval`` seconds; its Redis connection is named
``analytics-naive-<hostname>-<pid>`` (see ``CLIENT LIST``). SIGTERM or Ctrl-C
stops it after the message in hand. A lost connection is logged
("resubscribed ... after a gap"): what was published meanwhile is gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import time
from datetime import UTC, datetime
from typing import Any

import redis

from analytics.config import get_settings
from analytics.db import get_engine, session_factory
from analytics.deadletters import Rejected, record_dead_letters
from analytics.errors import InvalidEvent
from analytics.events import parse
from analytics.ingest import Context, apply_events

log = logging.getLogger("naive-consumer")


def client_name() -> str:
    return f"analytics-naive-{socket.gethostname()}-{os.getpid()}"


class NaiveConsumer:
    """Read one message, apply it in its own transaction, repeat."""

    def __init__(self, redis_url: str, pattern: str, database_url: str, log_interval: float):
        settings = get_settings()
        self.redis_url = redis_url
        self.pattern = pattern
        self.sessions = session_factory(get_engine(database_url))
        self.ctx = Context.from_settings(settings)
        self.max_bytes = settings.max_payload_bytes
        self.pii_salt = settings.pii_salt
        self.log_interval = log_interval
        self.stopping = False
        self.stored = self.duplicates = self.dead_letters = self.errors = 0

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def _subscribe(self) -> Any:
        """Connect and PSUBSCRIBE; return once Redis confirmed the subscription."""
        client = redis.Redis.from_url(self.redis_url, client_name=client_name())
        pubsub = client.pubsub()
        pubsub.psubscribe(self.pattern)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message and message["type"] == "psubscribe":
                return client, pubsub
        raise redis.ConnectionError("no psubscribe confirmation within 5 s")

    def handle(self, channel: str, data: bytes) -> None:
        received = datetime.now(UTC).replace(tzinfo=None)
        try:
            document = json.loads(data)  # the seed's decode, and its routing on event_type
            if not isinstance(document, dict) or not document.get("event_type"):
                raise InvalidEvent("not an event: no event_type")
            event = parse(
                data,
                channel=channel,
                received_at=received,
                max_bytes=self.max_bytes,
                pii_salt=self.pii_salt,
            )
        except ValueError as exc:
            self._dead_letter(Rejected(channel, data, received, f"invalid JSON: {exc}"))
            return
        except InvalidEvent as exc:
            rejected = Rejected.of(channel, data, received, exc)
            self._dead_letter(rejected)
            return
        try:
            with self.sessions.begin() as session:
                result = apply_events(session, [event], self.ctx)
        except Exception:
            log.exception("event %s failed", event.event_id)
            self.errors += 1
            return
        for _, refusal in result.refused:
            self._dead_letter(Rejected.of(channel, data, received, refusal))
        self.stored += result.stored
        self.duplicates += result.duplicates

    def _dead_letter(self, rejected: Rejected) -> None:
        with self.sessions.begin() as session:
            record_dead_letters(session, [rejected])
        self.dead_letters += 1

    def run(self) -> None:
        client, pubsub = self._subscribe()
        log.info("subscribed to %s", self.pattern)
        last_log = time.monotonic()
        while not self.stopping:
            try:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("lost the Redis connection (%s); reconnecting", exc)
                lost_at = time.monotonic()
                pubsub.close()
                client.close()
                while not self.stopping:
                    try:
                        client, pubsub = self._subscribe()
                        break
                    except (redis.ConnectionError, redis.TimeoutError, OSError):
                        time.sleep(0.5)
                log.warning(
                    "resubscribed to %s after a gap of %.2fs: events published in the gap "
                    "were not delivered",
                    self.pattern,
                    time.monotonic() - lost_at,
                )
                continue
            if message is not None and message["type"] == "pmessage":
                self.handle(message["channel"].decode("utf-8", "replace"), message["data"])
            if time.monotonic() - last_log >= self.log_interval:
                last_log = time.monotonic()
                self._log_counts()
        pubsub.close()
        client.close()
        self._log_counts()
        log.info("stopped")

    def _log_counts(self) -> None:
        log.info(
            "stored %d, duplicates %d, dead letters %d, errors %d",
            self.stored,
            self.duplicates,
            self.dead_letters,
            self.errors,
        )


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pattern",
        default=settings.event_channel_pattern,
        help="channel pattern to PSUBSCRIBE (default EVENT_CHANNEL_PATTERN)",
    )
    parser.add_argument("--redis-url", default=settings.redis_url, help="default REDIS_URL")
    parser.add_argument(
        "--database-url", default=settings.database_url, help="default DATABASE_URL"
    )
    parser.add_argument("--log-interval", type=float, default=5.0, help="seconds between counts")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s"
    )
    consumer = NaiveConsumer(args.redis_url, args.pattern, args.database_url, args.log_interval)
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    consumer.run()


if __name__ == "__main__":
    main()
