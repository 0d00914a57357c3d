"""Property tests: whatever bytes arrive, parsing yields an event or an InvalidEvent, nothing else."""

from __future__ import annotations

from datetime import datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.errors import InvalidEvent
from analytics.events import REGISTRY, Event, parse
from bridge.relay import route

RECEIVED = datetime(2024, 3, 1)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what JSON encoders emit
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
envelope_keys = st.sampled_from(
    ["event_id", "event_type", "tenant_id", "user_id", "timestamp", "data", "metadata"]
)
envelopes = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(sorted(REGISTRY)) | st.text(max_size=20),
        "tenant_id": st.text(max_size=20),
    },
    optional={"data": st.dictionaries(st.text(max_size=20), json_values, max_size=8) | json_values},
).flatmap(
    lambda base: st.dictionaries(envelope_keys, json_values, max_size=3).map(
        lambda extra: {**base, **extra}
    )
)


def check(raw: bytes, salt: str | None = None, max_depth: int = 32) -> InvalidEvent | None:
    """Parse ``raw``: an Event, or an InvalidEvent with a reason (returned), nothing else."""
    try:
        event = parse(
            raw,
            channel="events:x:y",
            received_at=RECEIVED,
            max_bytes=1 << 20,
            max_depth=max_depth,
            pii_salt=salt,
        )
    except InvalidEvent as exc:
        assert exc.summary
        return exc
    assert isinstance(event, Event)
    return None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_are_rejected_with_a_reason(raw):
    check(raw)
    try:
        route("events:order:created", raw, "events:", 4096)
    except InvalidEvent as exc:
        assert str(exc)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_parses_or_is_rejected_with_a_reason(value):
    check(orjson.dumps(value))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.none() | st.just("salt"))
def test_envelope_shaped_documents_parse_or_are_rejected_with_a_reason(document, salt):
    check(orjson.dumps(document), salt)


def test_deep_nesting_with_a_pii_salt_is_rejected_not_crashed():
    # Deeper than Python's recursion limit allows a naive recursive walk to go.
    nested = '{"x":' * 990 + "{}" + "}" * 990
    raw = f'{{"event_type": "wishlist.added", "tenant_id": "t", "data": {nested}}}'.encode()
    rejected = check(raw, "salt")
    assert rejected is not None
    assert rejected.summary == "JSON nested deeper than the limit of 32 levels"
    # With the depth limit raised past it, the walk's own failure is still caught.
    # (orjson's depth limit or Python's, whichever the walk meets first).
    rejected = check(raw, "salt", max_depth=10_000)
    assert rejected is not None
    assert "Recursion limit" in rejected.summary or "RecursionError" in rejected.summary
