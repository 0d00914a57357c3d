"""`analytics keys create|list|revoke`: the HTTP API's keys (domain code: analytics.keys)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.orm import Session

from analytics.cli import _settings, describe, format_option, main
from analytics.errors import AnalyticsError
from analytics.render import render

COLUMNS = ("id", "tenant", "name", "created_at", "revoked_at")


def _in_session(work: Callable[[Session], Any]) -> Any:
    from analytics.db import make_engine

    engine = make_engine(_settings().database_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            return work(session)
    except AnalyticsError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        raise click.ClickException(f"keys failed: {describe(exc)}") from None
    finally:
        engine.dispose()


@main.group()
def keys() -> None:
    """API keys of the HTTP API (`analytics serve`): one tenant each, stored only as hashes."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key reads and writes.")
@click.option("--name", required=True, help="What the key is for (shown by `keys list`).")
def create(tenant: str, name: str) -> None:
    """Create a key and print it: it is shown this once and never stored."""
    from analytics.keys import create_key

    info, text = _in_session(lambda session: create_key(session, tenant, name))
    click.echo(f"created key {info.id} for tenant {info.tenant_id!r} ({info.name})", err=True)
    click.echo(text)


@keys.command("list")
@format_option
def list_command(fmt: str) -> None:
    """List keys (id, tenant, name, created_at, revoked_at); never the key itself."""
    from analytics.keys import list_keys

    rows = [info.as_row() for info in _in_session(list_keys)]
    click.echo(render(rows, COLUMNS, fmt))


@keys.command("revoke")
@click.argument("key_id", type=int)
def revoke(key_id: int) -> None:
    """Revoke key KEY_ID: from now on it is refused (401)."""
    from analytics.keys import revoke_key

    info = _in_session(lambda session: revoke_key(session, key_id))
    click.echo(f"revoked key {info.id} of tenant {info.tenant_id!r}")
