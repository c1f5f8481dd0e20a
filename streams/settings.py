"""One settings object; each setting declared once, with its environment variable, default and help.

``Settings.from_env(environ)`` reads them (``os.environ`` when not given) and
never writes the environment. The help of ``forewarn worker --help`` and the
README's settings table are generated from the same declaration
(``python -m streams.settings --markdown`` prints the table).
Secrets (provider and Kafka credentials) are only ever read from the
environment and never show in a repr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Any

from streams.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

SOURCE_TOPICS = ("orders", "carts", "outages", "customers", "support")
TOPIC_FOR_EVENT = {"order": "orders", "shipment": "orders", "cart": "carts", "outage": "outages",
                   "customer": "customers", "support": "support"}


def _text(raw: str) -> str:
    return raw


def _optional(raw: str) -> str | None:
    return raw or None


def _compression(raw: str) -> str | None:
    return None if raw.lower() == "none" else raw


def _switch(raw: str) -> bool:
    return raw != "0"


def _clock(raw: str) -> str:
    if raw not in ("wall", "event"):
        raise ValueError(raw)
    return raw


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _one_of(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in options:
            raise ValueError(raw)
        return raw.upper()
    return parse


PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "text": (_text, "text"),
    "optional": (_optional, "text"),
    "int": (int, "a whole number"),
    "float": (float, "a number"),
    "path": (lambda raw: Path(raw) if raw else None, "a path"),
    "compression": (_compression, "none, gzip, lz4 or zstd"),
    "switch": (_switch, "0 (off) or 1 (on)"),
    "clock": (_clock, "wall or event"),
    "protocol": (_one_of(SECURITY_PROTOCOLS), "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    "mechanism": (_one_of(SASL_MECHANISMS), "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
}


def setting(env: str, default: Any, help: str, kind: str = "text", secret: bool = False, shown: str | None = None):
    """A field read from ``env``; ``kind`` names its parser; ``shown`` is the default as the help prints it."""
    metadata = {"env": env, "help": help, "kind": kind, "secret": secret, "shown": shown}
    if callable(default):
        return field(default_factory=default, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


def _read(spec, environ: Mapping[str, str]) -> Any:
    """The field's value from ``environ``, or MISSING to keep the default."""
    raw = environ.get(spec.metadata["env"])
    if raw is None or (raw == "" and spec.metadata["kind"] != "text"):
        return MISSING
    parse, expected = PARSERS[spec.metadata["kind"]]
    try:
        value = parse(raw.strip() if spec.metadata["kind"] != "text" else raw)
    except ValueError:
        raise ConfigError(f"{spec.metadata['env']}={raw!r} is not {expected}") from None
    return MISSING if value is None and spec.metadata["kind"] == "path" else value


def _from(cls, environ: Mapping[str, str]):
    values = {}
    for spec in fields(cls):
        if "env" in spec.metadata:
            value = _read(spec, environ)
            if value is not MISSING:
                values[spec.name] = value
    return values


