"""What customers tell the receiver directly: an SMS keyword (STOP, START) and the unsubscribe link.

    POST /twilio/inbound       Twilio's signed incoming-message webhook; a message that is only an opt-out
                               keyword opts the number out of SMS, an opt-in keyword back in
    GET  /unsubscribe/<token>  a short page in the customer's language: what stops, what goes on, a button
    POST /unsubscribe/<token>  unsubscribes at once (RFC 8058 one-click: List-Unsubscribe=One-Click)

Each becomes a ``PreferenceChange`` on the ``consent`` topic, where the decide
hop folds it into the customer's preferences. A STOP names a phone number, not
a customer: it goes to every partition, and each answers for its own
customers with that number.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from streams.core.consent import MARKETING, PreferenceChange, Scope, Statement
from streams.core.unsubscribe import Ticket
from streams.privacy import mask_phone

log = logging.getLogger(__name__)

INBOUND_PATH = "/twilio/inbound"
UNSUBSCRIBE_PATH = "/unsubscribe/{token}"
# Twilio's own opt-out and opt-in keywords, and the Dutch ones customers send.
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "AFMELDEN", "UITSCHRIJVEN"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "AANMELDEN"})
_KEYWORD = re.compile(r"[\W_]+")  # "Stop!", " stop. " and "STOP" are the same word; "stop met sms" is not a keyword
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def keyword_change(phone: str, body: str, now: datetime, sid: str | None = None) -> PreferenceChange | None:
    """The change an incoming SMS makes: None unless the whole message is one opt-out or opt-in keyword."""
    word = _KEYWORD.sub("", body).upper()
    if word not in OPT_OUT_WORDS and word not in OPT_IN_WORDS:
        return None
    detail = f"replied {word}" + (f" ({sid})" if sid else "")
    statement = Statement(Scope("sms"), word in OPT_IN_WORDS, now.isoformat(), "sms-stop", detail)
    return PreferenceChange((statement,), phone=phone)


def link_change(ticket: Ticket, now: datetime) -> PreferenceChange:
    statement = Statement(ticket.scope, False, now.isoformat(), "unsubscribe-link", "one-click unsubscribe")
    return PreferenceChange((statement,), customer_id=ticket.customer_id)


@dataclass(frozen=True)
class PageText:
    title: str
    will_stop: str
    stops: str
    keeps: str
    button: str
    done_title: str
    done_body: str
    expired_title: str
    expired_body: str
    invalid_title: str
    invalid_body: str
    marketing: str
    rule: str
    service: str


class UnsubscribePage:
    """The page, in Dutch or English; the words live here, the layout in ``pages/unsubscribe.html.j2``."""

    texts = {
        "nl": PageText(
            title="Afmelden", will_stop="Je ontvangt dan niet meer:", stops="Je ontvangt niet meer:",
            keeps="Je ontvangt wel nog:", button="Afmelden",
            done_title="Je bent afgemeld", done_body="Het kan een paar minuten duren voordat dit overal is verwerkt.",
            expired_title="Deze link is verlopen",
            expired_body="Meld je af via de link in een recentere e-mail, of neem contact met ons op.",
            invalid_title="Deze link werkt niet", invalid_body="Controleer of je de hele link hebt gekopieerd.",
            marketing="aanbiedingen en herinneringen per e-mail, zoals over je winkelwagen",
            rule="e-mails van deze soort ({rule})",
            service="berichten over storingen en over je bestellingen"),
        "en": PageText(
            title="Unsubscribe", will_stop="You will no longer receive:", stops="You will no longer receive:",
            keeps="You will still receive:", button="Unsubscribe",
            done_title="You are unsubscribed", done_body="It may take a few minutes to take effect everywhere.",
            expired_title="This link has expired",
            expired_body="Use the link in a more recent email, or contact us.",
            invalid_title="This link does not work", invalid_body="Check that you copied the whole link.",
            marketing="offers and reminders by email, such as about your shopping cart",
            rule="emails of this kind ({rule})",
            service="messages about outages and about your orders"),
    }

    def __init__(self, brand: str):
        self.brand = brand
        self.env = Environment(loader=FileSystemLoader(Path(__file__).parent / "pages"),
                               autoescape=select_autoescape(default=True))

    def render(self, state: str, ticket: Ticket | None) -> str:
        lang = ticket.locale if ticket is not None and ticket.locale in self.texts else "nl"
        text = self.texts[lang]
        stops = keeps = ""
        if ticket is not None:
            stops = text.marketing if ticket.scope.category == MARKETING else text.rule.format(rule=ticket.scope.rule)
            keeps = text.service
        return self.env.get_template("unsubscribe.html.j2").render(
            lang=lang, t=text, state=state, stops=stops, keeps=keeps, brand=self.brand)


def describe_change(change: PreferenceChange) -> str:
    """For the log: whom a change is about, masked."""
    who = change.customer_id or mask_phone(change.phone or "")
    return f"{who}: " + ", ".join(f"{'yes' if s.allow else 'no'} to {s.scope.describe()} ({s.source})"
                                  for s in change.statements)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
