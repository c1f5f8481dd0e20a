"""Dispatch throughput against a rate limit: 20,000 messages through the real SDKs (target ratio 0.95-1.0, no 429).

The provider imitation runs in its own process, limiting each account to the
configured rate as a provider would. The courier (the code the dispatch
agent runs, window after window) sends half the messages as SMS through the
twilio SDK, then half as email through the sendgrid SDK, each account
configured at ``--rate``. The rate is measured at the imitation: messages
taken over the time from the first to the last one. Last line: achieved rate /
configured rate.

    .venv/bin/python bench/dispatch.py [--messages 20000] [--rate 500] [--window 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streams.channels.courier import Courier  # noqa: E402
from streams.channels.email_sendgrid import SendGridEmailChannel  # noqa: E402
from streams.channels.sms_twilio import TwilioSmsChannel  # noqa: E402


def notification(i: int, channel: str) -> dict:
    sms = channel == "sms"
    return {"id": f"bench-{i:06d}", "rule": "outage-started", "channel": channel, "customer_id": f"C{i:06d}",
            "to": f"+3161{i:07d}" if sms else f"klant{i}@example.nl", "locale": "nl",
            "subject": None if sms else "Storing in uw buurt",
            "body": f"Forewarn: storing in uw buurt sinds 13:02. Verwacht hersteld rond 18:00. ({i})",
            "created_at": "2026-11-25T13:02:04+01:00", "event_ids": ["evt-1"]}


def stats(url: str) -> dict:
    with urlopen(f"{url}/_imitation/stats", timeout=10) as response:
        return json.loads(response.read())


async def send(channel, kind: str, count: int, offset: int, window: int) -> None:
    courier = Courier({kind: channel})
    notifications = [notification(offset + i, kind) for i in range(count)]
    for start in range(0, count, window):
        outcomes = await courier.deliver_all(notifications[start:start + window])
        bad = [o.delivery for o in outcomes if o.delivery["status"] != "queued"]
        if bad:
            raise SystemExit(f"{len(bad)} not handed over, e.g. {bad[0]}")
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second, per provider account")
    parser.add_argument("--window", type=int, default=500, help="notifications in flight, as FOREWARN_DISPATCH_WINDOW")
    args = parser.parse_args()

    imitation = subprocess.Popen([sys.executable, "-m", "streams.tools.imitation", "--sms-rate", str(args.rate),
                                  "--email-rate", str(args.rate), "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(imitation.stdout.readline())
        url, env = started["url"], started["env"]
        sms = TwilioSmsChannel(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"], sender=env["TWILIO_FROM"],
                               rate=args.rate, base_url=url)
        email = SendGridEmailChannel(env["SENDGRID_API_KEY"], env["SENDGRID_FROM"], rate=args.rate, base_url=url)
        half = args.messages // 2
        wall = time.perf_counter()
        asyncio.run(send(sms, "sms", half, 0, args.window))
        asyncio.run(send(email, "email", args.messages - half, half, args.window))
        wall = time.perf_counter() - wall
        result = stats(url)
    finally:
        imitation.terminate()
        imitation.wait(10)

    taken = throttled = 0
    busy = 0.0
    for provider in ("twilio", "sendgrid"):
        figures = result[provider]
        span = figures["last_at"] - figures["first_at"]
        rate = (figures["accepted"] - 1) / span
        taken += figures["accepted"]
        throttled += figures.get("throttled", 0)
        busy += span
        print(f"{provider:8} {figures['accepted']:6d} messages in {span:6.2f} s: {rate:7.1f}/s "
              f"of {args.rate:.0f}/s (ratio {rate / args.rate:.3f}), 429s: {figures.get('throttled', 0)}")
    ratio = (taken - 2) / busy / args.rate
    print(f"total    {taken:6d} messages, {wall:.1f} s wall clock; 429s: {throttled}")
    print(f"{ratio:.3f}")


if __name__ == "__main__":
    main()
