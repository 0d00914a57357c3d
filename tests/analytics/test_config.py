"""Settings come from the environment, with DESIGN.md's defaults, and bad values are refused."""

import pytest

from analytics.config import Settings
from analytics.errors import ConfigError


def test_defaults_match_the_design():
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.event_channel_pattern == "events:*"
    assert settings.celery_broker_url == settings.redis_url
    assert settings.database_url == "sqlite:///analytics.db"
    assert settings.pii_salt is None
    assert settings.default_currency == "USD"
    assert settings.max_payload_bytes == 1024 * 1024


def test_broker_defaults_to_redis_url_and_can_be_set_apart():
    env = {"REDIS_URL": "redis://pubsub:6379/0"}
    assert Settings.from_env(env).celery_broker_url == "redis://pubsub:6379/0"
    env["CELERY_BROKER_URL"] = "amqp://guest@rabbit//"
    assert Settings.from_env(env).celery_broker_url == "amqp://guest@rabbit//"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://u:p@db:5432/a", "postgresql+psycopg2://u:p@db:5432/a"),
        ("postgresql://u:p@db:5432/a", "postgresql+psycopg2://u:p@db:5432/a"),
        ("postgresql+psycopg2://u@db/a", "postgresql+psycopg2://u@db/a"),
        ("sqlite:///analytics.db", "sqlite:///analytics.db"),
    ],
)
def test_postgres_urls_without_a_driver_use_the_installed_one(given, used):
    assert Settings.from_env({"DATABASE_URL": given}).database_url == used


def test_prefixed_pattern_gives_the_channel_prefix():
    settings = Settings.from_env({"EVENT_CHANNEL_PATTERN": "staging:events:*"})
    assert settings.channel_prefix == "staging:events:"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EVENT_CHANNEL_PATTERN": "events:order"}, "needs a '*'"),
        ({"REDIS_URL": "localhost:6379"}, "is not a URL"),
        ({"BRIDGE_BATCH_SIZE": "many"}, "is not an integer"),
        ({"BRIDGE_BATCH_SIZE": "0"}, "must be at least 1"),
        ({"BRIDGE_FLUSH_MS": "-1"}, "must be at least 0"),
        ({"BRIDGE_MAX_HOLD_MS": "soon"}, "is not a number"),
        ({"BRIDGE_HOLD_BUDGET_MS": "-5"}, "must be at least 0"),
        ({"BRIDGE_FILL_EVENTS": "0"}, "must be at least 1"),
        ({"DEFAULT_CURRENCY": "dollars"}, "3-letter"),
        ({"BEAT_LOCK_TIMEOUT": "1"}, "must be at least 5"),
        ({"BRIDGE_INPUT": "kafka"}, "is not one of pubsub, stream"),
        ({"MAX_JSON_DEPTH": "0"}, "must be at least 1"),
        ({"BRIDGE_MAX_BUFFER_BYTES": "lots"}, "is not an integer"),
        ({"DATABASE_URL": "db.example.com/analytics"}, "is not a URL"),
    ],
)
def test_malformed_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env(env)
    assert next(iter(env)) in str(info.value)


def test_the_bridge_holds_partial_batches_for_a_busy_queue_up_to_its_setting():
    assert Settings.from_env({}).bridge_max_hold_ms == 250.0
    assert Settings.from_env({"BRIDGE_MAX_HOLD_MS": "0"}).bridge_max_hold_ms == 0.0


def test_a_quiet_stream_waits_up_to_the_hold_budget_to_fill_a_batch_by_default():
    settings = Settings.from_env({})
    assert (settings.bridge_hold_budget_ms, settings.bridge_fill_events) == (210.0, 100)
    assert settings.bridge_hold_event_us == 250.0
    env = {"BRIDGE_HOLD_BUDGET_MS": "0", "BRIDGE_FILL_EVENTS": "20", "BRIDGE_HOLD_EVENT_US": "0"}
    assert Settings.from_env(env).bridge_hold_budget_ms == 0.0
    assert Settings.from_env(env).bridge_fill_events == 20
    assert Settings.from_env(env).bridge_hold_event_us == 0.0


def test_pii_salt_is_not_shown_in_repr():
    settings = Settings.from_env({"PII_SALT": "s3cret"})
    assert settings.pii_salt == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(("timeout", "sweep"), [("", 10.0), ("20", 5.0), ("2", 1.0)])
def test_the_broker_sweeps_for_lost_batches_a_few_times_per_visibility_timeout(timeout, sweep):
    from tasks.app import make_app

    settings = Settings.from_env({"CELERY_VISIBILITY_TIMEOUT": timeout})
    assert settings.restore_interval == sweep
    options = make_app(settings).conf.broker_transport_options
    assert options["visibility_timeout"] == int(timeout or 90)  # lost batches back in < 2 min
    assert options["unacked_restore_interval"] == sweep
    assert options["unacked_restore_throttle"] == 1  # kombu's default scans every 10th sweep


def test_beat_renews_its_lock_five_times_per_timeout():
    assert Settings.from_env({}).beat_lock_timeout == 30
    assert Settings.from_env({}).beat_max_interval == 6
    assert Settings.from_env({"BEAT_LOCK_TIMEOUT": "10"}).beat_max_interval == 2


def test_bridge_input_and_its_limits_have_defaults_and_can_be_set():
    settings = Settings.from_env({})
    assert (settings.bridge_input, settings.stream_group, settings.stream_consumer) == (
        "pubsub",
        "analytics",
        "",
    )
    assert settings.stream_claim_idle_ms == 30_000
    assert settings.bridge_max_buffer_bytes == 128 * 1024 * 1024
    assert settings.max_json_depth == 32
    settings = Settings.from_env(
        {
            "BRIDGE_INPUT": "Stream",
            "STREAM_GROUP": "g",
            "STREAM_CONSUMER": "bridge-1",
            "STREAM_CLAIM_IDLE_MS": "500",
            "BRIDGE_MAX_BUFFER_BYTES": "1048576",
            "BRIDGE_SPOOL_DIR": "/var/spool/analytics",
            "MAX_JSON_DEPTH": "8",
        }
    )
    assert settings.bridge_input == "stream"
    assert (settings.stream_group, settings.stream_consumer) == ("g", "bridge-1")
    assert settings.stream_claim_idle_ms == 500
    assert settings.bridge_max_buffer_bytes == 1 << 20
    assert settings.bridge_spool_dir == "/var/spool/analytics"
    assert settings.max_json_depth == 8
