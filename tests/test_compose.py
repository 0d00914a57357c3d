"""docker-compose.yml: the whole stack is there, wired together, and runs real CLI commands."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from tasks.queues import QUEUES as ALL_QUEUES

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"

#: Every queue tasks are routed to; the workers of the stack must consume all of them.
QUEUES = frozenset(ALL_QUEUES)

#: The programs an app service may run: the project's CLI, or Celery's own.
PROGRAMS = ("analytics", "celery")

#: What `depends_on` may wait for (Compose specification).
DEPENDENCY_CONDITIONS = frozenset(
    {"service_started", "service_healthy", "service_completed_successfully"}
)

Service = dict[str, Any]


#: The secrets a user gives the stack (it refuses to start without them), for the tests
#: that read the file as Compose would with them set.
SECRETS_SET = {
    "REDIS_PASSWORD": "r3dis-pass",
    "POSTGRES_PASSWORD": "pg-pass",
    "FLOWER_BASIC_AUTH": "ops:fl0wer",
}

#: A variable as written (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``), to find them.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)
_EXPRESSION = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.S)


class MissingVariable(Exception):
    """A required variable (``${VAR:?message}``) is unset or empty, as Compose reports it."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with Compose's variable syntax substituted from ``env``: ``$$`` is ``$``, and a
    default may hold variables of its own, read only when the default is used."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, end = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            out.append(_expand(text[i + 2 : end - 1], env))
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _expand(expression: str, env: dict[str, str]) -> str:
    match = _EXPRESSION.fullmatch(expression)
    assert match, f"not a variable: ${{{expression}}}"
    name, op, arg = match["name"], match["op"], match["arg"] or ""
    value = env.get(name)
    # With a colon, empty counts as unset.
    missing = not value if op in (":-", ":?") else value is None
    if op and op.endswith("?") and missing:
        raise MissingVariable(f"required variable {name} is missing a value: {arg}")
    if op and op.endswith("-") and missing:
        return interpolate(arg, env)
    return value or ""


def load_compose(env: dict[str, str] = SECRETS_SET) -> dict[str, Any]:
    """The compose file as Compose reads it with ``env`` (by default, the secrets set)."""
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), env))


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    return load_compose()["services"]


@pytest.fixture(scope="module")
def app_services(services: dict[str, Service]) -> dict[str, Service]:
    """The services built from this project's image (not redis, not postgres)."""
    return {name: service for name, service in services.items() if "build" in service}


def celery_subcommand(args: list[str]) -> str | None:
    """The subcommand of a `celery` command line, after global options such as `-A tasks`."""
    from celery.bin.celery import celery

    takes_value = {
        name
        for param in celery.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }
    remaining = iter(args)
    for arg in remaining:
        if arg in takes_value:
            next(remaining, None)
        elif not arg.startswith("-"):
            return arg
    return None


def subcommand(command: list[str]) -> str | None:
    """`worker` for both `analytics worker -Q x` and `celery -A tasks worker -Q x`."""
    if command[0] == "celery":
        return celery_subcommand(command[1:])
    return command[1] if len(command) > 1 else None


def running(services: dict[str, Service], name: str) -> dict[str, Service]:
    """The services whose command runs subcommand `name`."""
    return {
        service_name: service
        for service_name, service in services.items()
        if isinstance(service.get("command"), list) and subcommand(service["command"]) == name
    }


def consumed_queues(command: list[str]) -> frozenset[str]:
    """The queues a worker command line consumes: its `-Q`, or every queue without one."""
    named: list[str] = []
    for index, arg in enumerate(command):
        if arg in ("-Q", "--queues"):
            assert index + 1 < len(command), f"{arg} without a value in {command}"
            named.append(command[index + 1])
        elif arg.startswith("--queues="):
            named.append(arg.partition("=")[2])
        elif arg.startswith("-Q"):
            named.append(arg[2:].removeprefix("="))
    if not named:
        return QUEUES
    return frozenset(queue.strip() for value in named for queue in value.split(",") if queue)


