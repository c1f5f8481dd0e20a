"""The console's answers in the terminal: ``forewarn history``, ``forewarn outage``, ``forewarn deadletter list``."""

from __future__ import annotations

import logging
from typing import Iterable

from rich.console import Console
from rich.table import Table

from streams.console.store import DeadLetterEntry, OutageStory, TimelineEntry
from streams.privacy import mask

log = logging.getLogger("forewarn.console")
WHAT = {"sent": "sent", "held": "held back", "event": "event", "delivery": "delivery", "contact": "contacted support"}
TEXT_SHOWN = 120


def print_timeline(console: Console, entries: list[TimelineEntry], reveal: bool, title: str) -> None:
    if reveal:
        log.warning("contact data revealed in the terminal (%s)", title)
    if not entries:
        console.print(f"{title}: nothing on record", highlight=False)
        return
    table = Table(title=title)
    for column in ("when", "what", "rule", "channel", "to", "message or event", "status or reason"):
        table.add_column(column)
    for entry in entries:
        text = entry.text or entry.event_type or ""
        text = " ".join(text.split())
        to = entry.to or ""
        if not reveal:
            text, to = mask(text), mask(to)
        table.add_row(f"{entry.at:%Y-%m-%d %H:%M}", WHAT.get(entry.kind, entry.kind), entry.rule or "",
                      entry.channel or "", to, _cut(text), _outcome(entry))
    console.print(table)


def _outcome(entry: TimelineEntry) -> str:
    if entry.reason:
        return entry.reason + (f": {entry.detail}" if entry.detail else "")
    return entry.status or ""


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 1] + "…"


def print_outage(console: Console, story: OutageStory) -> None:
    started = f"{story.started:%Y-%m-%d %H:%M}" if story.started else "?"
    resolved = f"resolved {story.resolved:%Y-%m-%d %H:%M}" if story.resolved else "not resolved"
    console.print(f"outage {story.outage_id}: started {started}, {resolved}; {story.updates_sent} update(s) sent, "
                  f"{story.delivery_failures} delivery failure(s)", highlight=False)
    table = Table(title="told, per channel and tier")
    for column in ("channel", "tier", "customers"):
        table.add_column(column)
    for (channel, tier), count in sorted(story.told.items()):
        table.add_row(channel, tier, str(count))
    console.print(table)
    if story.held_back:
        console.print("held back: " + ", ".join(f"{reason} {count}" for reason, count in
                                                sorted(story.held_back.items())), highlight=False)
    for entry in story.events:
        console.print(f"  {entry.at:%Y-%m-%d %H:%M} {entry.event_type or entry.text}", highlight=False)


def print_dead_letters(console: Console, entries: Iterable[DeadLetterEntry]) -> None:
    table = Table(title="dead letters, newest first")
    for column in ("when", "where (for redrive)", "hop", "reason", "re-driven"):
        table.add_column(column)
    shown = 0
    for entry in entries:
        shown += 1
        redriven = f"by {entry.redriven_by}" if entry.redriven_by else ""
        table.add_row(f"{entry.dead_at:%Y-%m-%d %H:%M}", f"{entry.topic}/{entry.partition}/{entry.offset}",
                      entry.hop or "", _cut(mask(entry.reason)), redriven)
    console.print(table if shown else "no dead letters")
