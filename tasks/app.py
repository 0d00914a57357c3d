"""The Celery application: broker, queues, routes and delivery guarantees, from the settings."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from analytics.config import Settings, get_settings
from tasks.queues import MISC_QUEUE, QUEUES, ROUTES


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("analytics", broker=settings.celery_broker_url, include=["tasks.ingest"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A batch is acknowledged only after its transaction committed; a worker
        # that dies mid-batch leaves it to be redelivered, and the raw-event key
        # makes the second delivery change nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=2,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=MISC_QUEUE,
        task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
        # Flower shows tasks only when workers send events.
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        beat_schedule={},
    )
    return app


app = make_app()