def environment(service: Service) -> dict[str, str | None]:
    """A service's environment, whether written as a mapping or as a list of KEY=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {key: None if value is None else str(value) for key, value in env.items()}
    pairs = (entry.partition("=") for entry in env)
    return {key: value if sep else None for key, sep, value in pairs}


def dependencies(service: Service) -> dict[str, str]:
    """`depends_on` as {service: condition}, whether written as a list or a mapping."""
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends_on.items()
    }


def host_ip(port: str | int | dict[str, Any]) -> str | None:
    """The host address a `ports` entry binds, or None when it binds every interface."""
    if isinstance(port, dict):
        return port.get("host_ip")
    spec = str(port).partition("/")[0]
    if spec.startswith("["):
        return spec[1:].partition("]")[0]
    parts = spec.rsplit(":", 2)
    return parts[0] if len(parts) == 3 and parts[0] else None


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def test_compose_file_parses_into_services() -> None:
    compose = load_compose()

    assert isinstance(compose, dict)
    assert isinstance(compose.get("services"), dict)
    assert compose["services"]


def test_compose_file_has_no_obsolete_version_key() -> None:
    assert "version" not in load_compose()


def test_stack_has_redis_postgres_and_migrate(services: dict[str, Service]) -> None:
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert subcommand(services["migrate"]["command"]) == "migrate"


def test_postgres_keeps_hot_indexes_in_memory_and_checkpoints_by_time(
    services: dict[str, Service],
) -> None:
    # On PostgreSQL's defaults, 20 M stored events made ingest 24% slower and the WAL
    # four times larger (docs/scaling.md, "PostgreSQL for a long history").
    command = services["postgres"].get("command") or []
    assert command[:1] == ["postgres"], command
    settings = dict(
        command[index + 1].split("=", 1) for index, arg in enumerate(command) if arg == "-c"
    )
    assert settings["shared_buffers"] == "1GB"  # unless POSTGRES_SHARED_BUFFERS is set
    assert settings["max_wal_size"] == "8GB"
    assert settings["checkpoint_timeout"] == "15min"


def test_redis_and_postgres_report_health(services: dict[str, Service]) -> None:
    for name in ("redis", "postgres"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_redis_and_postgres_ask_for_a_password_and_the_app_gives_it(
    services: dict[str, Service], app_services: dict[str, Service]
) -> None:
    redis_command = services["redis"].get("command") or []
    assert "--requirepass" in redis_command, "redis accepts anyone"
    assert redis_command[redis_command.index("--requirepass") + 1]
    postgres = environment(services["postgres"])
    assert postgres.get("POSTGRES_PASSWORD")
    assert postgres.get("POSTGRES_HOST_AUTH_METHOD") != "trust"
    for name, service in app_services.items():
        env = environment(service)
        for variable in ("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL"):
            # A variable (`${REDIS_PASSWORD:?message}`) stands for its value: its `?` is
            # not the URL's query.
            url = re.sub(r"\$\{[^}]*\}", "value", env.get(variable) or "")
            credentials = urlsplit(url).netloc.rpartition("@")[0]
            assert credentials.partition(":")[2], f"{name}: {variable} carries no password"


def test_at_least_two_bridges_relay_events(services: dict[str, Service]) -> None:
    assert len(running(services, "bridge")) >= 2


def test_workers_together_consume_every_queue(services: dict[str, Service]) -> None:
    workers = running(services, "worker")
    assert workers, "no service runs a worker"

    consumed = frozenset().union(*(consumed_queues(w["command"]) for w in workers.values()))

    assert not QUEUES - consumed, f"no worker consumes {sorted(QUEUES - consumed)}"


def test_workers_name_only_known_queues(services: dict[str, Service]) -> None:
    for name, worker in running(services, "worker").items():
        unknown = consumed_queues(worker["command"]) - QUEUES
        assert not unknown, f"{name} consumes queues no task is routed to: {sorted(unknown)}"


def test_two_beats_share_one_lock_so_one_sends_and_one_stands_by(
    services: dict[str, Service],
) -> None:
    from tasks.app import app

    beats = running(services, "beat")
    assert len(beats) >= 2, "a second beat must stand by to replace the first"
    # The lock is in the app's scheduler (tasks/beat.py); a beat given another
    # scheduler, or another Redis, would send alongside the first.
    assert app.conf.beat_scheduler == "tasks.beat:Scheduler"
    for name, beat in beats.items():
        overrides = [a for a in beat["command"] if a == "-S" or a.startswith("--scheduler")]
        assert not overrides, f"{name} replaces the locking scheduler: {overrides}"
    assert len({environment(beat).get("REDIS_URL") for beat in beats.values()}) == 1


def test_flower_monitors_the_workers(services: dict[str, Service]) -> None:
    assert running(services, "flower")


def test_app_services_run_a_cli_in_exec_form(app_services: dict[str, Service]) -> None:
    assert app_services, "no service is built from this project"
    for name, service in app_services.items():
        command = service.get("command")
        assert isinstance(command, list), f"{name}: command must be a list (exec form)"
        assert all(isinstance(arg, str) for arg in command), f"{name}: non-string in {command}"
        assert command[0] in PROGRAMS, f"{name}: runs {command[0]!r}, not one of {PROGRAMS}"


def test_app_service_commands_are_real_cli_subcommands(app_services: dict[str, Service]) -> None:
    try:
        from analytics.cli import main
    except ImportError as exc:
        pytest.fail(f"the analytics CLI cannot be imported, so no command can be checked: {exc}")
    from celery.bin.celery import celery

    assert isinstance(main, click.Group), "analytics.cli.main is not a click group"
    known = {"analytics": set(main.commands), "celery": set(celery.commands)}
    for name, service in app_services.items():
        command = service["command"]
        assert subcommand(command) in known[command[0]], (
            f"{name}: {command[0]} has no subcommand {subcommand(command)!r} "
            f"(it has {sorted(known[command[0]])})"
        )


def test_flower_requires_basic_auth(services: dict[str, Service]) -> None:
    for name, flower in running(services, "flower").items():
        command = flower["command"]
        values = [arg.partition("=")[2] for arg in command if arg.startswith("--basic-auth=")]
        values += [
            command[index + 1] for index, arg in enumerate(command[:-1]) if arg == "--basic-auth"
        ]
        assert values and all(values), f"{name} serves flower without --basic-auth"


def test_flower_port_is_published_on_loopback_only(services: dict[str, Service]) -> None:
    for name, flower in running(services, "flower").items():
        ports = flower.get("ports", [])
        assert ports, f"{name} publishes no port"
        for port in ports:
            assert is_loopback(host_ip(port)), f"{name} publishes {port!r} beyond 127.0.0.1"


def test_no_service_publishes_a_port_beyond_loopback(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert is_loopback(host_ip(port)), f"{name} publishes {port!r} beyond loopback"


def test_every_app_service_sets_database_and_redis_urls(
    app_services: dict[str, Service], services: dict[str, Service]
) -> None:
    for name, service in app_services.items():
        env = environment(service)
        for variable in ("DATABASE_URL", "REDIS_URL"):
            url = env.get(variable)
            assert url, f"{name} does not set {variable}"
            if "$" not in url:
                host = urlsplit(url).hostname
                assert host in services, f"{name}: {variable} points at {host!r}, not a service"


def test_depends_on_references_existing_services(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for dependency, condition in dependencies(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            assert condition in DEPENDENCY_CONDITIONS, f"{name}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )


def test_app_services_start_after_migrations_and_healthy_redis(
    app_services: dict[str, Service],
) -> None:
    for name, service in app_services.items():
        if name == "migrate":
            continue
        depends_on = dependencies(service)
        assert depends_on.get("migrate") == "service_completed_successfully", name
        assert depends_on.get("redis") == "service_healthy", name


def test_migrate_waits_for_healthy_postgres_and_runs_once(services: dict[str, Service]) -> None:
    migrate = services["migrate"]

    assert dependencies(migrate).get("postgres") == "service_healthy"
    # An unquoted `no` is YAML 1.1's false; the restart policy must be the string "no".
    assert migrate.get("restart", "no") == "no"


#: Where each kind of process serves its Prometheus metrics in the stack (docs/metrics.md).
METRICS_PORTS = {"bridge": 9101, "worker": 9102}


def option_names(command: click.Command) -> set[str]:
    return {
        name
        for param in command.params
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
    }


def passed_on_options(args: list[str]) -> list[str]:
    """The option names among arguments a command passes on to another program."""
    return [arg.partition("=")[0] for arg in args if arg.startswith("-")]


def parse(command: list[str]) -> click.Context:
    """The command line parsed by the real command it names: unknown options fail the test."""
    from celery.bin.celery import celery

    from analytics.cli import main

    group: click.Group = main if command[0] == "analytics" else celery
    name = subcommand(command)
    assert name is not None, command
    args = command[command.index(name) + 1 :]
    try:
        return group.commands[name].make_context(name, list(args), resilient_parsing=False)
    except click.ClickException as exc:
        pytest.fail(f"{command}: {exc.format_message()}")


def test_app_service_commands_have_only_real_options(app_services: dict[str, Service]) -> None:
    from celery.bin.beat import beat
    from celery.bin.worker import worker
    from flower.options import options as flower_options

    passed_on_to = {
        "worker": option_names(worker),
        "beat": option_names(beat),
        "flower": {f"--{name}" for name in flower_options._options},
    }
    for name, service in app_services.items():
        ctx = parse(service["command"])
        known = passed_on_to.get(subcommand(service["command"]) or "", set())
        unknown = [arg for arg in passed_on_options(ctx.args) if arg not in known]
        assert not unknown, f"{name}: no program takes {unknown}"


def test_bridges_and_workers_serve_metrics_on_the_documented_ports(
    services: dict[str, Service],
) -> None:
    documented = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    for kind, port in METRICS_PORTS.items():
        processes = running(services, kind)
        assert processes, f"no service runs {kind}"
        for name, service in processes.items():
            params = parse(service["command"]).params
            assert params["metrics_port"] == port, f"{name} serves no metrics on {port}"
            # Prometheus scrapes it over the compose network; no port is published.
            assert params["metrics_host"] == "0.0.0.0", name
            assert not service.get("ports"), name
            assert f'"{name}:{port}"' in documented, f"docs/metrics.md does not scrape {name}"


@pytest.mark.parametrize(
    "command",
    [
        ["analytics", "bridge", "--metrics-prot", "9101"],
        ["analytics", "worker", "--metrics-port", "none"],
        ["analytics", "worker", "--concurency", "2"],
        ["analytics", "flower", "--basic_auth=a:b"],
    ],
)
def test_a_misspelt_option_is_caught(command: list[str]) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        test_app_service_commands_have_only_real_options({"svc": {"command": command}})


# ------------------------------------------------------- ports, health and the image

#: Services that run once (and exit): nothing to check the health of.
ONE_SHOT = ("migrate",)


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Service]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_redis_postgres_and_the_api_are_published_on_loopback_for_the_host(
    services: dict[str, Service],
) -> None:
    for name, port in (("redis", "6379"), ("postgres", "5432"), ("api", "8000")):
        ports = [str(p) for p in services[name].get("ports", [])]
        assert any(p.endswith(f":{port}") and is_loopback(host_ip(p)) for p in ports), name


def test_the_api_service_serves_on_every_interface_of_its_container(
    services: dict[str, Service],
) -> None:
    (api,) = running(services, "serve").values()
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"


def test_the_rabbitmq_profile_swaps_the_broker_of_every_app_service() -> None:
    amqp = "amqp://analytics:rabbit@rabbitmq:5672//"
    compose = load_compose({**SECRETS_SET, "CELERY_BROKER_URL": amqp})
    assert compose["services"]["rabbitmq"]["profiles"] == ["rabbitmq"]
    for name, service in compose["services"].items():
        if "build" in service:
            assert environment(service)["CELERY_BROKER_URL"] == amqp, name
    default = load_compose()["services"]["bridge"]
    assert environment(default)["CELERY_BROKER_URL"] == "redis://:r3dis-pass@redis:6379/0"


def test_the_image_installs_dependencies_before_the_code_and_runs_unprivileged() -> None:
    lines = [
        line.strip()
        for line in (COMPOSE_FILE.parent / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    assert lines[copies[0]] == "COPY pyproject.toml ./"
    assert copies[0] < installs[0] < copies[1] < installs[1]  # deps, then the code
    assert "-e " not in " ".join(lines)  # a real install: the migrations ship in the package
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert lines[user] == "USER analytics"
    assert any(line == "WORKDIR /var/lib/analytics" for line in lines[user:])
    assert "install -d -o analytics -g analytics /var/lib/analytics" in " ".join(lines)
