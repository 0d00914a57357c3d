"""docker-compose.yml fails closed and keeps Redis durable: no default secrets, AOF, noeviction.

The file is interpolated here as Compose does it (``${VAR}``, ``${VAR:-default}``,
``${VAR:?error}``, ``$$``), so that "compose refuses to start without the secrets"
is checked without Docker.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_compose import (
    _VARIABLE,
    COMPOSE_FILE,
    SECRETS_SET,
    MissingVariable,
    environment,
    interpolate,
    load_compose,
    running,
)

#: The secrets the stack must be given; it has no placeholder for any of them.
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")


def load(env: dict[str, str]) -> dict[str, Any]:
    return load_compose(env)


SET = SECRETS_SET


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
    # Nested, as Compose reads them: the inner variable is only needed when the outer is unset.
    assert interpolate("${A:-x${B:?need B}}", {"A": "a"}) == "a"
    assert interpolate("${A:-x${B:?need B}}", {"B": "b"}) == "xb"
    with pytest.raises(MissingVariable, match="need B"):
        interpolate("${A:-x${B:?need B}}", {})
