"""Where a message goes: its event type's task and queue, or the dead-letter task.

The bridge parses no more than this needs (the event type); the workers validate
the rest.
"""

from __future__ import annotations

from typing import Any

from analytics.batch import RejectedItem
from analytics.config import DEFAULT_MAX_JSON_DEPTH, Settings
from analytics.errors import InvalidEvent
from analytics.events import category_of, decode_text, event_type_of, tenant_of
from analytics.limits import bound
from tasks.queues import route_for


def route(
    channel: str,
    data: bytes,
    prefix: str,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
    tenant_from_channel: bool = False,
) -> tuple[str, str, str]:
    """``(task, queue, text)`` for a message, or InvalidEvent saying why it cannot be routed.

    The checks are the workers' own (analytics.events: size, depth, UTF-8, a JSON
    object, its event type), not the schema: the workers validate the rest. With
    ``tenant_from_channel`` the event's ``tenant_id`` must be the channel's last
    segment: a producer allowed only that tenant's channels cannot speak for another.
    """
    if not category_of(channel, prefix):
        raise InvalidEvent(f"channel {channel!r} names no category after {prefix!r}")
    text, document = decode_text(data, max_bytes, max_depth)
    task, queue = route_for(event_type_of(document))
    if tenant_from_channel:
        bound_to = tenant_of(channel, prefix)
        if bound_to is None:
            raise InvalidEvent(
                f"channel {channel!r} names no tenant (TENANT_FROM_CHANNEL: "
                f"{prefix}<category>:<action>:<tenant>)"
            )
        claimed = document.get("tenant_id")
        if claimed != bound_to:
            raise InvalidEvent(
                f"tenant_id {claimed!r} is not {bound_to!r}, the tenant of its channel "
                "(TENANT_FROM_CHANNEL)"
            )
    return task, queue, text


def dead_letter_item(
    channel: str, data: bytes, received: float, reason: str, settings: Settings
) -> list[Any]:
    """The item (encoded) that hands a rejected message to the dead-letter task.

    Of a message over ``max_payload_bytes`` only the first ``dead_letter_keep_bytes``
    travel, with the size and SHA-256 of the whole: an oversized message must not
    cross the broker whole.
    """
    kept = bound(
        data, settings.max_payload_bytes, settings.dead_letter_keep_bytes, settings.pii_salt
    )
    return RejectedItem(channel, kept.head, received, reason, kept.size, kept.sha256).encode()
