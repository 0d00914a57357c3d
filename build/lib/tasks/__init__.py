"""Celery tasks: ``celery -A tasks worker`` finds the app here."""

from tasks.app import app

__all__ = ["app"]
