"""How long each SMS template can get: the worst case over the sample records the schemas allow.

For each rule's SMS template and locale, every sample its condition lets through is rendered;
the longest text decides. A text with one character outside the GSM 7-bit alphabet goes as UCS-2
(70 characters a segment instead of 160), so the lint names that character and says whether the
template's own text holds it (``geïnformeerd``) or only the data of a sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from streams.core.render import Renderer
from streams.core.segments import SmsSegments, forcing_character
from streams.errors import TemplateError


@dataclass(frozen=True)
class SmsFit:
    """The worst case of one SMS template in one locale."""

    template: str
    locale: str
    file: str
    segments: SmsSegments
    sample: str  # which sample gave it
    forced_by: str | None = None  # why it is UCS-2, in words
    forcing: str | None = None  # the character that makes it UCS-2

    def describe(self) -> str:
        encoding = self.segments.encoding + (f", forced by {self.forced_by}" if self.forced_by else "")
        return (f"{self.segments.segments} segment(s) at most, {encoding}, "
                f"{self.segments.chars} characters on the {self.sample} sample")


def worst_fit(renderer: Renderer, locale: str, template: str,
              trials: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) -> SmsFit | None:
    """The longest rendering over ``trials`` ((label, event, customer)); None if none renders."""
    worst: tuple[SmsSegments, str, str] | None = None
    for label, event, customer in trials:
        extra = {"outage": event["data"]} if event["type"].startswith("outage.") else None
        try:
            rendered = renderer.render("sms", locale, template, event=event, customer=customer, extra=extra)
        except TemplateError:
            continue  # reported by the render check
        if rendered.segments and (worst is None or _longer(rendered.segments, worst[0])):
            worst = (rendered.segments, label, rendered.body)
    if worst is None:
        return None
    name = renderer.template_name("sms", locale, template, "body")
    segments, label, body = worst
    forced = forcing_character(body)
    return SmsFit(template, locale, str(renderer.template_dir / name), segments, label,
                  _where_forced(renderer, name, forced, label) if forced else None, forced)


def show_forced(renderer: Renderer, locale: str, template: str, body: str, label: str) -> str | None:
    """Why ``body`` (a rendering of this template) is UCS-2, in words; None if it is GSM-7."""
    forced = forcing_character(body)
    name = renderer.template_name("sms", locale, template, "body")
    return _where_forced(renderer, name, forced, label) if forced else None


def _longer(a: SmsSegments, b: SmsSegments) -> bool:
    return (a.segments, a.units) > (b.segments, b.units)


def _where_forced(renderer: Renderer, name: str, char: str, label: str) -> str:
    """'ï' in the template's text (line 3: geïnformeerd), or in the data of a sample."""
    source, _, _ = renderer.env.loader.get_source(renderer.env, name)
    for number, line in enumerate(source.splitlines(), start=1):
        line = re.sub(r"\{#.*?#\}", "", line)  # a comment is not sent
        if char in line:
            word = next(w for w in re.split(r"\s+", line) if char in w)
            return f"{char!r} in the template's text (line {number}: {word})"
    return f"{char!r} in the data ({label} sample)"
