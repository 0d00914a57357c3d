"""The commands that run Celery's own programs: beat (the scheduler) and Flower (the monitor).

Both list their program's options in `--help` and accept them in either form
(`--port 5566` and `--port=5566`): the options are read from beat's click command
and from Flower's option registry the first time a command parses or shows help,
so that `analytics --help` and the other commands import neither.

Flower fails closed: it binds 127.0.0.1 and refuses to start without credentials
(`--basic-auth` or FLOWER_BASIC_AUTH, or OAuth with `--auth`) unless told
`--no-auth`: its pages show every task, worker and timing, and can revoke tasks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import click

from analytics.cli import _setup_logging, main
from analytics.logs import log_format

#: Flower's options that are not Flower's to set here: tornado's logging (the
#: processes log the project's way), our own (declared below), and a Python function.
_FLOWER_SKIP = frozenset({"help", "format-task", "address", "port", "basic-auth", "auth"})
_FLOWER_SKIP_PREFIXES = ("log",)

#: The loopback address: Flower shows every task and worker, so only this host by default.
DEFAULT_FLOWER_ADDRESS = "127.0.0.1"


class ForeignOptionsCommand(click.Command):
    """A command that also takes another program's options, loaded when first needed."""

    def __init__(self, *args: Any, foreign: Callable[[], list[click.Parameter]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._foreign = foreign
        self._loaded: list[click.Parameter] | None = None

    def foreign_params(self) -> list[click.Parameter]:
        if self._loaded is None:
            own = {opt for param in self.params for opt in param.opts}
            self._loaded = [p for p in self._foreign() if not own.intersection(p.opts)]
        return self._loaded

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        # The help option last, as click puts it.
        own = super().get_params(ctx)
        return [*own[:-1], *self.foreign_params(), *own[-1:]]


def _option_argv(params: list[click.Parameter], values: dict[str, Any]) -> list[str]:
    """Command-line arguments that give ``params`` the ``values`` they were parsed to."""
    argv: list[str] = []
    for param in params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = values.get(param.name)
        if value is None:
            continue
        long_name = max(param.opts, key=len)
        if param.is_flag:
            if value:
                argv.append(long_name)
            elif param.secondary_opts:
                argv.append(max(param.secondary_opts, key=len))
            continue
        argv.append(f"{long_name}={value}")
    return argv


# ------------------------------------------------------------------------ beat


def _beat_params() -> list[click.Parameter]:
    """celery beat's own options, without the callbacks that need Celery's command context."""
    from celery.bin.beat import beat as celery_beat

    params = []
    for param in celery_beat.params:
        mine = copy.copy(param)
        mine.callback = None
        if mine.name == "loglevel":
            # Celery's type turns the name into a number; beat must be given the name.
            mine.type = click.Choice(list(getattr(param.type, "choices", [])), case_sensitive=False)
            mine.default = "INFO"
        params.append(mine)
    return params


@main.command(
    cls=ForeignOptionsCommand,
    foreign=_beat_params,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.pass_context
def beat(ctx: click.Context, **values: Any) -> None:
    """Run Celery beat, which schedules the periodic rollups and raw-store upkeep.

    Daily: the coming months' partitions of events, and with RAW_RETENTION_DAYS set,
    the prune of raw events and dead letters past it. Run two on different hosts for
    redundancy: they share a schedule and a lock in Redis (REDIS_URL), one sends and
    the other stands by, taking over within 1.2 x BEAT_LOCK_TIMEOUT seconds (default
    30) of the active one dying. Started before Redis answers, it waits for it.
    The options below are celery beat's; the log level defaults to INFO.
    """
    from tasks.app import app

    _setup_logging()
    command = ctx.command
    assert isinstance(command, ForeignOptionsCommand)
    quiet = ["--quiet"] if log_format() == "json" else []  # the banner is not a JSON line
    app.start([*quiet, "beat", *_option_argv(command.foreign_params(), values)])


# ------------------------------------------------------------------------ flower


def _flower_params() -> list[click.Parameter]:
    """Flower's options (its tornado option registry) as click options."""
    from flower.options import options

    params: list[click.Parameter] = []
    for name, option in sorted(options._options.items()):
        if name in _FLOWER_SKIP or name.startswith(_FLOWER_SKIP_PREFIXES):
            continue
        help_text = f"Flower: {option.help or name}."
        if option.type is bool:
            params.append(click.Option([f"--{name}/--no-{name}"], default=None, help=help_text))
            continue
        kind = {int: click.INT, float: click.FLOAT}.get(option.type, click.STRING)
        params.append(
            click.Option(
                [f"--{name}"],
                type=kind,
                multiple=option.multiple,
                help=help_text + (" Repeat for more than one." if option.multiple else ""),
            )
        )
    return params


def flower_argv(params: list[click.Parameter], values: dict[str, Any]) -> list[str]:
    """Flower's command line: tornado reads only ``--name=value`` (lists comma-separated)."""
    argv = []
    for param in params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = values.get(param.name)
        if value is None or value == ():
            continue
        name = param.opts[0].removeprefix("--").split("/")[0]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = ",".join(str(item) for item in value)
        argv.append(f"--{name}={value}")
    return argv


@main.command(
    cls=ForeignOptionsCommand,
    foreign=_flower_params,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--address",
    default=DEFAULT_FLOWER_ADDRESS,
    show_default=True,
    envvar="FLOWER_ADDRESS",
    help="Address to listen on (0.0.0.0: every interface, e.g. inside a container whose "
    "port is published on the host's loopback only).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=5555, show_default=True, envvar="FLOWER_PORT"
)
@click.option(
    "--basic-auth",
    envvar="FLOWER_BASIC_AUTH",
    metavar="USER:PASSWORD[,USER:PASSWORD...]",
    help="HTTP basic authentication (default FLOWER_BASIC_AUTH). Required, unless --auth or "
    "--no-auth.",
)
@click.option(
    "--auth",
    envvar="FLOWER_AUTH",
    metavar="REGEX",
    help="OAuth instead: a regular expression of the e-mail addresses let in (with "
    "--auth-provider and the --oauth2-* options).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve without authentication: anyone who reaches the address sees every task.",
)
@click.pass_context
def flower(
    ctx: click.Context,
    address: str,
    port: int,
    basic_auth: str | None,
    auth: str | None,
    no_auth: bool,
    **values: Any,
) -> None:
    """Run Flower, the web monitor for workers and tasks, on 127.0.0.1:5555.

    It refuses to start without credentials: give --basic-auth user:password (or
    set FLOWER_BASIC_AUTH), or OAuth with --auth, or say --no-auth explicitly.
    The other options below are Flower's own, in either form (--max-tasks 500 or
    --max-tasks=500).
    """
    if no_auth and (basic_auth or auth):
        raise click.UsageError("--no-auth contradicts --basic-auth / --auth; give one of them")
    if not (no_auth or basic_auth or auth):
        raise click.ClickException(
            "flower needs credentials: --basic-auth user:password (or FLOWER_BASIC_AUTH), "
            "--auth for OAuth, or --no-auth to serve without any"
        )
    if basic_auth is not None and not all(
        user and password
        for user, _, password in (pair.partition(":") for pair in basic_auth.split(","))
    ):
        raise click.BadParameter("expected user:password", param_hint="--basic-auth")
    from tasks.app import app

    command = ctx.command
    assert isinstance(command, ForeignOptionsCommand)
    argv = [f"--address={address}", f"--port={port}"]
    if basic_auth:
        argv.append(f"--basic_auth={basic_auth}")
    if auth:
        argv.append(f"--auth={auth}")
    app.start(["flower", *argv, *flower_argv(command.foreign_params(), values)])
