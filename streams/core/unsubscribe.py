"""One-click unsubscribe links (RFC 8058, RFC 2369): a signed, expiring token per customer and scope.

The token is made when the message is rendered, from the decision's own time,
so the simulator and the worker write the same link for the same input. It
names the customer, what the link unsubscribes from (a ``Scope``), the
customer's language (for the page) and when it stops working; an HMAC over
all of it (itsdangerous) keeps anyone from making one up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from itsdangerous import BadSignature, URLSafeSerializer

from streams.core.consent import Scope
from streams.core.rules import Rule, RuleSet
from streams.errors import ConfigError, UnsubscribeRefused
from streams.settings import Settings

SALT = "forewarn-unsubscribe"
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class Ticket:
    """What a valid token says."""

    customer_id: str
    scope: Scope
    locale: str
    expires: datetime


@dataclass(frozen=True)
class Headers:
    """The link as a template and an email's headers need it."""

    url: str
    mailto: str

    def as_email_headers(self) -> dict[str, str]:
        return {"List-Unsubscribe": f"<{self.url}>, <{self.mailto}>", "List-Unsubscribe-Post": ONE_CLICK}


class UnsubscribeLinks:
    """Makes and reads the tokens; ``base_url`` is where the receiver serves ``/unsubscribe/<token>``."""

    path = "/unsubscribe/"

    def __init__(self, secret: str, base_url: str, mailto: str, valid: timedelta):
        self._serializer = URLSafeSerializer(secret, salt=SALT)
        self.base_url = base_url.rstrip("/")
        self.mailto = mailto
        self.valid = valid

    def token(self, customer_id: str, scope: Scope, locale: str, now: datetime) -> str:
        expires = int((now + self.valid).timestamp())
        return self._serializer.dumps([customer_id, scope.channel, scope.category, scope.rule, locale, expires])

    def headers(self, customer_id: str, scope: Scope, locale: str, now: datetime) -> Headers:
        token = self.token(customer_id, scope, locale, now)
        return Headers(f"{self.base_url}{self.path}{token}", f"mailto:{self.mailto}?subject=unsubscribe%20{token}")

    def read(self, token: str, now: datetime | None = None) -> Ticket:
        """The ticket a token holds; raises UnsubscribeRefused if it is forged, malformed or expired."""
        try:
            customer_id, channel, category, rule, locale, expires = self._serializer.loads(token)
            moment = datetime.fromtimestamp(int(expires), timezone.utc)
        except (BadSignature, ValueError, TypeError, OverflowError):
            raise UnsubscribeRefused("not a valid unsubscribe link") from None
        ticket = Ticket(str(customer_id), Scope(channel, category, rule), str(locale), moment)
        if moment < (now or datetime.now(timezone.utc)):
            raise UnsubscribeRefused("this unsubscribe link has expired", ticket)
        return ticket


def links_for(settings: Settings) -> UnsubscribeLinks | None:
    """The links the settings make, or None without ``FOREWARN_UNSUBSCRIBE_SECRET``."""
    if not settings.unsubscribe_secret:
        return None
    base = settings.webhook_public_url or f"http://{settings.webhook_host}:{settings.webhook_port}"
    mailto = settings.unsubscribe_mailto
    if not mailto:
        domain = (settings.sendgrid_from or "").rpartition("@")[2] or "forewarn.example"
        mailto = f"unsubscribe@{domain}"
    return UnsubscribeLinks(settings.unsubscribe_secret, base, mailto, timedelta(days=settings.unsubscribe_days))


def require_links(settings: Settings, rules: RuleSet) -> None:
    """Refuse to start when a rule's emails need an unsubscribe link and nothing can sign one."""
    needing = [r.id for r in rules.rules if r.unsubscribable and "email" in _all_channels(r)]
    if needing and not settings.unsubscribe_secret:
        raise ConfigError(f"FOREWARN_UNSUBSCRIBE_SECRET is not set, and the emails of {', '.join(needing)} must "
                          "carry a signed unsubscribe link: set it to a long random string, the same for the "
                          "workers and the receiver")


def _all_channels(rule: Rule) -> set[str]:
    return {channel for plan in rule.plans() for channel in plan.channels} | set(rule.channels)
