"""Budgets of the sandbox: a template or condition from ops that would run for long or build a huge value is
stopped while it runs, quickly and in little memory, and the decider records why."""

from __future__ import annotations

import gc
import resource
import signal
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streams.core.decider import Decider, Suppression
from streams.core.directory import CustomerDirectory
from streams.core.render import Renderer
from streams.core.rules import Rule, RuleSet
from streams.errors import TemplateBudgetExceeded, TemplateError
from tests.fakes import links_for_tests

LINE = "x" * 130

# Each of these took seconds to minutes, or gigabytes, on the sandbox without budgets.
RUNAWAY = {
    "lipsum": "{{ lipsum(200000)|length }}",
    "replace doubling in a loop": "{% set ns = namespace(s='ab') %}{% for i in range(99) %}{% for j in range(1000) %}"
                                  "{% set ns.s = ns.s|replace('a', 'aa') %}{% endfor %}{% endfor %}{{ ns.s|length }}",
    "replace in a 99,000-step loop": "{% set ns = namespace(s='a' * 90000) %}{% for i in range(99) %}"
                                     "{% for j in range(1000) %}"
                                     "{% set ns.s = ns.s|replace('a', 'b')|replace('b', 'a') %}"
                                     "{% endfor %}{% endfor %}{{ ns.s|length }}",
    "searching in a 99,000-step loop": "{% set s = 'a' * 400000 %}{% for i in range(99) %}{% for j in range(1000) %}"
                                       "{% if 'ab' in s %}!{% endif %}{% endfor %}{% endfor %}",
    "center folded at compile time": "{{ 'a'|center(1000000000) }}",
    "% folded at compile time": "{{ '%0999999999d' % 1 }}",
    "format filter": "{{ '%0999999999d'|format(1) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format nested width": "{{ '{:{}}'.format(1, 999999999) }}",
    "indent": "{{ 'a\nb'|indent(999999999)|length }}",
    "join": "{{ (['x'] * 9999)|join('y' * 99999)|length }}",
    "str.join": "{{ ('y' * 99999).join(['x'] * 9999)|length }}",
    "int.to_bytes": "{{ (1).to_bytes(999999999, 'big')|length }}",
    "bytes repetition": "{{ ('a'.encode() * 999999999)|length }}",
    "power tower": "{{ ((10 ** 1000) ** 1000) ** 1000 }}",
    "int product": "{% set ns = namespace(n=10 ** 1000) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
                   "{% endfor %}{{ ns.n > 0 }}",
    "shared lists printed": "{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{{ [b] * 1000 }}",
    "shared lists in literals": "{% set a = range(1000)|list %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
                                "{% set c = [b, b, b, b, b, b, b, b, b, b] %}"
                                "{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
                                "{{ d|string|length }}",
    "deep comparison": "{% set a = range(1000)|list %}{% set b = range(1000)|list %}"
                       "{% set x = [[a] * 1000] * 1000 %}{% set y = [[b] * 1000] * 1000 %}{{ x == y }}",
    "~ doubling": "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                  "{{ ns.s|length }}",
    "+ doubling": "{% set ns = namespace(s=['ab']) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
                  "{{ ns.s|length }}",
    "text of a loop in a macro": "{% macro m() %}{% for i in range(1000) %}{% for j in range(99) %}" + LINE
                                 + "{% endfor %}{% endfor %}{% endmacro %}{{ m()|length }}",
    "text of a loop in a set block": "{% set s %}{% for i in range(1000) %}{% for j in range(99) %}" + LINE
                                     + "{% endfor %}{% endfor %}{% endset %}{{ s|length }}",
    "included text in a loop": "{% set s %}{% for i in range(1000) %}{% for j in range(99) %}"
                               "{% include 'sms/nl/text.body.j2' %}{% endfor %}{% endfor %}{% endset %}{{ s|length }}",
}


class TooSlow(BaseException):
    """Not an Exception: the renderer's own handlers must not turn it into a TemplateError."""


