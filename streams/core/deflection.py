"""Did telling customers first spare them a call? Contacts with customer service of those told and not told.

Pure: the caller says who was told (``Told``: a notification), who was affected
but held back (``NotTold``: no consent, a blip cancelled by its resolution, a
night message deferred past the event's end, ...) and who contacted customer
service (``Contact``, from ``support.contacted`` events); ``deflection`` counts,
per rule, how many of each group contacted support about the same thing, with
Wilson score intervals.

The unit is a (customer, subject) pair of one rule; the subject is what the
message is about, the notification's key: an outage id or an order id. A pair
both told and not told (an SMS held back, the email sent; a night deferral sent
in the morning) counts as told. A contact counts for a pair when

- it is about the same thing: its outage_id or order_id is the subject, or, when
  it carries no id, its topic is of the rule's kind (outage rules: ``outage``;
  order rules: ``order`` or ``delivery``), and
- it comes at or after the first time the customer was affected (the earliest
  ``at`` of the pair's Told and NotTold records) and no more than ``within`` later.

The comparison is observational: who is not told is not chosen at random
(blips are short, night outages are at night), so a difference is a hint, not
a measured effect.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval
TOPICS_OF_KIND = {"outage": frozenset({"outage"}), "order": frozenset({"order", "delivery"})}


@dataclass(frozen=True)
class Told:
    """A notification: ``subject`` is its key (an outage id, an order id); ``at`` when the customer was affected."""

    rule: str
    customer_id: str
    subject: str
    at: datetime


@dataclass(frozen=True)
class NotTold:
    """Affected but held back, and why (a suppression's reason)."""

    rule: str
    customer_id: str
    subject: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class Contact:
    """A customer contacted support about ``topic``; ``subject`` the outage or order id the agent linked, if any."""

    customer_id: str
    topic: str
    subject: str | None
    at: datetime


@dataclass(frozen=True)
class DeflectionRow:
    """One rule: (customer, subject) pairs told and not told, how many of each contacted support, and the shares.

    A share of a group of none is 0.0 with the interval (0.0, 1.0): nothing is known. ``difference`` is
    ``not_told_share - told_share`` (positive: those told called less), NaN when either group is empty.
    """

    rule: str
    told: int
    told_called: int
    not_told: int
    not_told_called: int
    told_share: float
    not_told_share: float
    told_interval: tuple[float, float]
    not_told_interval: tuple[float, float]
    difference: float


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` in ``n`` (95 % by default); (0.0, 1.0) for n = 0."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes in {n} trials")
    share = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (share + z2 / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / denominator
    # At 0 or n successes one end is exactly 0 or 1; rounding must not put it a hair outside.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def kind_of(rule: str) -> str | None:
    """A rule's kind from its id, when no kinds are given: ``outage-started`` is an outage rule."""
    family = rule.split("-", 1)[0]
    return family if family in TOPICS_OF_KIND else None


def deflection(told: Iterable[Told], not_told: Iterable[NotTold], contacts: Iterable[Contact],
               within: timedelta = timedelta(days=3),
               kinds: Mapping[str, str | None] | None = None) -> list[DeflectionRow]:
    """Per rule (sorted by id), the pairs told and not told and how many of each contacted support; see the module.

    ``kinds``: each rule's kind (``outage`` or ``order``: the family of the events it listens to), for
    contacts without an id; a rule not in it has the kind of its id's first word (``kind_of``).
    """
    first: dict[tuple[str, str, str], datetime] = {}
    was_told: set[tuple[str, str, str]] = set()
    for record in (*told, *not_told):
        pair = (record.rule, record.customer_id, record.subject)
        if pair not in first or record.at < first[pair]:
            first[pair] = record.at
        if isinstance(record, Told):
            was_told.add(pair)
    by_customer: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts:
        by_customer[contact.customer_id].append(contact)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # told, told called, not told, called
    for pair, since in first.items():
        rule, customer_id, subject = pair
        kind = kinds.get(rule) if kinds is not None and rule in kinds else kind_of(rule)
        topics = TOPICS_OF_KIND.get(kind or "", frozenset())
        called = any(since <= c.at <= since + within and (c.subject == subject if c.subject is not None
                                                          else c.topic in topics)
                     for c in by_customer.get(customer_id, ()))
        tally = counts[rule]
        group = 0 if pair in was_told else 2
        tally[group] += 1
        tally[group + 1] += called
    return [_row(rule, *counts[rule]) for rule in sorted(counts)]


def _row(rule: str, told: int, told_called: int, not_told: int, not_told_called: int) -> DeflectionRow:
    told_share = told_called / told if told else 0.0
    not_told_share = not_told_called / not_told if not_told else 0.0
    difference = not_told_share - told_share if told and not_told else math.nan
    return DeflectionRow(rule, told, told_called, not_told, not_told_called, told_share, not_told_share,
                         wilson(told_called, told), wilson(not_told_called, not_told), difference)
