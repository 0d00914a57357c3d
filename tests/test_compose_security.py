"""docker-compose.yml fails closed and keeps Redis durable: no default secrets, AOF, noeviction.

The file is interpolated here as Compose does it (``${VAR}``, ``${VAR:-default}``,
``${VAR:?error}``, ``$$``), so that "compose refuses to start without the secrets"
is checked without Docker.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.test_compose import COMPOSE_FILE, environment, running

#: The secrets the stack must be given; it has no placeholder for any of them.
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    """A required variable (``${VAR:?message}``) is unset or empty, as Compose reports it."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with Compose's variable syntax substituted from ``env``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        value = env.get(name)
        # With a colon, empty counts as unset.
        missing = not value if op in (":-", ":?") else value is None
        if op and op.endswith("?") and missing:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return value or ""

    return _VARIABLE.sub(substitute, text)


def load(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), env))


SET = {
    "REDIS_PASSWORD": "r3dis-pass",
    "POSTGRES_PASSWORD": "pg-pass",
    "FLOWER_BASIC_AUTH": "ops:fl0wer",
}


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(secret: str):
    for missing in ({k: v for k, v in SET.items() if k != secret}, {**SET, secret: ""}):
        with pytest.raises(MissingVariable, match=secret):
            load(missing)


def test_no_secret_has_a_placeholder_default():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for match in _VARIABLE.finditer(text):
        if match["name"] in SECRETS:
            assert match["op"] == ":?", f"{match[0]} must fail when unset (${{VAR:?message}})"
    for placeholder in ("change-me", "admin:change-me"):
        assert placeholder not in text


def test_the_given_secrets_reach_every_listener_and_client():
    compose = load(SET)
    services = compose["services"]

    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--requirepass") + 1] == SET["REDIS_PASSWORD"]
    assert environment(services["postgres"])["POSTGRES_PASSWORD"] == SET["POSTGRES_PASSWORD"]
    for name, service in services.items():
        if "build" not in service:
            continue
        env = environment(service)
        assert f":{SET['REDIS_PASSWORD']}@" in (env["REDIS_URL"] or ""), name
        assert f":{SET['POSTGRES_PASSWORD']}@" in (env["DATABASE_URL"] or ""), name
    for name, flower in running(services, "flower").items():
        assert f"--basic-auth={SET['FLOWER_BASIC_AUTH']}" in flower["command"], name


def _option(command: list[str], name: str) -> str | None:
    for index, arg in enumerate(command):
        if arg == name and index + 1 < len(command):
            return command[index + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def test_redis_keeps_an_append_only_file_fsynced_every_second():
    command = load(SET)["services"]["redis"]["command"]

    assert _option(command, "--appendonly") == "yes"
    assert _option(command, "--appendfsync") == "everysec"


def test_redis_refuses_writes_rather_than_evicting_queues():
    command = load(SET)["services"]["redis"]["command"]

    assert _option(command, "--maxmemory-policy") == "noeviction"


def test_redis_keeps_its_files_on_a_volume():
    redis = load(SET)["services"]["redis"]

    assert any(str(volume).endswith(":/data") for volume in redis.get("volumes", []))


def test_interpolation_follows_compose():
    assert interpolate("a${X:-d}b", {}) == "adb"
    assert interpolate("a${X:-d}b", {"X": ""}) == "adb"
    assert interpolate("a${X-d}b", {"X": ""}) == "ab"
    assert interpolate("$${X}", {"X": "1"}) == "${X}"
    with pytest.raises(MissingVariable):
        interpolate("${X:?need X}", {"X": ""})
    assert interpolate("${X?need X}", {"X": ""}) == ""
