"""PII_SALT: e-mail and IP addresses become salted hashes in events, typed data and dead letters."""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.deadletters import Rejected, dead_letter_fingerprint, record_dead_letters, replay
from analytics.events import hash_pii, parse, scrub_pii, scrub_raw
from analytics.ingest import Context
from analytics.models import DeadLetter, StoredEvent

SALT = "pepper"
RECEIVED = datetime(2024, 3, 1, 12)
EMAIL_HASH = hash_pii("ada@example.com", SALT)


def load(document, salt=SALT):
    return parse(
        orjson.dumps(document),
        channel="events:user:registered",
        received_at=RECEIVED,
        max_bytes=1 << 20,
        pii_salt=salt,
    )


def registered(**extra):
    return {
        "event_type": "user.registered",
        "tenant_id": "t",
        "data": {"user_id": "u", "email": "ada@example.com"},
        **extra,
    }


def test_hashing_a_hash_changes_nothing():
    assert hash_pii(EMAIL_HASH, SALT) == EMAIL_HASH
    document = {"data": {"email": "ada@example.com"}}
    assert scrub_pii(scrub_pii(document, SALT), SALT) == scrub_pii(document, SALT)


def test_every_value_under_a_pii_key_is_hashed_however_nested():
    scrubbed = scrub_pii(
        {"new_values": {"email": ["ada@example.com", {"work": "ada@work.example"}]}}, SALT
    )
    assert scrubbed["new_values"]["email"] == [
        EMAIL_HASH,
        {"work": hash_pii("ada@work.example", SALT)},
    ]


def test_handlers_get_the_hash_too_and_the_derived_id_depends_on_no_address():
    event = load(registered())
    assert event.data.email == EMAIL_HASH
    assert event.payload["data"]["email"] == EMAIL_HASH
    assert event.event_id_derived and event.event_id == load(registered()).event_id
    unknown = load({**registered(), "event_type": "newsletter.subscribed"})
    assert unknown.data["email"] == EMAIL_HASH


def test_raw_json_is_rewritten_only_when_it_holds_personal_data():
    clean = b'{"event_type": "user.registered", "data": {}}'
    assert scrub_raw(clean, SALT) == clean
    raw = orjson.dumps(registered(tenant_id=None))
    assert orjson.loads(scrub_raw(raw, SALT))["data"]["email"] == EMAIL_HASH


def test_raw_text_that_is_not_json_has_the_values_of_pii_keys_hashed():
    cut = (
        b'{"data": {"email" : "ada@example.com", "ip_address": 167837953, "x": "\xff", "email":"ada'
    )
    assert scrub_raw(cut, SALT) == (
        b'{"data": {"email" : "' + EMAIL_HASH.encode() + b'", "ip_address": "'
        + hash_pii(167837953, SALT).encode() + b'", "x": "\xff", "email":"'
        + hash_pii("ada", SALT).encode() + b'"'
    )  # fmt: skip


def test_a_dead_letter_keeps_hashes_is_keyed_by_the_salt_and_replays_to_the_same_hashes(engine):
    raw = orjson.dumps(registered(tenant_id=None))
    letter = Rejected("events:user:registered", raw, RECEIVED, "invalid envelope")
    with Session(engine) as session, session.begin():
        record_dead_letters(session, [letter, letter], pii_salt=SALT)
    with Session(engine) as session:
        stored = session.execute(select(DeadLetter)).scalar_one()
    assert b"ada@example.com" not in bytes(stored.raw)
    assert stored.fingerprint == dead_letter_fingerprint(letter.channel, raw, SALT)
    assert stored.fingerprint != dead_letter_fingerprint(letter.channel, raw)
    # Fixed by hand (the tenant added), it is ingested with the hash it would have had.
    with Session(engine) as session, session.begin():
        fixed = orjson.loads(bytes(stored.raw))
        fixed["tenant_id"] = "t"
        dead_letter = session.get(DeadLetter, stored.id)
        assert dead_letter is not None
        dead_letter.raw = orjson.dumps(fixed)
    with Session(engine) as session, session.begin():
        result = replay(session, None, Context(), max_bytes=1 << 20, pii_salt=SALT)
    assert result.ingested == 1
    with Session(engine) as session:
        payload = session.execute(select(StoredEvent.payload)).scalar_one()
    assert payload["data"]["email"] == EMAIL_HASH
    assert payload == load(registered()).payload