@dataclass(frozen=True)
class Topics:
    orders: str = setting("FOREWARN_TOPIC_ORDERS", "orders", "order events (source)")
    carts: str = setting("FOREWARN_TOPIC_CARTS", "carts", "cart events (source)")
    outages: str = setting("FOREWARN_TOPIC_OUTAGES", "outages", "outage events (source)")
    customers: str = setting("FOREWARN_TOPIC_CUSTOMERS", "customers", "customer records (source)")
    support: str = setting("FOREWARN_TOPIC_SUPPORT", "support", "customer service contacts (source; no rule "
                           "listens to them, the deflection report counts them)")
    events: str = setting("FOREWARN_TOPIC_EVENTS", "forewarn-events", "validated events, keyed by customer")
    due: str = setting("FOREWARN_TOPIC_DUE", "forewarn-due", "pending messages that fell due")
    notifications: str = setting("FOREWARN_TOPIC_NOTIFICATIONS", "notifications", "rendered messages to send")
    suppressed: str = setting("FOREWARN_TOPIC_SUPPRESSED", "suppressed", "messages held back, with the reason")
    deliveries: str = setting("FOREWARN_TOPIC_DELIVERIES", "deliveries", "what each provider did with a message")
    deadletter: str = setting("FOREWARN_TOPIC_DEADLETTER", "deadletter", "refused input, with its original bytes")
    retry: str = setting("FOREWARN_TOPIC_RETRY", "notifications.retry",
                         "notifications parked after the dispatcher's retry budget")
    consent: str = setting("FOREWARN_TOPIC_CONSENT", "consent", "what customers said they want to hear (STOP, "
                           "unsubscribe links, support, provider opt-outs), keyed by customer")
    preferences: str = setting("FOREWARN_TOPIC_PREFERENCES", "preferences", "compacted: each customer's "
                               "preferences with provenance, newest per scope (written by the decide hop)")
    fallbacks: str = setting("FOREWARN_TOPIC_FALLBACKS", "fallbacks", "a channel failed for good: try the next")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Topics":
        return cls(**_from(cls, os.environ if environ is None else environ))

    def source(self) -> tuple[str, ...]:
        return (self.orders, self.carts, self.outages, self.customers, self.support)

    def for_event_type(self, event_type: str) -> str:
        return getattr(self, TOPIC_FOR_EVENT[event_type.split(".", 1)[0]])

    def compacted(self) -> tuple[str, ...]:
        """The topics that keep the newest record per key (and forget a key on a tombstone)."""
        return (self.customers, self.preferences)

    def all(self) -> tuple[str, ...]:
        return tuple(getattr(self, spec.name) for spec in fields(self))


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client connects: TLS and SASL. User names and passwords never show in a repr."""

    protocol: str = setting("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or "
                            "`SASL_SSL`", "protocol")
    ssl_cafile: Path | None = setting("KAFKA_SSL_CAFILE", None, "PEM file of the CA that signed the brokers' "
                                      "certificates; unset: the system's CAs", "path", shown="unset")
    ssl_certfile: Path | None = setting("KAFKA_SSL_CERTFILE", None, "PEM client certificate, for brokers that "
                                        "ask for one (mutual TLS)", "path", shown="unset")
    ssl_keyfile: Path | None = setting("KAFKA_SSL_KEYFILE", None, "PEM private key of the client certificate; "
                                       "unset: in the certificate file", "path", shown="unset")
    ssl_key_password: str | None = setting("KAFKA_SSL_KEY_PASSWORD", None, "password of that private key "
                                           "(secret)", "optional", secret=True, shown="unset")
    sasl_mechanism: str | None = setting("KAFKA_SASL_MECHANISM", None, "`PLAIN`, `SCRAM-SHA-256` or "
                                         "`SCRAM-SHA-512`, with a SASL protocol", "mechanism", shown="unset")
    sasl_username: str | None = setting("KAFKA_SASL_USERNAME", None, "SASL user (secret)", "optional",
                                        secret=True, shown="unset")
    sasl_password: str | None = setting("KAFKA_SASL_PASSWORD", None, "SASL password (secret)", "optional",
                                        secret=True, shown="unset")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "KafkaSecurity":
        """The settings ``environ`` gives; a ConfigError names the variables that do not fit together."""
        security = cls(**_from(cls, os.environ if environ is None else environ))
        problems = security.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return security

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def problems(self) -> list[str]:
        """Each setting that does not fit the protocol, or a file that is not there, by its variable."""
        protocol = f"KAFKA_SECURITY_PROTOCOL={self.protocol}"
        sasl = {"KAFKA_SASL_MECHANISM": self.sasl_mechanism, "KAFKA_SASL_USERNAME": self.sasl_username,
                "KAFKA_SASL_PASSWORD": self.sasl_password}
        files = {"KAFKA_SSL_CAFILE": self.ssl_cafile, "KAFKA_SSL_CERTFILE": self.ssl_certfile,
                 "KAFKA_SSL_KEYFILE": self.ssl_keyfile}
        if self.sasl:
            problems = [f"{protocol} needs {env}" for env, value in sasl.items() if not value]
        else:
            problems = [f"{env} is set but {protocol} does not use SASL (SASL_SSL or SASL_PLAINTEXT do)"
                        for env, value in sasl.items() if value]
        if not self.tls:
            tls = {**files, "KAFKA_SSL_KEY_PASSWORD": self.ssl_key_password}
            return problems + [f"{env} is set but {protocol} does not use TLS (SSL or SASL_SSL do)"
                               for env, value in tls.items() if value]
        problems += [f"{env}={path}: no such file" for env, path in files.items() if path and not path.is_file()]
        if (self.ssl_keyfile or self.ssl_key_password) and not self.ssl_certfile:
            problems.append("KAFKA_SSL_KEYFILE and KAFKA_SSL_KEY_PASSWORD belong to a client certificate: "
                            "set KAFKA_SSL_CERTFILE")
        return problems


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = setting("KAFKA_BOOTSTRAP_SERVERS", None, "`host:port[,host:port]` of Kafka; "
                                            "unset: the embedded broker", "optional", shown="unset")
    app_id: str = setting("FOREWARN_APP_ID", "forewarn", "faust app id = consumer group")
    partitions: int = setting("FOREWARN_PARTITIONS", 4, "partitions of every topic the worker creates", "int")
    topics: Topics = field(default_factory=Topics)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    rules_file: Path = setting("FOREWARN_RULES", ROOT / "config" / "rules.yaml", "the rules file", "path",
                               shown="config/rules.yaml")
    template_dir: Path = setting("FOREWARN_TEMPLATES", ROOT / "templates", "the templates folder", "path",
                                 shown="templates/")
    schema_dir: Path = setting("FOREWARN_SCHEMAS", ROOT / "schemas", "the JSON Schemas folder", "path",
                               shown="schemas/")
    outbox_dir: Path = setting("FOREWARN_OUTBOX", Path("outbox"), "where the offline channel writes", "path")
    store: str = setting("FOREWARN_STORE", "memory://", "table store; `rocksdb://` in production "
                         "(`pip install '.[rocksdb]'`)")
    data_dir: str = setting("FOREWARN_DATA_DIR", ".forewarn-{conf.name}", "where faust keeps the "
                            "worker's local data (the rocksdb tables)")
    metrics_port: int = setting("FOREWARN_METRICS_PORT", 9108, "Prometheus metrics port; 0 turns them off", "int")
    metrics_address: str = setting("FOREWARN_METRICS_ADDRESS", "127.0.0.1", "address the metrics are served on")
    brand: str = setting("FOREWARN_BRAND", "Forewarn", "the sender's name in the copy")
    status_url: str = setting("FOREWARN_STATUS_URL", "https://status.example.nl", "status page in the copy")
    session_timeout: float = setting("FOREWARN_SESSION_TIMEOUT", 10.0, "Kafka session timeout (s); short keeps "
                                     "the first group join quick", "float")
    fetch_max_wait_ms: int = setting("FOREWARN_FETCH_MAX_WAIT_MS", 100, "how long a fetch waits for data; faust "
                                     "fixes 1500 ms, which on Tansu adds up to half a second a hop", "int")
    compression: str | None = setting("FOREWARN_COMPRESSION", "lz4", "compression of produced batches "
                                      "(`none`, `gzip`, `lz4`, `zstd`)", "compression")
    log_level: str = setting("FOREWARN_LOG_LEVEL", "info", "worker log level (`debug`, `info`, `warning`)")
    clock: str = setting("FOREWARN_CLOCK", "wall", "`wall` (production) or `event`: decide on the events' own "
                         "time, like the simulator", "clock")
    event_lateness: float = setting("FOREWARN_EVENT_LATENESS", 3600.0, "event time: seconds an event waits "
                                    "beyond every input's watermark, for records out of order within an input", "float")
    event_idle: float = setting("FOREWARN_EVENT_IDLE", 3.0, "event time: seconds without input after which "
                                "everything held and pending is decided", "float")
    producer_batch_bytes: int = setting("FOREWARN_PRODUCER_BATCH_BYTES", 1_000_000, "largest record batch the "
                                        "worker produces; under the 1 MiB a Kafka broker takes by default", "int")
    dispatch: bool = setting("FOREWARN_DISPATCH", True, "0: this worker decides but does not send (separate "
                             "dispatch workers)", "switch", shown="1")
    test_poison: str | None = setting("FOREWARN_TEST_POISON", None, "tests only, `hop:marker`: records of that "
                                      "hop holding the marker fail as if a bug hit them", "optional", shown="unset")
    fanout_limit: float = setting("FOREWARN_FANOUT_LIMIT", 3600.0, "seconds; a longer estimated fan-out is "
                                  "flagged (Twilio drops messages queued for 10 hours)", "float")
    twilio_account_sid: str | None = setting("TWILIO_ACCOUNT_SID", None, "Twilio account (secret)", "optional",
                                             secret=True, shown="unset")
    twilio_auth_token: str | None = setting("TWILIO_AUTH_TOKEN", None, "Twilio auth token (secret)", "optional",
                                            secret=True, shown="unset")
    twilio_from: str | None = setting("TWILIO_FROM", None, "sender number", "optional", shown="unset")
    twilio_messaging_service_sid: str | None = setting("TWILIO_MESSAGING_SERVICE_SID", None, "or a messaging "
                                                       "service", "optional", shown="unset")
    twilio_base_url: str | None = setting("FOREWARN_TWILIO_BASE_URL", None, "another host for the Twilio API "
                                          "(the local imitation)", "optional", shown="unset")
    sendgrid_api_key: str | None = setting("SENDGRID_API_KEY", None, "SendGrid API key (secret)", "optional",
                                           secret=True, shown="unset")
    sendgrid_from: str | None = setting("SENDGRID_FROM", None, "sender address", "optional", shown="unset")
    sendgrid_base_url: str | None = setting("FOREWARN_SENDGRID_BASE_URL", None, "another host for the SendGrid "
                                            "API (the local imitation)", "optional", shown="unset")
    sendgrid_webhook_public_key: str | None = setting("SENDGRID_WEBHOOK_PUBLIC_KEY", None, "Event Webhook "
                                                      "verification key (base64 DER)", "optional", shown="unset")
    sms_rate: float = setting("FOREWARN_SMS_RATE", 1.0, "SMS segments per second for the whole Twilio account, "
                              "shared by the workers", "float")
    email_rate: float = setting("FOREWARN_EMAIL_RATE", 100.0, "emails per second for the whole SendGrid account",
                                "float")
    provider_timeout: float = setting("FOREWARN_PROVIDER_TIMEOUT", 10.0, "seconds a provider request may take",
                                      "float")
    dispatch_window: int = setting("FOREWARN_DISPATCH_WINDOW", 100, "notifications in flight per worker; offsets "
                                   "advance per window", "int")
    dispatch_attempts: int = setting("FOREWARN_DISPATCH_ATTEMPTS", 10, "sends (and look-ups) per notification "
                                     "before it is parked", "int")
    retry_delay: float = setting("FOREWARN_RETRY_DELAY", 60.0, "a parked notification is tried again this many "
                                 "seconds after parking", "float")
    sent_retention: float = setting("FOREWARN_SENT_RETENTION", 2 * 86_400.0, "seconds the dispatcher remembers a "
                                    "sent notification id", "float")
    webhook_public_url: str | None = setting("FOREWARN_WEBHOOK_PUBLIC_URL", None, "where Twilio and SendGrid reach "
                                             "the receiver, e.g. https://hooks.example.nl", "optional", shown="unset")
    unsubscribe_secret: str | None = setting("FOREWARN_UNSUBSCRIBE_SECRET", None, "signs the one-click unsubscribe "
                                             "links (secret; the same for workers and the receiver); needed when a "
                                             "rule's emails carry List-Unsubscribe", "optional", secret=True,
                                             shown="unset")
    unsubscribe_mailto: str | None = setting("FOREWARN_UNSUBSCRIBE_MAILTO", None, "address of the mailto "
                                             "List-Unsubscribe (default unsubscribe@ the SENDGRID_FROM domain)",
                                             "optional", shown="unset")
    unsubscribe_days: float = setting("FOREWARN_UNSUBSCRIBE_DAYS", 90.0, "days an unsubscribe link keeps working",
                                      "float")
    webhook_host: str = setting("FOREWARN_WEBHOOK_HOST", "127.0.0.1", "address the receiver listens on")
    webhook_port: int = setting("FOREWARN_WEBHOOK_PORT", 8088, "port the receiver listens on", "int")
    webhook_max_age: float = setting("FOREWARN_WEBHOOK_MAX_AGE", 300.0, "older signed receipts are refused as "
                                     "stale (s)", "float")
    webhook_insecure_local: bool = setting("FOREWARN_WEBHOOK_INSECURE_LOCAL", False, "1: run the receiver without "
                                           "a public URL, on loopback only, Twilio signatures checked against "
                                           "that address (development)", "switch", shown="0")
    console_db: Path = setting("FOREWARN_CONSOLE_DB", Path("console.sqlite3"), "the console's activity store "
                               "(SQLite); rebuilt from the topics when it is gone", "path")
    console_retention_days: float = setting("FOREWARN_CONSOLE_RETENTION_DAYS", 90.0, "days the console keeps "
                                            "activity", "float")
    console_host: str = setting("FOREWARN_CONSOLE_HOST", "127.0.0.1", "address the console listens on; anything "
                                "but loopback needs FOREWARN_CONSOLE_TOKEN")
    console_port: int = setting("FOREWARN_CONSOLE_PORT", 8089, "port the console listens on", "int")
    console_token: str | None = setting("FOREWARN_CONSOLE_TOKEN", None, "the console's access token (secret)",
                                        "optional", secret=True, shown="unset")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The settings ``environ`` (default: ``os.environ``) gives; raises ConfigError on a bad value."""
        environ = os.environ if environ is None else environ
        return cls(topics=Topics.from_env(environ), kafka_security=KafkaSecurity.from_env(environ),
                   **_from(cls, environ))


