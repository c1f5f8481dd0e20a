"""The offline channel: every message becomes a line in ``notifications.jsonl``.

Emails also get an ``.eml`` file under ``email/`` that any mail client opens.
Used when no provider credentials are set, so the demo needs no accounts. A
notification id already in the file is not written twice: re-delivery after a
crash does not double a message here.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import orjson

from streams.channels.base import Channel, Handover
from streams.errors import ChannelRejected
from streams.core.events import Schemas, default_schemas


class OutboxChannel(Channel):
    provider: ClassVar[str] = "outbox"
    channels: ClassVar[tuple[str, ...]] = ("sms", "email")
    sender: ClassVar[str] = "noreply@forewarn.example"

    def __init__(self, directory: Path, schemas: Schemas | None = None):
        self.directory = directory
        self.schemas = schemas or default_schemas()
        (directory / "email").mkdir(parents=True, exist_ok=True)
        self.path = directory / "notifications.jsonl"
        self._written = self._known_ids()
        self._file = self.path.open("ab")

    def _known_ids(self) -> set[str]:
        if not self.path.exists():
            return set()
        known = set()
        for line in self.path.read_bytes().splitlines():
            try:
                known.add(orjson.loads(line)["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash; the message will be written again
        return known

    async def send(self, notification: dict[str, Any]) -> Handover:
        problems = self.schemas.problems("notification.json", notification)
        if problems:
            raise ChannelRejected("not a valid notification: " + "; ".join(problems[:3]))
        if notification["id"] not in self._written:
            if notification["channel"] == "email":
                self._write_eml(notification)
            self._file.write(orjson.dumps(notification) + b"\n")
            self._file.flush()
            self._written.add(notification["id"])
        return Handover(self.provider, notification["id"])

    def _write_eml(self, notification: dict[str, Any]) -> None:
        message = EmailMessage()
        message["Message-ID"] = f"<{notification['id']}@forewarn.example>"
        message["From"] = self.sender
        message["To"] = notification["to"]
        message["Subject"] = notification["subject"] or ""
        message["Content-Language"] = notification["locale"]
        message.set_content(notification["body"])
        if notification.get("html"):
            message.add_alternative(notification["html"], subtype="html")
        (self.directory / "email" / f"{notification['id']}.eml").write_bytes(bytes(message))

    async def close(self) -> None:
        self._file.close()
