"""Render SMS and e-mail templates in a Jinja2 sandbox.

Templates live in ``<template_dir>/<channel>/<locale>/<template>.<part>.j2``.
Only ``.html.j2`` files are autoescaped; undefined variables are errors
(StrictUndefined), so optional event fields must be tested with ``is defined``
or ``event.data.get(...)``. Every failure - a missing or broken template, an
undefined variable, an unsafe attribute, runaway output - is raised as
:class:`streams.errors.TemplateError` with the template file and, where Jinja
knows it, the line.

Pure module: no Kafka, no I/O beyond reading the template files.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date as _date
from datetime import datetime as _datetime
from datetime import timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from streams.core.segments import SmsSegments, count_segments
from streams.errors import TemplateError

__all__ = ["CHANNEL_PARTS", "Rendered", "Renderer", "babel_locale", "zone"]

log = logging.getLogger(__name__)

CHANNEL_PARTS: dict[str, tuple[str, ...]] = {"sms": ("body",), "email": ("subject", "text", "html")}

MAX_OUTPUT = 100_000  # characters per rendered part
MAX_RANGE = 1_000  # items per range() in a template
MAX_CALLS = 10_000  # function/macro calls per render()
MAX_STEPS = 100_000  # loop iterations per render(): nested loops over small lists must not run for hours
DEFAULT_TZ = "Europe/Amsterdam"
DEFAULT_LOCALE = "nl_NL"
BABEL_LOCALES = {"nl": "nl_NL", "en": "en_GB"}

_calls: ContextVar[list[int] | None] = ContextVar("forewarn_template_calls", default=None)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str | None
    body: str  # the SMS text, or the plain-text part of an e-mail
    html: str | None
    segments: SmsSegments | None  # SMS only


# ---------------------------------------------------------------------------
# Babel and time zones, cached: these are on the hot path.


@lru_cache(maxsize=64)
def babel_locale(locale: str | None) -> Locale:
    """Babel Locale for a customer locale ("nl", "en", "nl-BE", ...); unknown → nl_NL."""
    key = BABEL_LOCALES.get((locale or "").lower(), locale or DEFAULT_LOCALE)
    try:
        return Locale.parse(key.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        log.warning("unknown locale %r; formatting as %s", locale, DEFAULT_LOCALE)
        return Locale.parse(DEFAULT_LOCALE)


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo:
    """ZoneInfo for ``name``; a missing or unknown zone falls back to Europe/Amsterdam."""
    try:
        return ZoneInfo(name or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        log.warning("unknown time zone %r; using %s", name, DEFAULT_TZ)
        return ZoneInfo(DEFAULT_TZ)


def _defined(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _moment(value: Any, tz: str | None) -> _datetime | _date:
    """An RFC 3339 string or datetime in the customer's zone; a bare date stays a date."""
    value = _defined(value)
    if isinstance(value, str):
        text = value.strip()
        value = _date.fromisoformat(text) if len(text) == 10 else _datetime.fromisoformat(text)
    if isinstance(value, _datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(zone(tz))
    if isinstance(value, _date):
        return value
    raise TypeError(f"not a date or time: {value!r}")


def _plain(text: str) -> str:
    # Babel separates symbol and amount with a no-break space; that is not GSM-7.
    return text.replace("\xa0", " ").replace("\u202f", " ")


# ---------------------------------------------------------------------------
# Filters


@jinja2.pass_context
def money_filter(ctx, amount: Any, currency: str = "EUR") -> str:
    """nl: "€ 12,50", en: "€12.50"."""
    amount = _defined(amount)
    try:
        number = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    return _money(number, currency, ctx.get("locale"))


@lru_cache(maxsize=4096)
def _money(number: Decimal, currency: str, locale: str | None) -> str:
    # A shop's prices repeat from message to message; Babel's formatting was a fifth of the rendering in
    # bench/throughput.py.
    return _plain(format_currency(number, currency, locale=babel_locale(locale)))


def _date_filter(pattern: str, date_pattern: str | None):
    @jinja2.pass_context
    def render(ctx, value: Any) -> str:
        moment = _moment(value, ctx.get("tz"))
        locale = babel_locale(ctx.get("locale"))
        if isinstance(moment, _datetime):
            return _plain(format_datetime(moment, pattern, locale=locale))
        if date_pattern is None:
            raise ValueError(f"a time is needed, got the date {value!r}")
        return _plain(format_date(moment, date_pattern, locale=locale))

    return render


datetime_filter = _date_filter("EEEE d MMMM HH:mm", "EEEE d MMMM")  # dinsdag 25 november 14:00
date_filter = _date_filter("EEEE d MMMM", "EEEE d MMMM")  # dinsdag 25 november
time_filter = _date_filter("HH:mm", None)  # 14:00
weekday_time_filter = _date_filter("EEEE HH:mm", None)  # dinsdag 14:00


def first_name_filter(name: Any) -> str:
    """First word of a full name; "" for an empty name."""
    words = str(_defined(name) or "").split()
    return words[0] if words else ""


def areas_filter(values: Any) -> str:
    """Postcode prefixes as "1012, 3511AB"."""
    values = _defined(values)
    if isinstance(values, str):
        return values
    return ", ".join(str(v) for v in values)


FILTERS = {
    "money": money_filter,
    "datetime": datetime_filter,
    "date": date_filter,
    "time": time_filter,
    "weekday_time": weekday_time_filter,
    "first_name": first_name_filter,
    "areas": areas_filter,
}


# ---------------------------------------------------------------------------
# The sandbox


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(".html.j2")


def _limited_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() of {len(rng)} items; the limit is {MAX_RANGE}")
    return rng


def _loop_step() -> str:
    """Called by every loop iteration (see ``Sandbox._parse``); the budget is counted in ``Sandbox.call``."""
    return ""


class Sandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox with smaller limits: range(), calls and loop steps per render, ``*`` and ``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = _limited_range
        self.globals["_loop_step"] = _loop_step

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Jinja has no hook per loop iteration, so each loop body starts with a call to ``_loop_step``.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            step = nodes.Call(nodes.Name("_loop_step", "load"), [], [], None, None)
            loop.body.insert(0, nodes.ExprStmt(step).set_lineno(loop.lineno))
        return tree

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                    raise SecurityError(f"repetition to {len(seq) * n} items; the limit is {MAX_OUTPUT}")
        elif operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise SecurityError(f"exponent {right} too large")
        return super().call_binop(context, operator, left, right)

    def call(self, context, obj, /, *args: Any, **kwargs: Any) -> Any:
        budget = _calls.get()
        if budget is not None:
            if obj is _loop_step:
                budget[1] -= 1
                if budget[1] < 0:
                    raise SecurityError(f"more than {MAX_STEPS} loop steps in one render")
            else:
                budget[0] -= 1
                if budget[0] < 0:
                    raise SecurityError(f"more than {MAX_CALLS} calls in one render")
        return super().call(context, obj, *args, **kwargs)


def _template_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """File and line of the innermost template frame Jinja put into the traceback."""
    file = line = None
    tb = exc.__traceback__
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            file, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
    return file, line


class Renderer:
    """Loads, checks and renders the templates of one folder."""

    def __init__(self, template_dir: Path, *, brand: str = "Forewarn", status_url: str = "https://status.example.nl"):
        self.template_dir = Path(template_dir)
        self.brand = brand
        self.status_url = status_url
        self.env = Sandbox(
            loader=jinja2.FileSystemLoader(str(self.template_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            cache_size=400,
            auto_reload=False,  # no stat() per message; restart to pick up edits
        )
        self.env.filters.update(FILTERS)
        self._field_cache: dict[tuple[str, str, str], frozenset[str] | None] = {}

    # -- names -------------------------------------------------------------

    def template_name(self, channel: str, locale: str, template: str, part: str) -> str:
        return f"{channel}/{locale}/{template}.{part}.j2"

    def _path(self, name: str) -> str:
        return str(self.template_dir / name)

    def _parts(self, channel: str) -> tuple[str, ...]:
        try:
            return CHANNEL_PARTS[channel]
        except KeyError:
            raise TemplateError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNEL_PARTS)}") from None

    def missing(self, channel: str, locale: str, template: str) -> list[str]:
        """Names of the parts of this template that have no file."""
        names = (self.template_name(channel, locale, template, part) for part in self._parts(channel))
        return [name for name in names if not (self.template_dir / name).is_file()]

    # -- checking ----------------------------------------------------------

    def check_syntax(self) -> list[TemplateError]:
        """Parse every ``*.j2`` file; return the problems found (never raises for a template)."""
        problems: list[TemplateError] = []
        if not self.template_dir.is_dir():
            return [TemplateError("template folder does not exist", file=str(self.template_dir))]
        for name in self.env.list_templates(extensions=["j2"]):
            path = self._path(name)
            try:
                source, filename, _ = self.env.loader.get_source(self.env, name)
                tree = self.env.parse(source, name, filename)
                self.env.get_template(name)  # compiles (catches e.g. unknown filters) and warms the cache
            except TemplateSyntaxError as exc:
                problems.append(TemplateError(exc.message or str(exc), file=exc.filename or path, line=exc.lineno))
                continue
            except UnicodeDecodeError as exc:
                problems.append(TemplateError(f"not UTF-8: {exc.reason}", file=path))
                continue
            for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
                ref = node.template
                if isinstance(ref, nodes.Const) and isinstance(ref.value, str):
                    if not (self.template_dir / ref.value).is_file():
                        problems.append(TemplateError(f"refers to missing template {ref.value!r}", file=path, line=node.lineno))
        return problems

    def customer_fields(self, channel: str, locale: str, template: str) -> frozenset[str] | None:
        """The customer fields a template (with what it extends, includes or imports) reads.

        None when it hands the whole ``customer`` somewhere (a macro argument,
        say) and so could read anything. Lets a fan-out render once for every
        customer who looks the same to the template.
        """
        key = (channel, locale, template)
        if key not in self._field_cache:
            self._field_cache[key] = self._customer_fields(
                [self.template_name(channel, locale, template, part) for part in self._parts(channel)])
        return self._field_cache[key]

    def _customer_fields(self, names: list[str]) -> frozenset[str] | None:
        fields: set[str] = {"locale", "timezone"}  # the filters read them through the context
        queue, seen = list(names), set()
        while queue:
            name = queue.pop()
            if name in seen:
                continue
            seen.add(name)
            source, filename, _ = self.env.loader.get_source(self.env, name)
            tree = self.env.parse(source, name, filename)
            for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
                if not (isinstance(node.template, nodes.Const) and isinstance(node.template.value, str)):
                    return None
                queue.append(node.template.value)
            used = {id(n) for n in tree.find_all(nodes.Name) if n.name == "customer"}
            for node in tree.find_all(nodes.Call):  # customer.get('name', ...)
                target = node.node
                if (isinstance(target, nodes.Getattr) and target.attr == "get" and isinstance(target.node, nodes.Name)
                        and target.node.name == "customer" and node.args and isinstance(node.args[0], nodes.Const)):
                    fields.add(str(node.args[0].value))
                    used.discard(id(target.node))
            for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
                if isinstance(node.node, nodes.Name) and node.node.name == "customer" and id(node.node) in used:
                    if isinstance(node, nodes.Getattr) and node.attr != "get":
                        fields.add(node.attr)
                    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                        fields.add(str(node.arg.value))
                    else:
                        continue
                    used.discard(id(node.node))
            if used:
                return None
        return frozenset(fields)

    def compile_expression(self, source: str):
        """A callable evaluating ``source`` in the sandbox (rule conditions); undefined names raise."""
        try:
            return self.env.compile_expression(source, undefined_to_none=False)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"invalid expression {source!r}: {exc.message}") from None

    # -- rendering ---------------------------------------------------------

    def render(
        self,
        channel: str,
        locale: str,
        template: str,
        *,
        event: dict,
        customer: dict,
        extra: dict | None = None,
    ) -> Rendered:
        parts = self._parts(channel)
        context = {
            "event": event,
            "customer": customer,
            "brand": self.brand,
            "status_url": self.status_url,
            "locale": locale,
            "tz": customer.get("timezone") or DEFAULT_TZ,
        }
        if extra:
            context.update(extra)
        token = _calls.set([MAX_CALLS, MAX_STEPS])
        try:
            out = {part: self._render_part(self.template_name(channel, locale, template, part), context) for part in parts}
        finally:
            _calls.reset(token)
        if channel == "sms":
            body = _one_line(out["body"])
            return Rendered(subject=None, body=body, html=None, segments=count_segments(body))
        return Rendered(subject=_one_line(out["subject"]), body=_paragraphs(out["text"]), html=out["html"].strip(), segments=None)

    def _render_part(self, name: str, context: dict) -> str:
        try:
            template = self.env.get_template(name)
            chunks: list[str] = []
            size = 0
            for chunk in template.generate(context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateError(f"output exceeds {MAX_OUTPUT} characters", file=template.filename)
                chunks.append(chunk)
            return "".join(chunks)
        except TemplateError:
            raise
        except TemplateNotFound as exc:
            missing = exc.name if isinstance(exc.name, str) else name
            if missing == name:
                raise TemplateError(f"template not found: {name}", file=self._path(name)) from None
            file, line = _template_frame(exc)  # the template that extends/includes the missing one
            raise TemplateError(f"template not found: {missing}", file=file or self._path(name), line=line) from None
        except TemplateSyntaxError as exc:
            raise TemplateError(exc.message or str(exc), file=exc.filename or self._path(name), line=exc.lineno) from None
        except SecurityError as exc:
            file, line = _template_frame(exc)
            raise TemplateError(f"unsafe template: {exc}", file=file or self._path(name), line=line) from None
        except UndefinedError as exc:
            file, line = _template_frame(exc)
            raise TemplateError(f"undefined: {exc}", file=file or self._path(name), line=line) from None
        except RecursionError:
            raise TemplateError("recursion too deep", file=self._path(name)) from None
        except Exception as exc:  # a filter or method failing on bad data
            file, line = _template_frame(exc)
            raise TemplateError(f"{type(exc).__name__}: {exc}", file=file or self._path(name), line=line) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(text: str) -> str:
    """Trim lines and keep at most one empty line between paragraphs."""
    out: list[str] = []
    for line in text.strip().splitlines():
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)