def declared() -> list[tuple[str, str, str]]:
    """(variable, default as shown, help) for every setting, topics last."""
    rows = []
    for cls in (Settings, KafkaSecurity, Topics):
        for spec in fields(cls):
            if "env" not in spec.metadata:
                continue
            meta = spec.metadata
            default = spec.default if spec.default is not MISSING else spec.default_factory()
            shown = meta["shown"] or ("1" if default is True else str(default))
            rows.append((meta["env"], shown, meta["help"]))
    return rows


def settings_help(names: Iterable[str] | None = None) -> str:
    """The settings named (default: every one), one per line, for a command's ``--help``."""
    wanted = None if names is None else set(names)
    unknown = (wanted or set()) - {env for env, _, _ in declared()}
    if unknown:
        raise ValueError(f"no such settings: {', '.join(sorted(unknown))}")
    return "\n".join(f"{env} (default {shown}): {help}" for env, shown, help in declared()
                     if wanted is None or env in wanted)


def settings_table_markdown() -> str:
    """The README's settings table."""
    lines = ["| variable | default | |", "| --- | --- | --- |"]
    lines += [f"| `{env}` | `{shown}` | {help} |" for env, shown, help in declared()]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m streams.settings --markdown
    print(settings_table_markdown() if "--markdown" in sys.argv else settings_help())
