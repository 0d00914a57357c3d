"""`analytics serve`: the HTTP API (api/app.py) under uvicorn."""

from __future__ import annotations

import click

from analytics.cli import _settings, _setup_logging, main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the HTTP API: reports and event intake, per API key (OpenAPI at /docs), and the
    dashboard at / (sign in with a key)."""
    import uvicorn

    from api.app import create_app

    _setup_logging()
    app = create_app(_settings())
    uvicorn.run(app, host=host, port=port, log_config=None)
