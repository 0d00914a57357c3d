"""`analytics serve`: the HTTP API (api/app.py) under uvicorn."""

from __future__ import annotations

import click

from analytics.cli import _settings, _setup_logging, main, metrics_options, start_metrics


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@metrics_options(
    "SERVE", "Serve the Prometheus metrics on this port instead of the API's", "the API's port"
)
def serve(host: str, port: int, metrics_port: int | None, metrics_host: str) -> None:
    """Serve the HTTP API: reports and event intake, per API key (OpenAPI at /docs), and the
    dashboard at / (sign in with a key).

    Prometheus metrics (requests and latency per route, events accepted and refused)
    are at /metrics on the API's port, without a key; with --metrics-port they are
    served on that port only, e.g. to keep them off a port the public can reach.
    """
    import uvicorn

    from api.app import create_app
    from api.metrics import serve as serve_metrics

    _setup_logging()
    app = create_app(_settings(), metrics_route=metrics_port is None)
    if metrics_port:
        start_metrics(
            lambda port, host: serve_metrics(app.state.metrics, port, host),
            metrics_port,
            metrics_host,
        )
    uvicorn.run(app, host=host, port=port, log_config=None)
