"""The one mapping between event types and Redis channels: ``order.created`` <->
``events:order:created``.

:func:`channel_for` is the channel a Rust service publishes an event type on,
:func:`category_of` the category the bridge reads back from a channel. The prefix
is written with or without its colon (``events`` or ``events:``, as
``Settings.channel_prefix`` gives it); an empty prefix means none.

An event type without both a category and an action (``foo``, ``.x``, ``order.``)
is refused with ValueError rather than given an invented channel (the CLI used to
turn ``foo`` into ``events:foo:foo``): every registered type has both parts, so a
type without them is a typo or a test of bad input, whose publisher should name
its channel itself. The bridge routes by the payload's ``event_type``, not by the
channel; the channel only has to name a category.

With ``TENANT_FROM_CHANNEL`` a channel ends with the tenant that may publish on it
(``events:order:created:tenant-1``), so that a Redis ACL can give each tenant's
producers their own channels; :func:`tenant_of` reads it back.
"""

from __future__ import annotations


def channel_for(event_type: str, prefix: str = "events", tenant: str | None = None) -> str:
    """'order.created' -> 'events:order:created' (``prefix`` replaces 'events').

    The category is the text before the first dot, the action everything after it;
    ValueError for a type without both parts.
    """
    category, dot, action = event_type.partition(".")
    if not dot or not category or not action:
        raise ValueError(f"event type must look like 'category.action', got {event_type!r}")
    prefix = prefix.rstrip(":")
    channel = f"{prefix}:{category}:{action}" if prefix else f"{category}:{action}"
    return f"{channel}:{tenant}" if tenant is not None else channel


def tenant_of(channel: str, prefix: str) -> str | None:
    """The tenant a channel is bound to (``TENANT_FROM_CHANNEL``): its last segment, after
    the category and the action; None when it has no segment past those two."""
    rest = channel[len(prefix) :] if channel.startswith(prefix) else channel
    parts = rest.lstrip(":").split(":")
    return parts[-1] if len(parts) >= 3 and parts[-1] else None


def category_of(channel: str, prefix: str) -> str:
    """The first segment after the prefix: ``order`` for ``events:order:created``.

    Empty when the channel names no category (``events::created``); a channel
    outside the prefix is read from its start. The prefix is the pattern's text
    before ``*`` (``events:`` for ``events:*``); one written without its colon
    (``events``, as :func:`channel_for` takes it) reads the same channels.
    """
    if not channel.startswith(prefix):
        return channel.split(":", 1)[0]
    rest = channel[len(prefix) :]
    if prefix and not prefix.endswith(":") and rest.startswith(":"):
        rest = rest[1:]
    return rest.split(":", 1)[0]
