"""What a decision yields: a notification to send, or a suppression saying why not."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Notification:
    id: str
    rule: str
    channel: str
    customer_id: str
    to: str
    locale: str
    subject: str | None
    body: str
    created_at: str
    event_ids: tuple[str, ...]
    html: str | None = None
    template: str | None = None
    tier: str | None = None
    priority: int | None = None
    segments: int | None = None
    encoding: str | None = None
    key: str | None = None
    fallback: tuple[str, ...] | None = None
    category: str | None = None
    unsubscribe: dict[str, str] | None = None  # List-Unsubscribe and List-Unsubscribe-Post, for email

    def to_dict(self) -> dict[str, Any]:
        record = self.__dict__.copy()
        for name in [k for k, v in record.items() if v is None and k not in ("subject", "html")]:
            del record[name]
        record["event_ids"] = list(self.event_ids)
        if self.fallback:
            record["fallback"] = list(self.fallback)
        return record


@dataclass(frozen=True)
class Suppression:
    rule: str
    customer_id: str | None
    reason: str
    event_id: str
    at: str
    channel: str | None = None
    detail: str | None = None
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "customer_id"}


Decision = Notification | Suppression


@functools.lru_cache(maxsize=64)  # one decision asks for the same few ids several times
def notification_id(rule: str, key: str, customer_id: str, channel: str, occurrence: str) -> str:
    """Deterministic, so that a re-delivered event yields the same id and can be recognised."""
    digest = hashlib.sha256(f"{rule}\x1f{key}\x1f{customer_id}\x1f{channel}\x1f{occurrence}".encode())
    return digest.hexdigest()[:32]


def fact_fingerprint(rule: str, key: str, values: list[Any]) -> str:
    """A short hash of what a message says: the same fact from a new event id hashes the same."""
    shown = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(f"{rule}\x1f{key}\x1f{shown}".encode()).hexdigest()[:16]
