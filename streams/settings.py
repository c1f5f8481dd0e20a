"""One settings object, read from the environment.

Secrets (provider credentials) are only ever read from the environment; nothing
here is written back to a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SOURCE_TOPICS = ("orders", "carts", "outages", "customers")
TOPIC_FOR_EVENT = {"order": "orders", "cart": "carts", "outage": "outages", "customer": "customers"}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _compression(name: str) -> str | None:
    return None if name.lower() == "none" else name


def _path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


@dataclass(frozen=True)
class Topics:
    orders: str = "orders"
    carts: str = "carts"
    outages: str = "outages"
    customers: str = "customers"
    events: str = "forewarn-events"
    due: str = "forewarn-due"
    notifications: str = "notifications"
    suppressed: str = "suppressed"
    deliveries: str = "deliveries"
    deadletter: str = "deadletter"
    retry: str = "notifications.retry"  # notifications parked after the dispatcher's retry budget
    optouts: str = "optouts"  # {customer_id, channel, reason, at}: consent withdrawn at the provider
    fallbacks: str = "fallbacks"  # {notification_id, customer_id, rule, failed_channel, reason}

    @classmethod
    def from_env(cls) -> "Topics":
        return cls(**{
            name: _env(f"FOREWARN_TOPIC_{name.upper()}", spec.default)
            for name, spec in cls.__dataclass_fields__.items()
        })

    def source(self) -> tuple[str, ...]:
        return (self.orders, self.carts, self.outages, self.customers)

    def for_event_type(self, event_type: str) -> str:
        return getattr(self, TOPIC_FOR_EVENT[event_type.split(".", 1)[0]])

    def all(self) -> tuple[str, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = None
    app_id: str = "forewarn"
    partitions: int = 4
    topics: Topics = field(default_factory=Topics)
    rules_file: Path = ROOT / "config" / "rules.yaml"
    template_dir: Path = ROOT / "templates"
    schema_dir: Path = ROOT / "schemas"
    outbox_dir: Path = Path("outbox")
    store: str = "memory://"
    metrics_port: int = 9108
    metrics_address: str = "127.0.0.1"
    brand: str = "Forewarn"
    status_url: str = "https://status.example.nl"
    session_timeout: float = 10.0
    fetch_max_wait_ms: int = 100
    compression: str | None = "lz4"
    log_level: str = "info"
    clock: str = "wall"
    event_lateness: float = 3600.0
    event_idle: float = 3.0
    producer_batch_bytes: int = 1_000_000  # under the 1 MiB a Kafka broker takes by default
    dispatch: bool = True  # false: this worker decides but does not send (separate dispatch workers)
    fanout_limit: float = 3600.0  # seconds; a longer estimated fan-out is flagged (Twilio drops after 10 h queued)
    # Providers. Credentials come only from the environment and never show in a repr.
    twilio_account_sid: str | None = field(default=None, repr=False)
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = None  # another host for the Twilio API: the imitation
    sendgrid_api_key: str | None = field(default=None, repr=False)
    sendgrid_from: str | None = None
    sendgrid_base_url: str | None = None
    sendgrid_webhook_public_key: str | None = None  # Event Webhook verification key (base64 DER)
    sms_rate: float = 1.0  # SMS segments per second for the whole Twilio account, shared by the workers
    email_rate: float = 100.0  # emails per second for the whole SendGrid account
    provider_timeout: float = 10.0
    dispatch_window: int = 100  # notifications in flight per worker; offsets advance per window
    dispatch_attempts: int = 10  # sends (and look-ups) per notification before it is parked
    retry_delay: float = 60.0  # a parked notification is tried again this long after parking
    sent_retention: float = 2 * 86_400.0  # seconds the dispatcher remembers a sent notification id
    webhook_public_url: str | None = None  # where Twilio and SendGrid reach the receiver, e.g. https://hooks.example.nl
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8088
    webhook_max_age: float = 300.0  # older signed receipts are refused as stale

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            app_id=_env("FOREWARN_APP_ID", cls.app_id),
            partitions=int(_env("FOREWARN_PARTITIONS", str(cls.partitions))),
            topics=Topics.from_env(),
            rules_file=_path("FOREWARN_RULES", cls.rules_file),
            template_dir=_path("FOREWARN_TEMPLATES", cls.template_dir),
            schema_dir=_path("FOREWARN_SCHEMAS", cls.schema_dir),
            outbox_dir=_path("FOREWARN_OUTBOX", cls.outbox_dir),
            store=_env("FOREWARN_STORE", cls.store),
            metrics_port=int(_env("FOREWARN_METRICS_PORT", str(cls.metrics_port))),
            metrics_address=_env("FOREWARN_METRICS_ADDRESS", cls.metrics_address),
            brand=_env("FOREWARN_BRAND", cls.brand),
            status_url=_env("FOREWARN_STATUS_URL", cls.status_url),
            session_timeout=float(_env("FOREWARN_SESSION_TIMEOUT", str(cls.session_timeout))),
            fetch_max_wait_ms=int(_env("FOREWARN_FETCH_MAX_WAIT_MS", str(cls.fetch_max_wait_ms))),
            compression=_compression(_env("FOREWARN_COMPRESSION", cls.compression or "none")),
            log_level=_env("FOREWARN_LOG_LEVEL", cls.log_level),
            clock=_env("FOREWARN_CLOCK", cls.clock),
            event_lateness=float(_env("FOREWARN_EVENT_LATENESS", str(cls.event_lateness))),
            event_idle=float(_env("FOREWARN_EVENT_IDLE", str(cls.event_idle))),
            producer_batch_bytes=int(_env("FOREWARN_PRODUCER_BATCH_BYTES", str(cls.producer_batch_bytes))),
            dispatch=_env("FOREWARN_DISPATCH", "1") != "0",
            fanout_limit=float(_env("FOREWARN_FANOUT_LIMIT", str(cls.fanout_limit))),
            twilio_account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
            twilio_from=os.environ.get("TWILIO_FROM") or None,
            twilio_messaging_service_sid=os.environ.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            twilio_base_url=os.environ.get("FOREWARN_TWILIO_BASE_URL") or None,
            sendgrid_api_key=os.environ.get("SENDGRID_API_KEY") or None,
            sendgrid_from=os.environ.get("SENDGRID_FROM") or None,
            sendgrid_base_url=os.environ.get("FOREWARN_SENDGRID_BASE_URL") or None,
            sendgrid_webhook_public_key=os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
            sms_rate=float(_env("FOREWARN_SMS_RATE", str(cls.sms_rate))),
            email_rate=float(_env("FOREWARN_EMAIL_RATE", str(cls.email_rate))),
            provider_timeout=float(_env("FOREWARN_PROVIDER_TIMEOUT", str(cls.provider_timeout))),
            dispatch_window=int(_env("FOREWARN_DISPATCH_WINDOW", str(cls.dispatch_window))),
            dispatch_attempts=int(_env("FOREWARN_DISPATCH_ATTEMPTS", str(cls.dispatch_attempts))),
            retry_delay=float(_env("FOREWARN_RETRY_DELAY", str(cls.retry_delay))),
            sent_retention=float(_env("FOREWARN_SENT_RETENTION", str(cls.sent_retention))),
            webhook_public_url=os.environ.get("FOREWARN_WEBHOOK_PUBLIC_URL") or None,
            webhook_host=_env("FOREWARN_WEBHOOK_HOST", cls.webhook_host),
            webhook_port=int(_env("FOREWARN_WEBHOOK_PORT", str(cls.webhook_port))),
            webhook_max_age=float(_env("FOREWARN_WEBHOOK_MAX_AGE", str(cls.webhook_max_age))),
        )
