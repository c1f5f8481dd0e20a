"""Waiting for SIGINT or SIGTERM, for the commands that serve until stopped (webhooks, console)."""

from __future__ import annotations

import asyncio
import signal


async def until_stopped() -> None:
    """Return when the process is asked to stop."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