@contextmanager
def bounded(seconds: float, megabytes: int):
    """Run the block under a watchdog and an address-space limit, so that a runaway fails the test instead of
    hanging or swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + megabytes * 2**20, hard))
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGALRM, _too_slow)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if in_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _too_slow(signum, frame):
    raise TooSlow("still running")


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize in /proc/self/status")


def renderer_with(tmp_path: Path, source: str) -> Renderer:
    for name, text in (("sms/nl/x.body.j2", source), ("sms/nl/text.body.j2", LINE)):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Renderer(tmp_path)


@pytest.mark.parametrize("source", RUNAWAY.values(), ids=RUNAWAY.keys())
def test_runaway_template_is_stopped_while_it_runs(tmp_path, source):
    renderer = renderer_with(tmp_path, source)
    started = time.thread_time()  # the budget counts CPU time: a starved core stretches the wall time
    with bounded(seconds=10, megabytes=400), pytest.raises(TemplateBudgetExceeded) as caught:
        renderer.render("sms", "nl", "x", event={"data": {}}, customer={})
    assert time.thread_time() - started < 2.0  # the budget is half a second; one step may run over it
    assert caught.value.file.startswith(str(tmp_path / "sms/nl"))  # x.body.j2, or the text.body.j2 it includes
    assert caught.value.message.startswith("over budget: ")


def test_budget_overrun_names_the_line(tmp_path):
    renderer = renderer_with(tmp_path, "Hallo {{ customer.name }},\n{{ lipsum(200000) }}\n")
    with bounded(seconds=10, megabytes=400), pytest.raises(TemplateBudgetExceeded) as caught:
        renderer.render("sms", "nl", "x", event={}, customer={"name": "An"})
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{tmp_path / 'sms/nl/x.body.j2'}:2: over budget: ")


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ 'ab'|center(6) }}|{{ 'ab'.rjust(4, '.') }}|{{ '7'.zfill(3) }}", "ab |..ab|007"),
    ("{{ '%05d' % 42 }} {{ '%s-%s' % ('a', 'b') }} {{ '%(n)s'|format(n=1) }}", "00042 a-b 1"),
    ("{{ '{:>4}|{}'.format('x', 2) }}", "   x|2"),
    ("{{ [1, 2] + [3] }} {{ 'ab' * 3 }} {{ (1, 2) * 2 }} {{ 2 ** 10 }} {{ 7 * 6 }}",
     "[1, 2, 3] ababab (1, 2, 1, 2) 1024 42"),
    ("{{ ['a', 'b']|join(', ') }} {{ 'aXbX'|replace('X', '--') }} {{ 'a\nb'|indent(2) }}", "a, b a--b-- a\n  b"),
    ("{{ 'x' ~ 1 ~ [2] }} {{ {'k': (1, 2)} }} {% for i in range(3) %}{{ i }}{% endfor %}", "x1[2] {'k': (1, 2)} 012"),
    ("{% set ns = namespace(n=0) %}{% for i in range(300) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "44850"),
])
def test_ordinary_work_is_left_alone(tmp_path, source, expected):
    renderer = renderer_with(tmp_path, source)
    assert renderer.render("sms", "nl", "x", event={}, customer={}).body == " ".join(expected.split())


def test_html_output_is_escaped_as_before(tmp_path):
    path = tmp_path / "email/nl/x.html.j2"
    path.parent.mkdir(parents=True)
    path.write_text("{{ customer.name ~ '!' }}{{ ['<b>'] }}", encoding="utf-8")
    for part in ("subject", "text"):
        (tmp_path / f"email/nl/x.{part}.j2").write_text("s", encoding="utf-8")
    out = Renderer(tmp_path).render("email", "nl", "x", event={}, customer={"name": "<Jan>"})
    assert out.html == "&lt;Jan&gt;![&#39;&lt;b&gt;&#39;]"


@pytest.mark.parametrize("source", [
    "lipsum(200000)|length > 0",
    "'a'|center(1000000000) == 'a'",
    "('%0999999999d' % 1)|length > 0",
    "(('x' * 400000)|replace('x', 'yy'))|length > 0",
])
def test_runaway_condition_is_stopped(renderer, source):
    started = time.thread_time()
    with bounded(seconds=10, megabytes=400):
        condition = renderer.compile_expression(source)
        with pytest.raises(TemplateBudgetExceeded, match="^over budget: "):
            condition(event={}, customer={})
    assert time.thread_time() - started < 1.5


def test_condition_within_budget_still_answers(renderer):
    condition = renderer.compile_expression("event.data['items']|length > 0 and customer.name|first_name == 'An'")
    assert condition(event={"data": {"items": [1]}}, customer={"name": "An de Vries"}) is True


# --------------------------------------------------------------------------
# What the decider records


NOW = datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)
CUSTOMER = {"id": "C1", "name": "An", "phone": "+31612345678", "email": "an@example.nl", "locale": "nl",
            "timezone": "Europe/Amsterdam", "tier": "standard", "postcode": "1012AB",
            "consents": {"sms": True, "email": True}}
DELAYED = {"id": "e1", "type": "order.delayed", "occurred_at": "2026-11-25T14:00:00+01:00", "customer_id": "C1",
           "data": {"order_id": "ORD-1", "old_eta": "2026-11-26T12:00:00+01:00",
                    "new_eta": "2026-11-28T12:00:00+01:00", "reason": "Storm"}}


def decider_for(renderer: Renderer, when: str | None = None) -> Decider:
    rule = Rule(id="delayed", events=("order.delayed",), audience="customer", channels=("sms",),
                channel_mode="first", template="x", priority=50, key="data.order_id", line=1, when=when,
                condition=renderer.compile_expression(when) if when else None)
    directory = CustomerDirectory()
    directory.upsert(dict(CUSTOMER))
    return Decider(RuleSet([rule], "rules.yaml", budget=None), renderer, directory, links=links_for_tests())


def test_over_budget_render_is_a_render_failed_suppression_with_the_reason(tmp_path):
    decider = decider_for(renderer_with(tmp_path, "{{ lipsum(200000) }}"))
    with bounded(seconds=10, megabytes=400):
        outcomes = list(decider.handle(DELAYED, NOW))
    [suppressed] = outcomes
    assert isinstance(suppressed, Suppression) and suppressed.reason == "render_failed"
    assert "over budget" in suppressed.detail and "x.body.j2:1" in suppressed.detail


def test_over_budget_condition_is_a_condition_error_suppression_with_the_reason(tmp_path):
    decider = decider_for(renderer_with(tmp_path, "{{ event.data.order_id }}"), when="lipsum(200000)|length > 0")
    with bounded(seconds=10, megabytes=400):
        outcomes = list(decider.handle(DELAYED, NOW))
    [suppressed] = outcomes
    assert isinstance(suppressed, Suppression) and suppressed.reason == "condition_error"
    assert "over budget" in suppressed.detail


def test_include_outside_the_folder_is_a_template_error_not_a_crash(tmp_path):
    renderer = renderer_with(tmp_path, "{% include '/etc/passwd' %}")
    assert renderer.customer_fields("sms", "nl", "x") is None
    with pytest.raises(TemplateError, match="template not found"):
        renderer.render("sms", "nl", "x", event={}, customer={})


def test_condition_on_a_field_the_customer_lacks_is_a_condition_error_not_a_crash(tmp_path):
    # customer.critical is an Undefined that raises only when asked if it is true: that was outside the try.
    decider = decider_for(renderer_with(tmp_path, "{{ event.data.order_id }}"), when="customer.critical")
    [suppressed] = list(decider.handle(DELAYED, NOW))
    assert suppressed.reason == "condition_error" and "critical" in suppressed.detail


def test_time_spent_collecting_garbage_is_not_charged_to_the_template():
    # A full collection in a big worker takes longer than a render's budget; it must not fail the render.
    from streams.core.render import _Budget

    heap = [[i] for i in range(2_000_000)]
    budget = _Budget(0.01)
    started = time.monotonic()
    gc.collect()
    assert time.monotonic() - started > 0.01, "the collection was too quick to show anything"
    budget.tick()
    del heap
