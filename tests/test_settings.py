"""Settings: declared once, read from a mapping, refused with one plain line, documented from the declaration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import ROOT, Settings, declared, settings_help, settings_table_markdown


def test_defaults_and_values_come_from_the_mapping_given():
    settings = Settings.from_env({})
    assert (settings.partitions, settings.dispatch, settings.compression, settings.bootstrap_servers) == \
        (4, True, "lz4", None)
    settings = Settings.from_env({"FOREWARN_PARTITIONS": "8", "FOREWARN_DISPATCH": "0",
                                  "FOREWARN_COMPRESSION": "none", "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
                                  "FOREWARN_TOPIC_ORDERS": "shop-orders", "FOREWARN_RULES": "/etc/forewarn.yaml",
                                  "SENDGRID_FROM": "", "FOREWARN_SMS_RATE": "25"})
    assert (settings.partitions, settings.dispatch, settings.compression, settings.bootstrap_servers) == \
        (8, False, None, "kafka:9092")
    assert settings.topics.orders == "shop-orders" and settings.topics.source()[0] == "shop-orders"
    assert settings.rules_file == Path("/etc/forewarn.yaml") and settings.sms_rate == 25.0
    assert settings.sendgrid_from is None


def test_reading_never_writes_the_environment():
    before = dict(os.environ)
    Settings.from_env({"FOREWARN_APP_ID": "elsewhere"})
    Settings.from_env()
    assert dict(os.environ) == before


@pytest.mark.parametrize("variable, value, expected", [
    ("FOREWARN_PARTITIONS", "four", "is not a whole number"),
    ("FOREWARN_SMS_RATE", "fast", "is not a number"),
    ("FOREWARN_CLOCK", "event-time", "is not wall or event"),
])
def test_a_bad_value_is_one_plain_line_naming_the_variable(variable, value, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}={value!r}") and expected in message and "\n" not in message


def test_secrets_never_show_in_a_repr():
    settings = Settings.from_env({"TWILIO_AUTH_TOKEN": "tok-123", "SENDGRID_API_KEY": "SG.abc",
                                  "TWILIO_ACCOUNT_SID": "AC999"})
    assert settings.twilio_auth_token == "tok-123"
    assert not any(secret in repr(settings) for secret in ("tok-123", "SG.abc", "AC999"))


def test_every_setting_is_declared_with_a_variable_and_help_and_listed_in_the_worker_help():
    variables = [env for env, _, _ in declared()]
    assert len(variables) == len(set(variables)) and len(variables) > 50
    assert all(help for _, _, help in declared())
    assert all(env in settings_help() for env in variables)


def test_the_readme_table_is_the_declaration():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index("<!-- settings:start"), readme.index("<!-- settings:end -->")
    table = readme[readme.index("\n", start) + 1:end].strip()
    assert table == settings_table_markdown(), "regenerate with: python -m streams.settings --markdown"
