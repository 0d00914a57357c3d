"""Personal data in events: which keys hold it, and how it is replaced by a salted hash.

With ``PII_SALT`` set, nothing downstream of parsing sees an e-mail or IP address:
not the stored payload, not the typed data a handler gets, not a dead letter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from typing import Any

import orjson

#: Keys whose values are personal data, hashed when ``PII_SALT`` is set.
PII_KEYS = frozenset({"email", "ip_address"})

#: What :func:`hash_pii` returns; a value already like this is not hashed again.
HASHED_PII = re.compile(r"hmac-sha256:[0-9a-f]{64}")


def hash_pii(value: Any, salt: str) -> str:
    """A salted hash that stands in for an e-mail address or IP address.

    A value that is already such a hash is returned as it is, so scrubbing twice
    changes nothing: a dead letter stored scrubbed and replayed later gets the
    same hashes (and the same derived event id) as if it had passed the first time.
    """
    text = str(value)
    if HASHED_PII.fullmatch(text):
        return text
    digest = hmac.new(salt.encode(), text.encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest


def scrub_pii(value: Any, salt: str, personal: bool = False) -> Any:
    """A copy of ``value`` with every e-mail and IP address replaced by its salted hash.

    Every string and number under a PII key is hashed, however nested (a list of
    addresses, an object of them).
    """
    if isinstance(value, dict):
        return {
            key: scrub_pii(item, salt, personal or key in PII_KEYS) for key, item in value.items()
        }
    if isinstance(value, list):
        return [scrub_pii(item, salt, personal) for item in value]
    if personal and isinstance(value, str | int):
        return hash_pii(value, salt)
    return value


def scrub_typed(typed: Any, salt: str) -> Any:
    """A typed payload (a frozen dataclass) with its PII fields hashed."""
    changes = {
        f.name: hash_pii(getattr(typed, f.name), salt)
        for f in dataclass_fields(typed)
        if f.name in PII_KEYS and getattr(typed, f.name) is not None
    }
    return replace(typed, **changes) if changes else typed


#: A PII key's string or integer value in text that is not (valid) JSON; a string
#: cut off by the end of the text counts to the end.
_RAW_PII = re.compile(
    rb'("(?:' + b"|".join(re.escape(k.encode()) for k in sorted(PII_KEYS)) + rb')"\s*:\s*)'
    rb'(?:"((?:[^"\\]|\\.)*)(?:"|$)|(-?[0-9]+))',
    re.DOTALL,
)


def _hash_raw_value(match: re.Match[bytes], salt: str) -> bytes:
    key, quoted, number = match.groups()
    if quoted is None:
        value: Any = int(number)
    else:
        try:
            value = orjson.loads(b'"' + quoted + b'"')
        except orjson.JSONDecodeError:
            value = quoted.decode("utf-8", "replace")
    return key + b'"' + hash_pii(value, salt).encode() + b'"'


def scrub_raw(raw: bytes, salt: str) -> bytes:
    """The bytes to keep of a message that could not be ingested, with its PII hashed.

    JSON comes back re-serialised with every e-mail and IP value hashed as in the
    event store (the exact bytes when there is none to hash). Text that is not
    JSON (cut off, bad UTF-8) or too deep to walk keeps its bytes except the values
    of ``"email"`` and ``"ip_address"`` keys, hashed where they appear.
    """
    try:
        document = orjson.loads(raw)
        scrubbed = scrub_pii(document, salt)
        return raw if scrubbed == document else orjson.dumps(scrubbed)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        return _RAW_PII.sub(lambda match: _hash_raw_value(match, salt), raw)
