"""What messages cost: ``defaults.cost`` in the rules file.

SMS are priced per segment by the destination's country prefix (the longest prefix
that matches wins, ``default`` for the rest); email per message. Money is Decimal,
so a week of a million messages adds up to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

DEFAULT_PREFIX = "default"


def billed_units(channel: str, segments: int | None) -> int:
    """What a provider bills a message by: its SMS segments (at least one), or one email."""
    return (segments or 1) if channel == "sms" else 1


@dataclass(frozen=True)
class Costs:
    currency: str
    sms_by_prefix: tuple[tuple[str, Decimal], ...]  # longest prefix first; "" stands for default
    email: Decimal

    @classmethod
    def parse(cls, spec: Any) -> Costs | None:
        """From ``defaults.cost`` as the schema allows it; None when not set."""
        if not spec:
            return None
        prices = [("" if prefix == DEFAULT_PREFIX else str(prefix), Decimal(str(price)))
                  for prefix, price in (spec.get("sms") or {}).items()]
        return cls(currency=spec.get("currency", "EUR"),
                   sms_by_prefix=tuple(sorted(prices, key=lambda p: -len(p[0]))),
                   email=Decimal(str(spec.get("email", 0))))

    def sms_segment(self, phone: str | None) -> Decimal:
        """The price of one segment to ``phone`` (E.164); zero when no prefix and no default match."""
        number = phone or ""
        for prefix, price in self.sms_by_prefix:
            if number.startswith(prefix):
                return price
        return Decimal(0)

    def unit(self, channel: str, address: str | None) -> Decimal:
        """The price of one billed unit: an SMS segment to ``address``, or one email."""
        return self.sms_segment(address) if channel == "sms" else self.email

    def of(self, channel: str, address: str | None, segments: int | None) -> Decimal:
        """What one message costs: SMS by its segments and destination, email per message."""
        return self.unit(channel, address) * billed_units(channel, segments)

    def shown(self, amount: Decimal) -> str:
        return f"{self.currency} {amount.quantize(Decimal('0.01'))}"
