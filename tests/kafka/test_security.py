"""Kafka TLS and SASL: the settings, what kafka-python and faust are given, and combinations refused at start.

No broker here checks them: Tansu 0.6 (the embedded broker) has no TLS listener (``--cert`` leaves the
listener plain) and, with memory storage, offers no SASL mechanism (SCRAM users live in the storage and
cannot be added before authentication is switched on).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaConsumer, KafkaProducer

from streams.errors import ConfigError
from streams.kafka.admin import client_options, security_options
from streams.settings import ROOT, KafkaSecurity, Settings
from streams.kafka.security import broker_credentials

PASSWORD = "pa55-w0rd-never-shown"
KEY_PASSWORD = "key-pa55-never-shown"
USER = "svc-user-never-shown"


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    """A CA, and a client certificate it signed with its key encrypted by KEY_PASSWORD, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", ca_key, "test CA", ca_key, ca=True)
    client = _certificate("forewarn", client_key, "test CA", ca_key, ca=False)
    files = {"KAFKA_SSL_CAFILE": folder / "ca.pem", "KAFKA_SSL_CERTFILE": folder / "client.pem",
             "KAFKA_SSL_KEYFILE": folder / "client.key"}
    files["KAFKA_SSL_CAFILE"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["KAFKA_SSL_CERTFILE"].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    files["KAFKA_SSL_KEYFILE"].write_bytes(client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    return {env: str(path) for env, path in files.items()}


def sasl_ssl(tls_files: dict[str, str], mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME": USER, "KAFKA_SASL_PASSWORD": PASSWORD,
            "KAFKA_SSL_CAFILE": tls_files["KAFKA_SSL_CAFILE"]}


def test_plaintext_by_default_adds_nothing():
    security = KafkaSecurity.from_env({})
    assert security_options(security) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(security) is None


def test_sasl_over_tls_gives_kafka_python_the_mechanism_user_password_and_ca(tls_files):
    security = KafkaSecurity.from_env(sasl_ssl(tls_files))

    assert security_options(security) == {
        "security_protocol": "SASL_SSL", "ssl_cafile": tls_files["KAFKA_SSL_CAFILE"],
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}


def test_mutual_tls_gives_kafka_python_the_certificate_key_and_key_password(tls_files):
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
                                       **tls_files})

    assert security_options(security) == {
        "security_protocol": "SSL", "ssl_cafile": tls_files["KAFKA_SSL_CAFILE"],
        "ssl_certfile": tls_files["KAFKA_SSL_CERTFILE"], "ssl_keyfile": tls_files["KAFKA_SSL_KEYFILE"],
        "ssl_password": KEY_PASSWORD}


@pytest.mark.parametrize("client", [KafkaConsumer, KafkaProducer])
def test_kafka_python_takes_every_option_built(tls_files, monkeypatch, client):
    """An option kafka-python does not know would stop every tool at start ("Unrecognized configs")."""
    for env, value in {"KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD, **tls_files, **sasl_ssl(tls_files)}.items():
        monkeypatch.setenv(env, value)
    options = client_options("127.0.0.1:1")  # from the environment, as the tools build them
    assert options["sasl_plain_password"] == PASSWORD and options["ssl_password"] == KEY_PASSWORD
    client(**options).close()


def test_faust_gets_sasl_credentials_with_a_verifying_tls_context(tls_files):
    credentials = broker_credentials(KafkaSecurity.from_env(sasl_ssl(tls_files, mechanism="PLAIN")))

    auth = credentials_to_aiokafka_auth(credentials)  # what faust hands aiokafka
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"],
            auth["sasl_plain_password"]) == ("SASL_SSL", "PLAIN", USER, PASSWORD)
    context = auth["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "test CA"),),)]
    assert PASSWORD not in repr(credentials)


def test_faust_gets_tls_credentials_with_the_client_certificate(tls_files):
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
                                       **tls_files})

    auth = credentials_to_aiokafka_auth(broker_credentials(security))

    assert auth["security_protocol"] == "SSL" and auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_a_wrong_key_password_is_a_config_error_naming_the_files(tls_files):
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": "wrong",
                                       **tls_files})
    with pytest.raises(ConfigError, match="KAFKA_SSL_CERTFILE or KAFKA_SSL_KEYFILE do not load"):
        broker_credentials(security)


