"""Secrets live in the environment: none in the repository, none in a settings default."""

from __future__ import annotations

import re
import subprocess

from streams.settings import ROOT, Settings

SECRET_SHAPES = {
    "Twilio account SID": re.compile(rb"AC[0-9a-f]{32}"),
    "Twilio API key SID": re.compile(rb"SK[0-9a-f]{32}"),
    "SendGrid API key": re.compile(rb"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),
    "private key": re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
SECRET_SETTINGS = ("twilio_account_sid", "twilio_auth_token", "sendgrid_api_key")


def test_no_tracked_file_holds_a_secret():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    assert len(files) > 50  # the search below covered the repository
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if path.is_file():
            data = path.read_bytes()
            found += [f"{name.decode()}: {kind}" for kind, shape in SECRET_SHAPES.items() if shape.search(data)]
    assert not found


def test_provider_secrets_come_only_from_the_environment(monkeypatch):
    for variable in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SENDGRID_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    unset = Settings.from_env()
    assert all(getattr(unset, name) is None for name in SECRET_SETTINGS)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")
    assert Settings.from_env().twilio_auth_token == "from-the-environment"


def test_the_secret_shapes_recognise_real_looking_secrets():
    made_up = {"Twilio account SID": b"AC" + b"0123456789abcdef" * 2, "Twilio API key SID": b"SK" + b"f" * 32,
               "SendGrid API key": b"SG." + b"a" * 22 + b"." + b"B" * 43,
               "private key": b"-----BEGIN RSA " + b"PRIVATE KEY-----"}
    assert all(SECRET_SHAPES[kind].search(sample) for kind, sample in made_up.items())
