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
    log_level: str = "info"
    clock: str = "wall"
    event_lateness: float = 3600.0
    event_idle: float = 3.0

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
            log_level=_env("FOREWARN_LOG_LEVEL", cls.log_level),
            clock=_env("FOREWARN_CLOCK", cls.clock),
            event_lateness=float(_env("FOREWARN_EVENT_LATENESS", str(cls.event_lateness))),
            event_idle=float(_env("FOREWARN_EVENT_IDLE", str(cls.event_idle))),
        )
