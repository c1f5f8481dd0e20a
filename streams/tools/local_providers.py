"""Twilio and SendGrid on this machine: the imitation plus the webhook receiver, for the demo and tests.

    with LocalProviders(settings, bootstrap) as local:
        WorkerProcess({**base_env, **local.env}, log).start()
        ...
        local.imitation.accepted   # every message the "providers" took

Both run on one event loop in a background thread. The receiver produces the
receipts to ``bootstrap``; the imitation posts its signed callbacks to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

from streams.tools.imitation import Imitation
from streams.settings import Settings
from streams.channels.receipts import SENDGRID_PATH, Receiver


class LocalProviders:
    def __init__(self, settings: Settings, bootstrap: str, **imitation: Any):
        self.imitation = Imitation(**imitation)
        self.receiver = Receiver(dataclasses.replace(
            settings, bootstrap_servers=bootstrap, twilio_auth_token=self.imitation.auth_token,
            sendgrid_webhook_public_key=self.imitation.public_key))
        self.env: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-providers", daemon=True)

    def _run(self, coroutine, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> "LocalProviders":
        self._thread.start()
        try:
            self._run(self.imitation.start())
            self._run(self.receiver.start(port=0))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.imitation.event_webhook_url = f"{self.receiver.url}{SENDGRID_PATH}"
        # The worker's channels: pointed at the imitation, status callbacks and unsubscribe links to the receiver.
        self.env = {**self.imitation.env(), "FOREWARN_WEBHOOK_PUBLIC_URL": str(self.receiver.url)}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for stop in (self.receiver.stop, self.imitation.stop):
            try:
                self._run(stop(), 10)
            except Exception:  # noqa: BLE001  stopping what may not have started
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
