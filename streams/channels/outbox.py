"""The offline channel: every message becomes a line in ``notifications.jsonl``.

Emails also get an ``.eml`` file under ``email/`` that any mail client opens.
Used when no provider credentials are set, so the demo needs no accounts. A
notification id already in the file is not written twice: re-delivery after a
crash does not double a message here. A write that fails (a full disk, a
read-only folder) is a transient channel error: the courier retries, parks and
tries again later; the line is written whole or not at all.
"""

from __future__ import annotations

import logging
import os
import stat
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import orjson

from streams.channels.base import Channel, Handover
from streams.errors import ChannelRejected, ChannelUnavailable
from streams.core.events import Schemas, default_schemas

log = logging.getLogger(__name__)


# Headers folded, never turned into encoded words: a List-Unsubscribe URL longer than a line must stay a URL.
EML_POLICY = policy.default.clone(max_line_length=998)


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

    def _known_ids(self) -> set[str]:
        if not self.path.is_file():  # absent, or a device standing in for a full disk: nothing written yet
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
            try:
                self._write(notification)
            except OSError as exc:  # a full disk, a read-only or removed folder: it may come back
                raise ChannelUnavailable(f"outbox {self.directory} not writable: {exc.strerror or exc}") from None
            self._written.add(notification["id"])
        return Handover(self.provider, notification["id"])

    def _write(self, notification: dict[str, Any]) -> None:
        eml = self._write_eml(notification) if notification["channel"] == "email" else None
        try:
            self._append(orjson.dumps(notification) + b"\n")
        except OSError:
            if eml is not None:  # the line is what counts as sent: no message file without it
                eml.unlink(missing_ok=True)
            raise

    def _append(self, line: bytes) -> None:
        """Add ``line`` whole or not at all: what a failed write left is cut off again.

        The file is opened for each line, so that a folder mounted again or a file
        moved aside while the disk was full is written where it is now.
        """
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # an unbuffered write may take only part of it before the disk is full
                    view = view[os.write(fd, view):]
            except OSError:
                self._cut_back(fd, size)
                raise
        finally:
            os.close(fd)

    def _cut_back(self, fd: int, size: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return  # a device or pipe keeps nothing to cut
        try:
            os.ftruncate(fd, size)
        except OSError:
            log.warning("could not cut a half-written line off %s", self.path)

    def _write_eml(self, notification: dict[str, Any]) -> Path:
        message = EmailMessage(policy=EML_POLICY)
        message["Message-ID"] = f"<{notification['id']}@forewarn.example>"
        message["From"] = self.sender
        message["To"] = notification["to"]
        message["Subject"] = notification["subject"] or ""
        message["Content-Language"] = notification["locale"]
        for name, value in (notification.get("unsubscribe") or {}).items():  # List-Unsubscribe, as SendGrid gets it
            message[name] = value
        message.set_content(notification["body"])
        if notification.get("html"):
            message.add_alternative(notification["html"], subtype="html")
        path = self.directory / "email" / f"{notification['id']}.eml"
        partial = path.with_suffix(".eml.part")
        try:  # renamed into place whole, so a mail client never opens half a message
            partial.write_bytes(bytes(message))
            partial.replace(path)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        return path

    async def close(self) -> None:
        """Nothing stays open between messages."""