def test_the_worker_app_connects_with_the_credentials_of_its_settings(tls_files, tmp_path):
    probe = """
import json, sys
from dataclasses import replace
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from streams.settings import KafkaSecurity, Settings
from streams.worker import build_app
settings = replace(Settings(), bootstrap_servers="127.0.0.1:1", kafka_security=KafkaSecurity.from_env(json.loads(sys.argv[1])))
auth = credentials_to_aiokafka_auth(build_app(settings).conf.broker_credentials)
print(json.dumps({key: auth[key] for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username")}))
"""
    result = subprocess.run([sys.executable, "-c", probe, json.dumps(sasl_ssl(tls_files, "SCRAM-SHA-256"))],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": USER}


def test_passwords_and_user_never_show_in_a_repr(tls_files):
    settings = Settings.from_env({**sasl_ssl(tls_files), "KAFKA_SECURITY_PROTOCOL": "SSL",
                                  "KAFKA_SASL_MECHANISM": "", "KAFKA_SASL_USERNAME": "", "KAFKA_SASL_PASSWORD": "",
                                  "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD, **tls_files})
    sasl = KafkaSecurity.from_env(sasl_ssl(tls_files))
    assert settings.kafka_security.ssl_key_password == KEY_PASSWORD and sasl.sasl_password == PASSWORD
    for shown in (repr(settings), repr(sasl)):
        assert KEY_PASSWORD not in shown and PASSWORD not in shown and USER not in shown


@pytest.mark.parametrize("environ, says", [
    ({"KAFKA_SASL_MECHANISM": "PLAIN"},
     "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SASL_PASSWORD": "x"},
     "KAFKA_SASL_PASSWORD is set but KAFKA_SECURITY_PROTOCOL=SSL does not use SASL"),
    ({"KAFKA_SSL_CERTFILE": "{cert}"}, "KAFKA_SSL_CERTFILE is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
      "KAFKA_SASL_PASSWORD": "p", "KAFKA_SSL_CAFILE": "{ca}"},
     "KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nowhere/ca.pem"},
     "KAFKA_SSL_CAFILE=/nowhere/ca.pem: no such file"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "u"},
     "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
     "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "{key}"},
     "KAFKA_SSL_KEYFILE and KAFKA_SSL_KEY_PASSWORD belong to a client certificate: set KAFKA_SSL_CERTFILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS' is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
     "KAFKA_SASL_MECHANISM='GSSAPI' is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
])
def test_settings_that_do_not_fit_together_are_one_plain_line_naming_the_variable(tls_files, environ, says):
    paths = {"cert": tls_files["KAFKA_SSL_CERTFILE"], "ca": tls_files["KAFKA_SSL_CAFILE"],
             "key": tls_files["KAFKA_SSL_KEYFILE"]}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({env: value.format(**paths) for env, value in environ.items()})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_protocol_and_mechanism_may_be_written_in_lower_case(tls_files):
    security = KafkaSecurity.from_env({**sasl_ssl(tls_files, "scram-sha-256"), "KAFKA_SECURITY_PROTOCOL": "sasl_ssl"})
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")


@pytest.mark.parametrize("command, environ, says", [
    (["produce", "orders", "events.jsonl"], {"KAFKA_SASL_MECHANISM": "PLAIN"},
     "KAFKA_SASL_MECHANISM is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL"),
    (["worker"], {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEY_PASSWORD": "wrong"}, "do not load"),
])
def test_a_command_stops_in_one_line_before_it_connects(tls_files, tmp_path, command, environ, says):
    (tmp_path / "events.jsonl").write_text('{"id": "e1"}\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "FOREWARN_METRICS_PORT": "0", "FOREWARN_UNSUBSCRIBE_SECRET": "tests-only", **tls_files, **environ}
    if "KAFKA_SECURITY_PROTOCOL" not in environ:
        env = {name: value for name, value in env.items() if name not in tls_files}

    result = subprocess.run([sys.executable, "-m", "streams.cli", *command], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60, env=env)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and says in lines[0], result.stderr


def test_the_receipts_receivers_producer_gets_the_same_security_as_the_worker(tls_files):
    from streams.kafka.security import aiokafka_options

    options = aiokafka_options(KafkaSecurity.from_env(sasl_ssl(tls_files, mechanism="SCRAM-SHA-256")))
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert aiokafka_options(KafkaSecurity()) == {"security_protocol": "PLAINTEXT"}
