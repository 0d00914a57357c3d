"""The registry of known event types: name, queue category, schema and compiled loader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from analytics.errors import DuplicateRegistration
from analytics.events.compiled import loader_for
from analytics.events.schemas import EVENT_TYPES, schema_for


@dataclass(frozen=True)
class EventType:
    """A known event type: its name, the queue category it belongs to and its data schema."""

    name: str
    category: str
    schema: Schema
    #: ``schema.load`` behind the compiled fast path (analytics.events.compiled).
    load: Callable[[Any], Any]


REGISTRY: dict[str, EventType] = {}


def register(name: str, schema: type[Schema]) -> EventType:
    """Register an event type; a second registration of the same name is refused."""
    if name in REGISTRY:
        raise DuplicateRegistration(f"An event type named {name!r} is already registered.")
    category = name.split(".", 1)[0]
    instance = schema()
    REGISTRY[name] = EventType(name, category, instance, loader_for(instance))
    return REGISTRY[name]


for _name, _data in EVENT_TYPES.items():
    register(_name, schema_for(_data))

#: The categories that have a queue of their own.
CATEGORIES = ("user", "order", "payment", "inventory")
