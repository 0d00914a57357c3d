"""The load generator's mapping from event type to Redis channel.

The one place loadgen names a channel: ``loadgen.publishing`` and the `simulate`
command use it. It raises for a type without a category and an action (the CLI's
`publish` has its own, lenient one in ``analytics.cli.traffic``); both are to become
``analytics.events.channels.channel_for``.
"""

from __future__ import annotations


def channel_for(event_type: str, prefix: str = "events") -> str:
    """'order.created' -> 'events:order:created' (prefix replaces 'events').

    The category is the text before the first dot, the action everything after it
    (``prefix="staging:events"`` gives ``staging:events:order:created``; an empty prefix
    gives ``order:created``). Raises ``ValueError`` for a type without both parts.
    """
    category, dot, action = event_type.partition(".")
    if not dot or not category or not action:
        raise ValueError(f"event type must look like 'category.action', got {event_type!r}")
    prefix = prefix.rstrip(":")
    return f"{prefix}:{category}:{action}" if prefix else f"{category}:{action}"
