"""`analytics keys create|list|revoke`: the key is printed once and stored only as its hash."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.keys import authenticate
from analytics.models import ApiKey


def cli(postgres_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": postgres_url}
    return subprocess.run(
        [sys.executable, "-m", "analytics", "keys", *args], env=env, capture_output=True, text=True
    )


def test_create_list_revoke(pg, postgres_url):
    created = cli(postgres_url, "create", "--tenant", "tenant-a", "--name", "dashboard")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ak_") and len(key) > 40
    with Session(pg) as session:
        [stored] = session.scalars(select(ApiKey)).all()
        assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert authenticate(session, key) is not None

    listed = cli(postgres_url, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [row] = orjson.loads(listed.stdout)
    assert row["id"] == stored.id and row["tenant"] == "tenant-a" and row["name"] == "dashboard"
    assert row["created_at"] and row["revoked_at"] is None
    assert key not in listed.stdout and stored.key_hash not in listed.stdout
    assert key not in cli(postgres_url, "list").stdout

    revoked = cli(postgres_url, "revoke", str(stored.id))
    assert revoked.returncode == 0, revoked.stderr
    [row] = orjson.loads(cli(postgres_url, "list", "--format", "json").stdout)
    assert row["revoked_at"] is not None
    with Session(pg) as session:
        assert authenticate(session, key) is None


def test_revoking_an_unknown_key_is_one_line(pg, postgres_url):
    done = cli(postgres_url, "revoke", "999")
    assert done.returncode != 0
    assert done.stderr.strip() == "Error: no API key with id 999"


def test_two_keys_differ(pg, postgres_url):
    a = cli(postgres_url, "create", "--tenant", "t", "--name", "a").stdout.strip()
    b = cli(postgres_url, "create", "--tenant", "t", "--name", "b").stdout.strip()
    assert a != b
