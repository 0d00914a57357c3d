"""The project's error hierarchy: everything raised on purpose derives from AnalyticsError."""

from __future__ import annotations

from typing import Any


class AnalyticsError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(AnalyticsError):
    """A setting in the environment is missing or malformed."""


class InvalidEvent(AnalyticsError):
    """An event failed validation; it belongs in dead letters and is never retried."""

    def __init__(
        self,
        summary: str,
        messages: Any = None,
        *,
        tenant_id: str | None = None,
        event_type: str | None = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.messages = plain(messages) if messages is not None else {"_schema": [summary]}
        #: What the rejected document said it was, when it said so in readable form.
        self.tenant_id = tenant_id
        self.event_type = event_type

    def __str__(self) -> str:
        return self.summary


class DuplicateRegistration(AnalyticsError):
    """An event type, handler or report was registered twice."""


def plain(messages: Any) -> Any:
    """Validation messages as JSON can hold them: every key a string, every leaf text.

    marshmallow reports the errors of a list member under its integer index
    (``{"items": {0: {...}}}``), which a JSON column refuses; a dead letter must be
    storable whatever the validator returned.
    """
    if isinstance(messages, dict):
        return {str(key): plain(value) for key, value in messages.items()}
    if isinstance(messages, list | tuple):
        return [plain(value) for value in messages]
    if messages is None or isinstance(messages, str | int | float | bool):
        return messages
    return str(messages)


class WarehouseError(AnalyticsError):
    """The warehouse did not accept a request (unreachable, failing, or refusing it whole)."""
