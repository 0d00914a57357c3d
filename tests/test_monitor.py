"""`analytics flower` and `analytics beat`: their options listed and accepted; Flower fails closed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import click
import pytest

from analytics.cli import main
from analytics.cli.monitor import ForeignOptionsCommand, _option_argv, flower_argv
from tests.conftest import Process, wait_for


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    return subprocess.run(
        [sys.executable, "-m", "analytics", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def parsed(name: str, args: list[str]) -> tuple[ForeignOptionsCommand, dict[str, object]]:
    command = main.commands[name]
    assert isinstance(command, ForeignOptionsCommand)
    ctx = command.make_context(name, args)
    return command, ctx.params


def test_flower_without_credentials_refuses_to_start_with_one_line():
    result = run("flower")

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--basic-auth" in lines[0] and "--no-auth" in lines[0]


def test_flower_refuses_no_auth_together_with_credentials():
    result = run("flower", "--no-auth", env={"FLOWER_BASIC_AUTH": "admin:secret"})

    assert result.returncode != 0
    assert "--no-auth contradicts" in result.stderr


def test_flower_refuses_basic_auth_without_a_password():
    result = run("flower", "--basic-auth", "admin")

    assert result.returncode != 0
    assert "expected user:password" in result.stderr


def test_flower_help_lists_its_own_and_flowers_options():
    output = " ".join(run("flower", "--help").stdout.split())

    for option in ("--port", "--address", "--basic-auth", "--no-auth", "--max-tasks", "--db"):
        assert option in output
    assert "[default: 127.0.0.1]" in output


def test_beat_help_lists_celery_beats_options():
    output = " ".join(run("beat", "--help").stdout.split())

    for option in ("--max-interval", "--loglevel", "--pidfile", "--schedule"):
        assert option in output


@pytest.mark.parametrize("form", [["--max-tasks", "500"], ["--max-tasks=500"]])
def test_flower_options_are_accepted_with_or_without_an_equals_sign(form):
    command, params = parsed("flower", ["--basic-auth", "a:b", *form, "--no-persistent"])

    argv = flower_argv(command.foreign_params(), params)

    # Tornado, which parses Flower's options, reads only --name=value.
    assert "--max-tasks=500" in argv
    assert "--persistent=false" in argv
    assert params["port"] == 5555 and params["address"] == "127.0.0.1"


def test_flower_lists_are_given_comma_separated():
    command, params = parsed(
        "flower",
        ["--no-auth", "--task-runtime-metric-buckets", "1", "--task-runtime-metric-buckets", "5"],
    )

    assert "--task-runtime-metric-buckets=1.0,5.0" in flower_argv(command.foreign_params(), params)


def test_beat_options_reach_celery_beat_in_either_form():
    for form in (["--max-interval", "7"], ["--max-interval=7"]):
        command, params = parsed("beat", [*form, "-l", "debug"])

        argv = _option_argv(command.foreign_params(), params)

        assert "--max-interval=7" in argv
        assert "--loglevel=DEBUG" in argv or "--loglevel=debug" in argv
        # A beat must not be started detached unless asked.
        assert "--detach" not in argv


def test_beat_logs_at_info_by_default():
    command, params = parsed("beat", [])

    assert _option_argv(command.foreign_params(), params) == ["--loglevel=INFO"]


def test_a_bad_flower_option_is_a_usage_error():
    result = run("flower", "--no-auth", "--max-tasks", "many")

    assert result.returncode == 2
    assert "'many' is not a valid integer" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str, credentials: str | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _outside_address() -> str | None:
    """This host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.slow
def test_flower_listens_on_loopback_only_and_asks_for_its_password(redis_url: str, tmp_path: Path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url)
    argv = [sys.executable, "-m", "analytics", "flower", "--port", str(port)]
    flower = Process("flower", [*argv, "--basic-auth", "admin:s3cret"], env, tmp_path / "f.log")
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _status(url) == 401 or not flower.alive, timeout=30, what="flower up")
        assert flower.alive, flower.output()

        assert _status(url, "admin:s3cret") == 200
        assert _status(url, "admin:wrong") == 401
        address = _outside_address()
        if address:
            with socket.socket() as probe:
                probe.settimeout(2)
                assert probe.connect_ex((address, port)) != 0, f"flower answers on {address}"
    finally:
        flower.kill()


def test_the_foreign_options_do_not_load_flower_for_other_commands():
    # prometheus-client picks its mode on import (worker --metrics-port); Flower imports it.
    code = (
        "import sys; from click.testing import CliRunner; from analytics.cli import main; "
        "CliRunner().invoke(main, ['--help']); print('flower' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert done.stdout.strip() == "False", done.stderr


def test_click_option_types_are_kept():
    # --port is ours, validated: Flower's own would take any integer.
    with pytest.raises(click.BadParameter):
        parsed("flower", ["--no-auth", "--port", "70000"])
