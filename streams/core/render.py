"""Render SMS and e-mail templates in a Jinja2 sandbox with budgets.

Templates live in ``<template_dir>/<channel>/<locale>/<template>.<part>.j2``.
Only ``.html.j2`` files are autoescaped; undefined variables are errors
(StrictUndefined), so optional event fields must be tested with ``is defined``
or ``event.data.get(...)``. Every failure - a missing or broken template, an
undefined variable, an unsafe attribute, runaway output - is raised as
:class:`streams.errors.TemplateError` with the template file and, where Jinja
knows it, the line.

Templates and rule conditions come from ops teams and are untrusted, so the
sandbox refuses cost as well as ``__class__``: each render and each evaluation
of a condition has a budget (the ``MAX_*`` and ``*_SECONDS`` constants below),
enforced while it runs. Operations that could build a huge string or list
(``center``, ``%``, ``*``, ``replace``, ``join``, ``lipsum``, ...) are refused
before they allocate, everything built is counted, and the clock is checked at
every call, filter, operator, loop step and output chunk. An overrun raises
:class:`streams.errors.TemplateBudgetExceeded`. No signal-based watchdog: an
exception raised at an arbitrary point could leave Jinja's or Babel's caches
half-updated in the worker; instead every single step is bounded by the size
checks, so the clock is looked at often enough.

Pure module: no Kafka, no I/O beyond reading the template files.
"""

from __future__ import annotations

import gc
import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date as _date
from datetime import datetime as _datetime
from datetime import timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache, update_wrapper
from pathlib import Path
from string import Formatter
from time import thread_time
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import TemplateModule
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Macro, markup_join, str_join
from jinja2.sandbox import (UNSAFE_ASYNC_GENERATOR_ATTRIBUTES, UNSAFE_COROUTINE_ATTRIBUTES,
                            UNSAFE_GENERATOR_ATTRIBUTES, ImmutableSandboxedEnvironment, _mutable_spec)
from jinja2.utils import Namespace, _PassArg, generate_lorem_ipsum

from streams.core.eta import Window, eta_start, parse_eta
from streams.core.segments import SmsSegments, count_segments
from streams.errors import TemplateBudgetExceeded, TemplateError

__all__ = ["CHANNEL_PARTS", "Condition", "Rendered", "Renderer", "babel_locale", "zone"]

log = logging.getLogger(__name__)

CHANNEL_PARTS: dict[str, tuple[str, ...]] = {"sms": ("body",), "email": ("subject", "text", "html")}

# Budgets, per render (all parts of one message) and per evaluation of a condition.
MAX_OUTPUT = 100_000  # characters per rendered part
MAX_RANGE = 1_000  # items per range() in a template
MAX_CALLS = 10_000  # function/macro calls per render()
MAX_STEPS = 100_000  # loop iterations per render(): nested loops over small lists must not run for hours
MAX_VALUE = 500_000  # characters one value built by a template may print as (a list's shared items counted each
#                      time): about twice the largest event (MAX_EVENT_BYTES), so the event's own data fits
MAX_BUILT = 2_000_000  # characters (list items by their printed size) one render may build in all: its memory
MAX_INT_BITS = 10_000  # size of a number a template may compute: far beyond any amount, and cheap to print
RENDER_SECONDS = 0.5  # CPU time per render, garbage collection not counted; a typical one takes 0.05 ms
CONDITION_SECONDS = 0.25  # the same per evaluation of a condition (a typical one: a few microseconds)
CLOCK_EVERY = 16  # steps and calls between looks at the clock (a look costs 0.6 us; each step is budgeted anyway)
DEFAULT_TZ = "Europe/Amsterdam"
DEFAULT_LOCALE = "nl_NL"
BABEL_LOCALES = {"nl": "nl_NL", "en": "en_GB"}
# What render() puts in a template's context (``outage`` only for outage rules); conditions see event and customer.
CONTEXT_NAMES = frozenset({"event", "customer", "brand", "status_url", "locale", "tz", "outage"})
CONDITION_NAMES = frozenset({"event", "customer"})


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

# How a window is said, by language; other languages get the English words.
_BETWEEN = {"nl": ("tussen", "en"), "en": ("between", "and")}


