"""The console: what each customer got and why, each outage's story, the rules per day, the dead letters.

aiohttp with pages rendered on the server from ``pages/*.html.j2``; no front-end build. It reads
only the activity store (``store.py``), which ``feed.py`` keeps up to date from the topics in a
thread beside it. Phone numbers and addresses are masked unless the viewer asks to reveal them,
and every reveal is logged (who, which customer; never the data). On anything but loopback the
console needs FOREWARN_CONSOLE_TOKEN.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from streams.console.charts import bars, steps
from streams.console.store import ActivityStore, DeadLetterEntry
from streams.core.cost import Costs
from streams.core.render import DEFAULT_TZ, zone
from streams.errors import ConfigError
from streams.privacy import mask
from streams.settings import Settings

log = logging.getLogger("forewarn.console")
COOKIE = "forewarn_console"
PAGES = Path(__file__).parent / "pages"


@dataclass(frozen=True)
class Redrive:
    """What a re-drive button does: ``check`` says why not (None: it can succeed), ``send`` puts it back."""

    check: Callable[[DeadLetterEntry], str | None]
    send: Callable[[DeadLetterEntry], None]


def require_token(settings: Settings) -> None:
    """Anything but loopback needs a token: the console shows what customers were told."""
    if not _loopback(settings.console_host) and not settings.console_token:
        raise ConfigError(f"FOREWARN_CONSOLE_HOST={settings.console_host} is not loopback: set "
                          "FOREWARN_CONSOLE_TOKEN, or keep the console on 127.0.0.1")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ConsoleApp:
    """The pages, over one store; ``app()`` is the aiohttp application."""

    def __init__(self, store: ActivityStore, settings: Settings, redrive: Redrive | None = None,
                 costs: Costs | None = None):
        self.store = store
        self.token = settings.console_token
        self.redrive = redrive
        self.costs = costs
        self.env = Environment(loader=FileSystemLoader(PAGES), autoescape=select_autoescape(default=True))
        self.env.filters["when"] = _when

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/search", self.search)
        app.router.add_get("/customer/{customer_id}", self.customer)
        app.router.add_get("/outage/{outage_id}", self.outage)
        app.router.add_get("/rules", self.rules)
        app.router.add_get("/deadletters", self.dead_letters)
        app.router.add_post("/deadletters/redrive", self.redrive_one)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """With a token set: the token in the query (then kept in a cookie), a bearer header or the cookie."""
        if self.token is None:
            return await handler(request)
        offered = (request.query.get("token") or request.cookies.get(COOKIE)
                   or request.headers.get("Authorization", "").removeprefix("Bearer "))
        if not offered or not hmac.compare_digest(offered, self.token):
            return web.Response(status=401, text="the console needs its token: ?token=...")
        response = await handler(request)
        if request.query.get("token"):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    def _page(self, name: str, **context: Any) -> web.Response:
        html = self.env.get_template(f"{name}.html.j2").render(**context)
        return web.Response(text=html, content_type="text/html")

    async def index(self, request: web.Request) -> web.Response:
        return self._page("index", dead=self.store.dead_letter_count())

    async def search(self, request: web.Request) -> web.Response:
        text = request.query.get("q", "").strip()
        hits = self.store.search(text) if text else []
        if len(hits) == 1 and hits[0].customer_id and hits[0].kind != "outage":
            raise web.HTTPFound(f"/customer/{hits[0].customer_id}")
        if len(hits) == 1 and hits[0].outage_id:
            raise web.HTTPFound(f"/outage/{hits[0].outage_id}")
        return self._page("search", q=text, hits=[_masked_hit(hit) for hit in hits])

    async def customer(self, request: web.Request) -> web.Response:
        customer_id = request.match_info["customer_id"]
        reveal = request.query.get("reveal") == "1"
        if reveal:
            log.warning("console: contact data of customer %s revealed to %s", customer_id, _viewer(request))
        entries = self.store.customer_timeline(customer_id)
        shown = [_contact_shown(entry, reveal) for entry in entries]
        return self._page("customer", customer_id=customer_id, entries=shown, reveal=reveal,
                          pending=self.store.pending(customer_id))

    async def outage(self, request: web.Request) -> web.Response:
        story = self.store.outage_story(request.match_info["outage_id"])
        if story is None:
            raise web.HTTPNotFound(text="no such outage in the store")
        chart = steps(story.told_over_time)
        return self._page("outage", story=story, chart=chart,
                          events=[_contact_shown(e, False) for e in story.events])

    async def rules(self, request: web.Request) -> web.Response:
        days = self.store.rule_days()
        by_rule: dict[str, list] = {}
        for day in days:
            by_rule.setdefault(day.rule, []).append(day)
        charts = {rule: bars([(d.day.isoformat(), sum(d.sent.values()), sum(d.held.values())) for d in rows])
                  for rule, rows in sorted(by_rule.items())}
        cost = {rule: self._cost(rows) for rule, rows in by_rule.items()}
        return self._page("rules", by_rule=dict(sorted(by_rule.items())), charts=charts, cost=cost)

    def _cost(self, rows: list) -> str | None:
        """Email per message, SMS per segment at the default price (the store keeps no destinations)."""
        if self.costs is None:
            return None
        segments = sum(d.sms_segments for d in rows)
        emails = sum(d.sent.get("email", 0) for d in rows)
        return self.costs.shown(self.costs.sms_segment(None) * segments + self.costs.email * emails)

    async def dead_letters(self, request: web.Request) -> web.Response:
        entries = self.store.dead_letters()
        return self._page("deadletters", entries=entries, message=request.query.get("message"),
                          redrive=self.redrive is not None, original=_original)

    async def redrive_one(self, request: web.Request) -> web.Response:
        form = await request.post()
        who = str(form.get("who", "")).strip()
        try:
            where = (str(form["topic"]), int(str(form["partition"])), int(str(form["offset"])))
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="topic, partition and offset are needed")
        entry = self.store.dead_letter(*where)
        message = self._redriven(entry, who, request)
        raise web.HTTPSeeOther(f"/deadletters?message={message}")

    def _redriven(self, entry: DeadLetterEntry | None, who: str, request: web.Request) -> str:
        if entry is None:
            return "no such dead letter"
        if self.redrive is None:
            return "re-drive needs the console to reach Kafka"
        if not who:
            return "say who you are to re-drive it"
        if entry.redriven_by:
            return f"already re-driven by {entry.redriven_by}"
        why_not = self.redrive.check(entry)
        if why_not:
            return f"not re-driven: {why_not}"
        self.redrive.send(entry)
        self.store.mark_redriven(entry.topic, entry.partition, entry.offset, who, datetime.now(timezone.utc))
        log.warning("console: dead letter %s/%d/%d re-driven by %s (%s)", entry.topic, entry.partition,
                    entry.offset, mask(who), _viewer(request))
        return f"re-driven to {entry.topic}"


def _viewer(request: web.Request) -> str:
    return f"{request.remote or 'unknown'}" + (" (token)" if request.cookies.get(COOKIE) else "")


def _when(moment: datetime | None) -> str:
    """In the zone the customers live in by default (the shop's, the ISP's), with its abbreviation."""
    return moment.astimezone(zone(DEFAULT_TZ)).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else ""


@dataclass(frozen=True)
class ShownEntry:
    """A timeline entry as the page shows it: addresses masked unless revealed."""

    entry: Any
    to: str | None
    text: str | None


def _contact_shown(entry: Any, reveal: bool) -> ShownEntry:
    if reveal:
        return ShownEntry(entry, entry.to, entry.text)
    return ShownEntry(entry, mask(entry.to) if entry.to else None, mask(entry.text) if entry.text else None)


def _masked_hit(hit: Any) -> Any:
    return type(hit)(hit.kind, mask(hit.value), hit.customer_id, hit.outage_id)


def _original(entry: DeadLetterEntry, limit: int = 600) -> str:
    """The original bytes as text, masked and cut: a dead letter may hold anything."""
    text = entry.original.decode("utf-8", "replace")
    return mask(text if len(text) <= limit else text[:limit] + "…")
