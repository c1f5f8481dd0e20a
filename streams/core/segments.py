"""How many SMS segments a text costs.

GSM 03.38 / 3GPP TS 23.038: a text made only of characters from the GSM 7-bit
default alphabet is sent as septets (160 per single SMS, 153 per part of a
concatenated one, the rest of each part being the UDH); characters from the
extension table cost two septets (escape + character). Any other character
forces UCS-2 for the whole message: 70 UTF-16 code units per single SMS, 67 per
part. An escape pair or a surrogate pair is never split across two parts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "SmsSegments", "count_segments", "forcing_character"]

# The default alphabet, in code-point order 0x00..0x7F (0x1B, the escape, omitted).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ" "ÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Reachable through the escape; each costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsSegments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7, escapes included) or UTF-16 code units (UCS-2)
    segments: int
    chars: int  # code points


def _gsm7_cost(ch: str) -> int:
    if ch in GSM7_BASIC:
        return 1
    if ch in GSM7_EXTENSION:
        return 2
    return 0


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _parts(text: str, cost, size: int) -> int:
    """Greedy packing into parts of ``size`` units without splitting a character."""
    parts, used = 1, 0
    for ch in text:
        c = cost(ch)
        if used + c > size:
            parts += 1
            used = 0
        used += c
    return parts


def count_segments(text: str) -> SmsSegments:
    """Encoding, units and segments of ``text``; an empty text still bills one segment."""
    present = set(text)
    if present <= _GSM7_ALL:
        septets = len(text) + sum(text.count(ch) for ch in present & GSM7_EXTENSION)
        if septets <= GSM7_SINGLE:
            return SmsSegments("GSM-7", septets, 1, len(text))
        return SmsSegments("GSM-7", septets, _parts(text, _gsm7_cost, GSM7_PART), len(text))

    units = len(text.encode("utf-16-le")) // 2
    if units <= UCS2_SINGLE:
        return SmsSegments("UCS-2", units, 1, len(text))
    return SmsSegments("UCS-2", units, _parts(text, _ucs2_cost, UCS2_PART), len(text))


def forcing_character(text: str) -> str | None:
    """The first character of ``text`` outside the GSM 7-bit alphabet: the one that makes it UCS-2."""
    for ch in text:
        if ch not in _GSM7_ALL:
            return ch
    return None