@jinja2.pass_context
def eta_filter(ctx, value: Any) -> str:
    """An ETA as carriers give it, in the customer's locale and zone (see streams.core.eta).

    A date or a timestamp: the day, as the ``date`` filter says it ("woensdag 3 december"); a window
    on one day: "woensdag 3 december tussen 14:00 en 16:00"; over two days both ends in full.
    """
    value = _defined(value)
    if not isinstance(value, dict):
        return date_filter(ctx, value)  # exactly as before ETAs could be windows
    eta = parse_eta(value)
    if not isinstance(eta, Window):
        raise ValueError(f"not an ETA: {value!r}")
    tz, locale = ctx.get("tz"), babel_locale(ctx.get("locale"))
    start, end = _moment(eta.start, tz), _moment(eta.end, tz)
    between, conjunction = _BETWEEN.get(locale.language, _BETWEEN["en"])
    if start.date() == end.date():
        day = format_date(start, "EEEE d MMMM", locale=locale)
        first, last = (format_datetime(m, "HH:mm", locale=locale) for m in (start, end))
        return _plain(f"{day} {between} {first} {conjunction} {last}")
    first, last = (format_datetime(m, "EEEE d MMMM HH:mm", locale=locale) for m in (start, end))
    return _plain(f"{between} {first} {conjunction} {last}")


@jinja2.pass_context
def eta_start_filter(ctx, value: Any) -> _datetime:
    """When an ETA of any form starts, for conditions: ``event.data.new_eta|eta_start > event.data.old_eta|eta_start``.

    A window by its ``from``; a date by its start of day in the customer's zone (UTC if it has none).
    """
    customer = ctx.get("customer")
    name = ctx.get("tz") or (customer.get("timezone") if isinstance(customer, dict) else None)
    return eta_start(_defined(value), zone(name) if name else None)


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
    "eta": eta_filter,
    "eta_start": eta_start_filter,
    "first_name": first_name_filter,
    "areas": areas_filter,
}


# ---------------------------------------------------------------------------
# Budgets


_gc_seconds = [0.0, 0.0]  # CPU time spent collecting garbage so far; when the current collection started


def _gc_clock(phase: str, info: dict) -> None:
    # A full collection in a worker holding a million customers takes 0.65 s (see streams.gc_tuning): one that
    # lands in a render is not the template's doing.
    if phase == "start":
        _gc_seconds[1] = thread_time()
    else:
        _gc_seconds[0] += thread_time() - _gc_seconds[1]


gc.callbacks.append(_gc_clock)


def _clock() -> float:
    # The thread's CPU time, not the wall clock: a worker starved of CPU by its neighbours (two cores, a broker
    # and a fan-out) must not refuse a template that is merely slow to be scheduled.
    return thread_time() - _gc_seconds[0]


class _Budget:
    """What is left of one render's or one condition's budget; every overrun raises TemplateBudgetExceeded."""

    __slots__ = ("seconds", "deadline", "calls", "steps", "chars", "_unclocked")

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = _clock() + seconds
        self.calls = MAX_CALLS
        self.steps = MAX_STEPS
        self.chars = MAX_BUILT
        self._unclocked = CLOCK_EVERY

    def tick(self) -> None:
        self._unclocked -= 1
        if self._unclocked > 0:
            return
        self._unclocked = CLOCK_EVERY
        if _clock() > self.deadline:
            raise TemplateBudgetExceeded(f"over budget: ran for more than {self.seconds} s")

    def call(self) -> None:
        self.calls -= 1
        if self.calls < 0:
            raise TemplateBudgetExceeded(f"over budget: more than {MAX_CALLS} calls")
        self.tick()

    def step(self, text: int) -> None:
        """One loop iteration, about to print ``text`` characters of the template's own text."""
        self.steps -= 1
        if self.steps < 0:
            raise TemplateBudgetExceeded(f"over budget: more than {MAX_STEPS} loop steps")
        self.spend(text)
        self.tick()

    def spend(self, chars: int) -> None:
        self.chars -= chars
        if self.chars < 0:
            raise TemplateBudgetExceeded(f"over budget: builds more than {MAX_BUILT} characters")


_budget: ContextVar[_Budget | None] = ContextVar("forewarn_template_budget", default=None)


def _budgeted(seconds: float, run: Callable[[], Any]) -> Any:
    token = _budget.set(_Budget(seconds))
    try:
        return run()
    finally:
        _budget.reset(token)


_TEXT = (str, bytes, bytearray)
_SEQUENCES = (list, tuple, set, frozenset)
_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_MAPPINGS = (dict, *_VIEWS)
_CONTAINERS = (*_MAPPINGS, *_SEQUENCES, Namespace, TemplateModule)
_BUILT = _TEXT + _CONTAINERS


