"""API keys: each reads and writes one tenant's data through the HTTP API.

A key's text is shown once, when it is created; the database keeps only its SHA-256
(hex), so a copy of the database lets nobody in. :func:`authenticate` finds a key by
its hash and compares the hashes in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.errors import AnalyticsError
from analytics.models import ApiKey

#: Every key starts with this, so that a leaked one is easy to recognise (and to scan for).
KEY_PREFIX = "ak_"


class ApiKeyError(AnalyticsError):
    """A key operation was asked for something that cannot be done."""


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown of a key: never its text nor its hash."""

    id: int
    tenant_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def as_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant_id,
            "name": self.name,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def hash_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(key.id, key.tenant_id, key.name, key.created_at, key.revoked_at)


def create_key(session: Session, tenant_id: str, name: str) -> tuple[KeyInfo, str]:
    """A new key for ``tenant_id``: its description and its text (shown once, never stored)."""
    if not tenant_id:
        raise ApiKeyError("a key needs a tenant")
    if not name:
        raise ApiKeyError("a key needs a name")
    text = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(tenant_id=tenant_id, name=name, key_hash=hash_key(text), created_at=_now())
    session.add(key)
    session.flush()
    return _info(key), text


def list_keys(session: Session) -> list[KeyInfo]:
    return [_info(key) for key in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(session: Session, key_id: int) -> KeyInfo:
    """Revoke key ``key_id`` (revoking a revoked key keeps its first revocation time)."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyError(f"no API key with id {key_id}")
    if key.revoked_at is None:
        key.revoked_at = _now()
    session.flush()
    return _info(key)


def authenticate(session: Session, text: str | None) -> KeyInfo | None:
    """The live key whose text is ``text``, or None (no text, unknown or revoked key)."""
    if not text:
        return None
    wanted = hash_key(text)
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == wanted)).first()
    if key is None or not hmac.compare_digest(key.key_hash, wanted) or key.revoked_at is not None:
        return None
    return _info(key)