def _size(value: Any, limit: int = MAX_VALUE) -> int:
    """About the length of ``str(value)``, a list's shared items counted each time they print; refused past ``limit``.

    Walks without recursion and stops at ``limit``, so it costs at most ``limit`` steps even on a value
    that shares (or contains) itself.
    """
    size = len(value) if isinstance(value, _TEXT) else _walk_size(value, limit)
    if size > limit:
        raise TemplateBudgetExceeded(f"over budget: a value of more than {limit} characters")
    return size


def _walk_size(value: Any, limit: int) -> int:
    size, stack = 0, [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, _TEXT):
            size += len(item) + 4
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 3
        elif isinstance(item, _SEQUENCES):
            size += 2 * len(item) + 2
            if size <= limit:
                stack.extend(item)
        elif isinstance(item, _MAPPINGS):
            mapping = item if isinstance(item, dict) else item.mapping
            size += 4 * len(mapping) + 2
            if size <= limit:
                stack.extend(mapping.keys())
                stack.extend(mapping.values())
        elif isinstance(item, Namespace):
            size += 14
            stack.append(item._Namespace__attrs)
        elif isinstance(item, TemplateModule):
            size += sum(len(chunk) for chunk in item._body_stream)
        else:  # numbers, None, undefined, functions: short when printed
            size += 24
    return size


def _charge(value: Any, budget: _Budget | None) -> None:
    """Count a value just built (a filter's or call's result, a literal) against the budget."""
    if isinstance(value, _BUILT):
        size = _size(value)
        if budget is not None:
            budget.spend(size)


def _expect(size: int, budget: _Budget | None, what: str) -> None:
    """Refuse, before it allocates, an operation predicted to build ``size`` characters."""
    if size > MAX_VALUE:
        raise TemplateBudgetExceeded(f"over budget: {what} would build {size} characters; the limit is {MAX_VALUE}")
    if budget is not None and size > budget.chars:
        raise TemplateBudgetExceeded(f"over budget: builds more than {MAX_BUILT} characters")


def _loop_step(text: int) -> str:
    """Called by every loop iteration (see ``Sandbox._parse``); the budget is counted in ``Sandbox.call``."""
    return ""


def _template_start(text: int) -> str:
    """Called when a template starts (rendered, included, imported); counts its own text in ``Sandbox.call``."""
    return ""


# ---------------------------------------------------------------------------
# Predicted sizes of the operations that can build much more than they are given. Each takes the
# operation's own arguments and returns about how many characters (or items) its result will have.


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _padded(text: Any, width: Any = 80, fillchar: Any = " ") -> int:  # center, ljust, rjust, zfill
    return max(_size(text), _count(width))


def _tabs_expanded(text: Any, tabsize: Any = 8) -> int:
    return _size(text) + text.count("\t" if isinstance(text, str) else b"\t") * _count(tabsize)


def _replaced(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    hits = text.count(old) if len(old) else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return _size(text) + hits * max(len(new) - len(old), 0)


def _joined(separator: Any, items: Any) -> int:
    return sum(_size(item) for item in items) + max(len(items) - 1, 0) * _size(separator)


def _translated(text: Any, table: Any) -> int:
    longest = max((len(v) for v in table.values() if isinstance(v, _TEXT)), default=1) if isinstance(table, dict) else 1
    return _size(text) * max(longest, 1)


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def _width(digits: str) -> int:
    return int(digits) if len(digits) <= 9 else MAX_VALUE + 1


def _percent_formatted(template: Any, values: Any) -> int:
    """``template % values``: the text, every value, and every width and precision it asks for."""
    if isinstance(values, dict):
        values = tuple(values.values())
    elif not isinstance(values, tuple):
        values = (values,)
    text = template if isinstance(template, str) else template.decode("latin-1")
    size = len(text) + sum(_size(v) for v in values)
    for width, precision in _PRINTF.findall(text):
        size += sum(_width(n) for n in (width, precision) if n and n != "*")
    if "*" in text:
        size += sum(_count(v) for v in values)
    return size


def _formatted(template: Any, *args: Any, **kwargs: Any) -> int:
    """``template.format(...)``: like ``%``; a width taken from an argument (``{:{}}``) counts every number given."""
    values = (*args, *kwargs.values())
    size = len(template) + sum(_size(v) for v in values)
    nested = False
    for _, _, spec, _ in Formatter().parse(template):
        if spec:
            nested = nested or "{" in spec
            size += sum(_width(n) for n in _DIGITS.findall(spec))
    if nested:
        size += sum(_count(v) for v in values)
    return size


def _format_mapped(template: Any, mapping: Any) -> int:
    return _formatted(template, **mapping) if isinstance(mapping, dict) else len(template)


def _to_bytes(length: Any = 1, byteorder: Any = "big", *, signed: Any = False) -> int:
    return _count(length)


def _lipsum(n: Any = 5, html: Any = True, min: Any = 20, max: Any = 100) -> int:
    # A word is at most 12 characters with its space; each paragraph is at most ``max`` words.
    return _count(n) * (_count(max) * 12 + 10)


_TEXT_METHODS: dict[str, Callable[..., int]] = {
    "center": _padded, "ljust": _padded, "rjust": _padded, "zfill": _padded,
    "expandtabs": _tabs_expanded, "replace": _replaced, "join": _joined, "translate": _translated,
}  # str.format and format_map: see Sandbox.wrap_str_format


def _call_cost(obj: Any, args: tuple, kwargs: dict) -> int | None:
    """The predicted size of what calling ``obj`` builds, when it could be much more than its arguments."""
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, _TEXT):
        predict = _TEXT_METHODS.get(getattr(obj, "__name__", ""))
        return predict(owner, *args, **kwargs) if predict is not None else None
    if isinstance(owner, int) and getattr(obj, "__name__", "") == "to_bytes":
        return _to_bytes(*args, **kwargs)
    if obj is generate_lorem_ipsum:
        return _lipsum(*args, **kwargs)
    return None


def _indented(text: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    lines = str(text).count("\n") + 1
    return _size(str(text)) + lines * (len(width) if isinstance(width, str) else _count(width))


def _wrapped(text: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
             break_on_hyphens: Any = True) -> int:
    text = str(text)
    lines = 2 * len(text) // max(_count(width), 1) + text.count("\n") + 2
    return len(text) + lines * len(wrapstring or "\n")


def _filter_replaced(text: Any, old: Any, new: Any, count: Any = None) -> int:
    return _replaced(str(text), str(old), str(new), -1 if count is None else count)


def _filter_joined(items: Any, d: Any = "", attribute: Any = None) -> int:
    return _joined(str(d), items)


def _filter_formatted(template: Any, *args: Any, **kwargs: Any) -> int:
    return _percent_formatted(str(template), kwargs or args)


def _batched(items: Any, linecount: Any, fill_with: Any = None) -> int:
    return 0 if fill_with is None else _count(linecount)


def _sliced(items: Any, slices: Any, fill_with: Any = None) -> int:
    return 8 * _count(slices)


def _summed(items: Any, attribute: Any = None, start: Any = 0) -> int:
    """Adding up lists or strings copies every partial sum: the cost grows with the square of the count."""
    if not isinstance(start, _TEXT + (list, tuple)):
        return 0
    total = built = _size(start)
    for item in items:
        total += _size(item)
        built += total
    return built


def _urlized(text: Any, trim_url_limit: Any = None, nofollow: Any = False, target: Any = None, rel: Any = None,
             extra_schemes: Any = None) -> int:
    text = str(text)
    links = text.count(".") + text.count("@") + 1
    return 3 * len(text) + links * (len(str(target or "")) + len(str(rel or "")) + 64)


def _as_json(value: Any, indent: Any = None) -> int:
    if indent is None:
        return 0
    step = len(indent) if isinstance(indent, str) else _count(indent)
    return _size(value) * (step + 1) * _depth(value)


def _depth(value: Any) -> int:
    """How deep lists and dicts nest in ``value``; at most MAX_VALUE items are looked at."""
    deepest, stack, seen = 0, [(value, 1)], 0
    while stack and seen < MAX_VALUE:
        item, depth = stack.pop()
        seen += 1
        if isinstance(item, dict):
            item = [*item.keys(), *item.values()]
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


_FILTERS: dict[str, Callable[..., int]] = {
    "center": _padded, "indent": _indented, "wordwrap": _wrapped, "replace": _filter_replaced,
    "join": _filter_joined, "format": _filter_formatted, "batch": _batched, "slice": _sliced, "sum": _summed,
    "urlize": _urlized, "tojson": _as_json,
}
_LISTED_FIRST = frozenset({"join", "sum"})  # their input is read twice (predicted, then done): make it a list


def _binop_cost(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left <operator> right`` before it runs if it would build too much."""
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            _expect_bits(left.bit_length() + right.bit_length())
            return
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, _TEXT + (list, tuple)) and isinstance(times, int):
            _expect(_size(seq) * max(times, 0), _budget.get(), "repetition")
    elif operator == "**":
        if isinstance(right, int) and abs(right) > 1024:
            raise TemplateBudgetExceeded(f"over budget: exponent {right} too large")
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            _expect_bits(left.bit_length() * right)
    elif operator == "+":
        if isinstance(left, _TEXT + (list, tuple)) and isinstance(right, _TEXT + (list, tuple)):
            _expect(_size(left) + _size(right), _budget.get(), "'+'")
    elif operator == "%" and isinstance(left, _TEXT):
        _expect(_percent_formatted(left, right), _budget.get(), "'%'")


def _expect_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateBudgetExceeded(f"over budget: a number of {bits} bits; the limit is {MAX_INT_BITS}")


# ---------------------------------------------------------------------------
# The sandbox


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(".html.j2")


def _limited_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateBudgetExceeded(f"over budget: range() of {len(rng)} items; the limit is {MAX_RANGE}")
    return rng


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` passes here before it is made a string: count what it will print."""
    budget = _budget.get()
    if budget is not None:
        budget.chars -= len(value) if type(value) is str else _size(value)  # inlined: the hot path
        if budget.chars < 0:
            budget.spend(0)  # raises
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the clock checked, its result counted and, for the filters in _FILTERS, its size predicted.

    Marked pass_context, which also keeps Jinja from running it at compile time ("constant folding"), when no
    budget is in force: ``{{ 'a'|center(10**9) }}`` used to allocate gigabytes in ``rules check`` itself.
    """
    predict = _FILTERS.get(name)
    pass_arg = _PassArg.from_obj(func)
    listed = name in _LISTED_FIRST

    def bounded(context, value: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        if budget is not None:
            budget.tick()
        if listed and not isinstance(value, (list, tuple)) and not isinstance(value, jinja2.Undefined):
            value = list(value)
        if predict is not None:
            _expect(predict(value, *args, **kwargs), budget, f"|{name}")
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        _charge(result, budget)
        return result

    update_wrapper(bounded, func)
    bounded.__dict__.pop("jinja_async_variant", None)  # the wrapped filter picks its own variant
    return jinja2.pass_context(bounded)


def _budget_call(method: str, text: int, lineno: int) -> nodes.ExprStmt:
    # ``environment.<method>``, not a name a template could shadow with {% set %}.
    call = nodes.Call(nodes.EnvironmentAttribute(method), [nodes.Const(text)], [], None, None)
    return nodes.ExprStmt(call).set_lineno(lineno)


def _text_size(body: list[nodes.Node]) -> int:
    """Characters of template text in ``body``, nested blocks included."""
    total = 0
    for node in body:
        found = [node] if isinstance(node, nodes.TemplateData) else []
        total += sum(len(data.data) for data in (*found, *node.find_all(nodes.TemplateData)))
    return total


def _listed_join_items(obj: Any, args: tuple) -> tuple:
    """``sep.join(items)`` reads ``items`` twice (to predict, then to join): make a one-pass iterator a list."""
    if (args and not isinstance(args[0], (list, tuple)) and isinstance(getattr(obj, "__self__", None), _TEXT)
            and getattr(obj, "__name__", "") == "join"):
        return (list(args[0]), *args[1:])
    return args


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` and list, tuple and dict displays going through the size checks.

    Without this, ``{% set ns.s = ns.s ~ ns.s %}`` in a loop doubles a string forty times, and ``[b, b, b]``
    nests shared lists until printing one takes gigabytes.
    """

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        markup = "context.eval_ctx.autoescape" if frame.eval_ctx.volatile else repr(bool(frame.eval_ctx.autoescape))
        self.write(f"environment.bounded_concat({markup}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._bounded(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target: {% for a, b in ... %}
            super().visit_Tuple(node, frame)
        else:
            self._bounded(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._bounded(super().visit_Dict, node, frame)

    def _bounded(self, visit: Callable[[nodes.Node, Frame], None], node: nodes.Node, frame: Frame) -> None:
        self.write("environment.bounded_display(")
        visit(node, frame)
        self.write(")")


class Sandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox with budgets: time, calls, loop steps, and the size of everything built (see the top)."""

    # Intercepted operators go through call_binop, and the sandbox never folds them at compile time.
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *, filters: dict[str, Callable[..., Any]] | None = None, **options: Any):
        super().__init__(finalize=_finalize, **options)
        self.globals["range"] = _limited_range
        self.filters.update(filters or {})
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.loop_step = _loop_step
        self.template_start = _template_start

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Jinja has no hook per loop iteration or per template run: each loop body and each template starts with a
        # call that counts the step and the template text it is about to print.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.body.insert(0, _budget_call("loop_step", _text_size(loop.body), loop.lineno))
        tree.body.insert(0, _budget_call("template_start", _text_size(tree.body), 1))
        return tree

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget.get()
        if budget is not None:
            budget.tick()
        _binop_cost(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        _charge(result, budget)
        return result

    def call(self, context, obj, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        if obj is _loop_step:
            if budget is not None:
                budget.step(args[0])
            return ""
        if obj is _template_start:
            if budget is not None:
                budget.spend(args[0])
            return ""
        if budget is not None:
            budget.call()
        if type(obj) is not Macro:  # a macro's own work is counted as it runs
            args = _listed_join_items(obj, args)
            cost = _call_cost(obj, args, kwargs)
            if cost is not None:
                _expect(cost, budget, "lipsum()" if obj is generate_lorem_ipsum else f"{obj.__name__}()")
        result = super().call(context, obj, *args, **kwargs)
        _charge(result, budget)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # The sandbox hands out str.format and format_map wrapped, on attribute access: wrap them once more.
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template, name = value.__self__, value.__name__
        predict = _format_mapped if name == "format_map" else _formatted

        def bounded(*args: Any, **kwargs: Any) -> str:
            _expect(predict(template, *args, **kwargs), _budget.get(), f"{name}()")
            return wrapped(*args, **kwargs)

        return update_wrapper(bounded, value)

    def bounded_concat(self, markup: bool, parts: tuple) -> str:
        """``a ~ b ~ c``: refused before joining if too long."""
        budget = _budget.get()
        size = sum(_size(part) for part in parts)
        _expect(size, budget, "'~'")
        if budget is not None:
            budget.spend(size)
        return markup_join(parts) if markup else str_join(parts)

    def bounded_display(self, value: Any) -> Any:
        """A list, tuple or dict display: counted, and refused if it would print too long."""
        _charge(value, _budget.get())
        return value


# ---------------------------------------------------------------------------
# What can be refused before anything runs


_MUTATING = frozenset().union(*(methods for _, methods in _mutable_spec))  # list.append, dict.update, ...
_UNSAFE_NAMES = frozenset({"mro", *UNSAFE_GENERATOR_ATTRIBUTES, *UNSAFE_COROUTINE_ATTRIBUTES,
                           *UNSAFE_ASYNC_GENERATOR_ATTRIBUTES})
_REFERENCES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_VERBS = {nodes.Extends: "extends", nodes.Include: "includes", nodes.Import: "imports", nodes.FromImport: "imports"}


def unsafe_attributes(tree: nodes.Node) -> list[tuple[int, str]]:
    """(line, message) for each attribute the sandbox would refuse: ``x.__class__``, ``x['_y']``, ``x.append(...)``."""
    found = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = _attribute_name(node)
        if name is not None and (name.startswith("_") or name in _UNSAFE_NAMES):
            found.append((node.lineno, f"unsafe attribute access: {name!r}"))
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Getattr) and call.node.attr in _MUTATING:
            found.append((call.lineno, f"templates may not change data: .{call.node.attr}()"))
    return found


def _attribute_name(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem):
        return node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None
    if node.name == "attr" and node.args and isinstance(node.args[0], nodes.Const):  # x|attr('__class__')
        return str(node.args[0].value)
    return None


def undefined_names(tree: nodes.Template, known: frozenset[str]) -> list[tuple[int, str]]:
    """(line, message) for each variable nothing defines, unless only tested with ``is defined`` or ``|default``."""
    assigned = _assigned_names(tree)
    loaded = {name.name for name in tree.find_all(nodes.Name) if name.ctx == "load"}
    if loaded <= known | assigned | _bound_names(tree):
        return []  # meta below generates the template's code: skip it when every name is bound somewhere
    # A child template's blocks look up what its top level sets through the context: meta reports those too.
    unknown = meta.find_undeclared_variables(tree) - known - assigned
    if not unknown:
        return []
    guarded = _guarded_names(tree)
    first: dict[str, int] = {}
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in unknown and id(name) not in guarded:
            first.setdefault(name.name, name.lineno)
    return sorted((line, f"undefined variable {name!r}") for name, line in first.items())


def _assigned_names(tree: nodes.Template) -> set[str]:
    found = {node.name for node in tree.find_all(nodes.Macro)}
    found |= {node.target for node in tree.find_all(nodes.Import)}
    for node in tree.find_all(nodes.FromImport):
        found |= {name[1] if isinstance(name, tuple) else name for name in node.names}
    for node in tree.find_all((nodes.Assign, nodes.AssignBlock)):
        found |= {name.name for name in node.target.find_all(nodes.Name)}
        if isinstance(node.target, nodes.Name):
            found.add(node.target.name)
    return found


def _bound_names(tree: nodes.Template) -> set[str]:
    """Loop variables and macro arguments, wherever they are bound."""
    found = {"loop", "caller", "varargs", "kwargs"}
    for node in tree.find_all(nodes.For):
        found |= {name.name for name in node.target.find_all(nodes.Name)}
        if isinstance(node.target, nodes.Name):
            found.add(node.target.name)
    for node in tree.find_all((nodes.Macro, nodes.CallBlock)):
        found |= {arg.name for arg in node.args}
    return found


def _guarded_names(tree: nodes.Template) -> set[int]:
    """ids of the Name nodes used only where ``is defined`` (or ``|default``) has vouched for them."""
    guarded = {id(f.node) for f in tree.find_all(nodes.Filter) if f.name in ("default", "d")}
    for test in tree.find_all(nodes.Test):
        if test.name in ("defined", "undefined") and isinstance(test.node, nodes.Name):
            guarded.add(id(test.node))
    for branch in tree.find_all((nodes.If, nodes.CondExpr)):
        tested = {t.node.name for t in branch.test.find_all(nodes.Test)
                  if t.name in ("defined", "undefined") and isinstance(t.node, nodes.Name)}
        if isinstance(branch.test, nodes.Test) and branch.test.name in ("defined", "undefined"):
            tested.add(getattr(branch.test.node, "name", None))
        guarded |= {id(name) for name in branch.find_all(nodes.Name) if name.name in tested}
    return guarded


def _referenced_names(node: nodes.Node) -> list[str] | None:
    """The template names an extends/include/import names, or None if they are computed at run time."""
    ref = node.template
    refs = ref.items if isinstance(ref, (nodes.List, nodes.Tuple)) else [ref]
    if all(isinstance(r, nodes.Const) and isinstance(r.value, str) for r in refs):
        return [r.value for r in refs]
    if isinstance(ref, nodes.Const) and isinstance(ref.value, (list, tuple)):
        return [str(v) for v in ref.value]
    return None


def _inside_folder(name: str) -> bool:
    return not name.startswith("/") and "\\" not in name and ".." not in name.split("/")


class Condition:
    """A rule's compiled ``when:``, answering True or False; each evaluation runs on its own budget.

    The answer is made a bool inside: ``customer.critical`` for a customer without the field is an Undefined
    that raises only when asked whether it is true, and that must happen where the caller catches errors.
    """

    __slots__ = ("source", "_expression")

    def __init__(self, source: str, expression: Callable[..., Any]):
        self.source = source
        self._expression = expression

    def __call__(self, **context: Any) -> bool:
        return _budgeted(CONDITION_SECONDS, lambda: bool(self._expression(**context)))

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


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
            filters=FILTERS,
            loader=jinja2.FileSystemLoader(str(self.template_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            cache_size=400,
            auto_reload=False,  # no stat() per message; restart to pick up edits
        )
        self._field_cache: dict[tuple[str, str, str], frozenset[str] | None] = {}
        self._trees: dict[str, nodes.Template] = {}
        self._problems: dict[str, list[TemplateError]] = {}

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
        """Parse, compile and inspect every ``*.j2`` file; return the problems found (never raises for a template).

        Besides syntax: unsafe attribute access, extends/include/import of a template outside the folder or
        missing, and variables nothing defines (see ``template_problems``).
        """
        problems: list[TemplateError] = []
        if not self.template_dir.is_dir():
            return [TemplateError("template folder does not exist", file=str(self.template_dir))]
        for name in self.env.list_templates(extensions=["j2"]):
            path = self._path(name)
            try:
                self.parsed(name)
                self.env.get_template(name)  # compiles (catches e.g. unknown filters) and warms the cache
            except TemplateSyntaxError as exc:
                problems.append(TemplateError(exc.message or str(exc), file=exc.filename or path, line=exc.lineno))
                continue
            except UnicodeDecodeError as exc:
                problems.append(TemplateError(f"not UTF-8: {exc.reason}", file=path))
                continue
            problems += self.template_problems(name)
        return problems

    def parsed(self, name: str) -> nodes.Template:
        """The syntax tree of a template file, parsed once (files are not reloaded, see ``auto_reload``)."""
        tree = self._trees.get(name)
        if tree is None:
            source, filename, _ = self.env.loader.get_source(self.env, name)
            tree = self._trees[name] = self.env.parse(source, name, filename)
        return tree

    def template_problems(self, name: str) -> list[TemplateError]:
        """What would fail in this template file whatever the data, with its lines; looked at once."""
        found = self._problems.get(name)
        if found is None:
            tree, known = self.parsed(name), CONTEXT_NAMES | self.env.globals.keys()
            lines = unsafe_attributes(tree) + self._reference_problems(tree) + undefined_names(tree, known)
            found = self._problems[name] = [TemplateError(message, file=self._path(name), line=line)
                                            for line, message in sorted(lines)]
        return found

    def expression_problems(self, source: str) -> list[str]:
        """What would fail in a condition whatever the data: unsafe attributes, names other than event and customer."""
        tree = self.env.parse("{{ (" + source + ") }}")
        known = CONDITION_NAMES | self.env.globals.keys()
        return [message for _, message in unsafe_attributes(tree) + undefined_names(tree, known)]

    def _reference_problems(self, tree: nodes.Template) -> list[tuple[int, str]]:
        found = []
        for node in tree.find_all(_REFERENCES):
            verb = _VERBS[type(node)]
            names = _referenced_names(node)
            if names is None:
                found.append((node.lineno, f"{verb} a template named at run time; name it with a fixed string"))
                continue
            for name in names:
                if not _inside_folder(name):
                    found.append((node.lineno, f"{verb} {name!r}, outside the templates folder"))
                elif not self._exists(name) and not getattr(node, "ignore_missing", False):
                    found.append((node.lineno, f"refers to missing template {name!r}"))
        return found

    def _exists(self, name: str) -> bool:
        try:
            self.env.loader.get_source(self.env, name)
        except TemplateNotFound:
            return False
        return True

    def customer_fields(self, channel: str, locale: str, template: str) -> frozenset[str] | None:
        """The customer fields a template (with what it extends, includes or imports) reads.

        None when it hands the whole ``customer`` somewhere (a macro argument,
        say) and so could read anything, or when a part cannot be read (the
        render then reports why). Lets a fan-out render once for every
        customer who looks the same to the template.
        """
        key = (channel, locale, template)
        if key not in self._field_cache:
            names = [self.template_name(channel, locale, template, part) for part in self._parts(channel)]
            try:
                self._field_cache[key] = self._customer_fields(names)
            except (TemplateNotFound, TemplateSyntaxError):
                self._field_cache[key] = None
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

    def compile_expression(self, source: str) -> Condition:
        """A callable evaluating ``source`` in the sandbox (rule conditions), on a budget; undefined names raise."""
        try:
            return Condition(source, self.env.compile_expression(source, undefined_to_none=False))
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
        out = _budgeted(RENDER_SECONDS, lambda: {
            part: self._render_part(self.template_name(channel, locale, template, part), context) for part in parts})
        if channel == "sms":
            body = _one_line(out["body"])
            return Rendered(subject=None, body=body, html=None, segments=count_segments(body))
        return Rendered(subject=_one_line(out["subject"]), body=_paragraphs(out["text"]), html=out["html"].strip(), segments=None)

    def _render_part(self, name: str, context: dict) -> str:
        try:
            return self._generate(name, context)
        except TemplateBudgetExceeded as exc:
            file, line = _template_frame(exc)
            raise TemplateBudgetExceeded(exc.message, file=exc.file or file or self._path(name),
                                         line=exc.line or line) from None
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

    def _generate(self, name: str, context: dict) -> str:
        """One part, chunk by chunk, so that output over MAX_OUTPUT or the clock stops it as it comes."""
        template = self.env.get_template(name)
        budget = _budget.get()
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateBudgetExceeded(f"over budget: output exceeds {MAX_OUTPUT} characters",
                                             file=template.filename)
            chunks.append(chunk)
            # Every 16th chunk: what takes time between two chunks is a call, filter or loop, which look themselves.
            if budget is not None and not len(chunks) % 16:
                budget.tick()
        return "".join(chunks)


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
