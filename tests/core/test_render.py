"""Templates and the sandboxed renderer: copy facts, SMS length, escaping, errors."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streams.core import render as render_module
from streams.core.render import CHANNEL_PARTS, Rendered, Renderer
from streams.core.segments import GSM7_BASIC, GSM7_EXTENSION, count_segments
from streams.errors import ConfigError, TemplateError

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
LOCALES = ("nl", "en")
OUTAGES = ("outage_started", "outage_updated", "outage_resolved")
ALL = OUTAGES + ("order_delayed", "order_shipped", "cart_reminder")
SERVICES = ("internet", "tv", "telephony", "mobile", "power")


def customer(locale: str = "nl", **changes) -> dict:
    record = {
        "id": "cus-1001",
        "name": "Anne-Marie O'Brien",
        "phone": "+31612345678",
        "email": "anne-marie@example.nl",
        "locale": locale,
        "timezone": "Europe/Amsterdam",
        "tier": "standard",
        "postcode": "1012AB",
        "node_id": "ams-node-17",
        "critical": False,
        "consents": {"sms": True, "email": True},
    }
    record.update(changes)
    return record


def envelope(event_type: str, data: dict) -> dict:
    return {
        "id": "evt-01J0000000000000000000000",
        "type": event_type,
        "occurred_at": "2025-11-25T12:58:00Z",
        "customer_id": "cus-1001",
        "data": data,
    }


# Tuesday 25 November 2025; Amsterdam is UTC+1 then.
EVENTS = {
    "outage_started": envelope("outage.started", {
        "outage_id": "out-4711",
        "service": "internet",
        "areas": ["1012", "3511AB"],
        "nodes": ["ams-node-17"],
        "expected_end": "2025-11-25T17:00:00Z",
        "description": "Kabelbreuk door graafwerkzaamheden.",
    }),
    "outage_updated": envelope("outage.updated", {
        "outage_id": "out-4711",
        "expected_end": "2025-11-25T19:30:00+00:00",
        "areas": ["1012", "3511AB"],
    }),
    "outage_resolved": envelope("outage.resolved", {
        "outage_id": "out-4711",
        "resolved_at": "2025-11-25T16:40:00Z",
    }),
    "order_delayed": envelope("order.delayed", {
        "order_id": "WS-100234",
        "old_eta": "2025-11-25",
        "new_eta": "2025-11-28",
        "reason": "Drukte bij de vervoerder",
    }),
    "order_shipped": envelope("order.shipped", {
        "order_id": "WS-100234",
        "carrier": "PostNL",
        "tracking_url": "https://jouw.postnl.nl/t/3SABC1234567",
        "eta": "2025-11-28",
    }),
    "cart_reminder": envelope("cart.updated", {
        "cart_id": "cart-88",
        "items": [
            {"sku": "USB-C-1M", "name": "Oplaadkabel USB-C", "qty": 1, "unit_price": 4.5},
            {"sku": "SOK-TJ", "name": "Tom & Jerry sokken", "qty": 2, "unit_price": "4.00"},
        ],
        "total": 12.5,
        "currency": "EUR",
        "checkout_url": "https://shop.example.nl/checkout/cart-88",
    }),
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES, brand="Forewarn", status_url="https://status.example.nl")


def render(renderer, channel, locale, template, event=None, **customer_changes) -> Rendered:
    return renderer.render(
        channel, locale, template,
        event=event or EVENTS[template],
        customer=customer(locale, **customer_changes),
    )


def is_gsm7(text: str) -> bool:
    return set(text) <= GSM7_BASIC | GSM7_EXTENSION


# --------------------------------------------------------------------------
# The template folder itself


def test_template_folder_is_clean(renderer):
    assert renderer.check_syntax() == []


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", ALL)
@pytest.mark.parametrize("channel", sorted(CHANNEL_PARTS))
def test_every_template_exists(renderer, channel, locale, template):
    assert renderer.missing(channel, locale, template) == []


def test_sms_template_sources_are_gsm7():
    for path in sorted([*(TEMPLATES / "sms").rglob("*.j2"), *(TEMPLATES / "_lib").rglob("*.j2")]):
        text = path.read_text(encoding="utf-8")
        assert is_gsm7(text), f"{path}: {sorted(set(text) - GSM7_BASIC - GSM7_EXTENSION)}"


def test_html_has_no_images_or_tracking():
    for path in sorted(TEMPLATES.rglob("*.html.j2")):
        text = path.read_text(encoding="utf-8").lower()
        assert "<img" not in text and "<script" not in text and "url(" not in text, path


# --------------------------------------------------------------------------
# Every template in every locale


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", ALL)
def test_renders_everything(renderer, locale, template):
    sms = render(renderer, "sms", locale, template)
    assert sms.subject is None and sms.html is None
    assert sms.segments == count_segments(sms.body)
    assert "\n" not in sms.body and "  " not in sms.body
    assert is_gsm7(sms.body), sms.body
    assert sms.segments.segments == 1, (sms.segments, sms.body)

    mail = render(renderer, "email", locale, template)
    assert mail.segments is None
    assert mail.subject and "\n" not in mail.subject and mail.subject == mail.subject.strip()
    assert mail.body.startswith("Beste Anne-Marie," if locale == "nl" else "Hello Anne-Marie,")
    assert "Forewarn" in mail.body
    assert "\n\n\n" not in mail.body
    assert mail.html.startswith("<!DOCTYPE html>") and f'<html lang="{locale}">' in mail.html
    assert mail.html.rstrip().endswith("</html>")
    for part in (sms.body, mail.subject, mail.body, mail.html):
        assert "None" not in part and "{{" not in part and "{%" not in part


FACTS = [
    # (channel, locale, template, substrings that must appear in subject/body/html)
    ("sms", "nl", "outage_started", ["Forewarn:", "internetstoring", "dinsdag 18:00", "Je hoeft niet te bellen", "https://status.example.nl"]),
    ("sms", "en", "outage_started", ["Forewarn:", "internet outage", "Tuesday 18:00", "No need to call", "https://status.example.nl"]),
    ("sms", "nl", "outage_updated", ["storing", "dinsdag 20:30"]),
    ("sms", "en", "outage_updated", ["outage", "Tuesday 20:30"]),
    ("sms", "nl", "outage_resolved", ["storing", "opgelost"]),
    ("sms", "en", "outage_resolved", ["outage", "is over"]),
    ("sms", "nl", "order_delayed", ["WS-100234", "Nieuwe verwachte bezorgdatum: vrijdag 28 november", "Reden: Drukte bij de vervoerder."]),
    ("sms", "en", "order_delayed", ["WS-100234", "New expected delivery date: Friday 28 November"]),
    ("sms", "nl", "order_shipped", ["PostNL", "vrijdag 28 november", "https://jouw.postnl.nl/t/3SABC1234567"]),
    ("sms", "en", "order_shipped", ["PostNL", "Friday 28 November", "https://jouw.postnl.nl/t/3SABC1234567"]),
    ("sms", "nl", "cart_reminder", ["3 artikelen", "€ 12,50", "https://shop.example.nl/checkout/cart-88"]),
    ("sms", "en", "cart_reminder", ["3 items", "€12.50", "https://shop.example.nl/checkout/cart-88"]),
    ("email", "nl", "outage_started", ["Internetstoring in je buurt", "1012, 3511AB", "dinsdag 25 november om 18:00",
                                       "Kabelbreuk door graafwerkzaamheden.", "Je hoeft ons niet te bellen"]),
    ("email", "en", "outage_started", ["Internet outage in your area", "There is an internet outage", "1012, 3511AB",
                                       "Tuesday 25 November at 18:00", "no need to call us"]),
    ("email", "nl", "outage_updated", ["Update", "dinsdag 25 november om 20:30"]),
    ("email", "en", "outage_updated", ["Update", "Tuesday 25 November at 20:30"]),
    ("email", "nl", "outage_resolved", ["Opgelost", "dinsdag 25 november om 17:40", "Sorry voor het ongemak"]),
    ("email", "en", "outage_resolved", ["Resolved", "Tuesday 25 November at 17:40", "Sorry for the inconvenience"]),
    ("email", "nl", "order_delayed", ["WS-100234", "Nieuwe verwachte bezorgdatum: vrijdag 28 november", "dinsdag 25 november", "Sorry"]),
    ("email", "en", "order_delayed", ["WS-100234", "New expected delivery date: Friday 28 November", "Tuesday 25 November", "sorry"]),
    ("email", "nl", "order_shipped", ["WS-100234", "PostNL", "vrijdag 28 november", "https://jouw.postnl.nl/t/3SABC1234567"]),
    ("email", "en", "order_shipped", ["WS-100234", "PostNL", "Friday 28 November", "https://jouw.postnl.nl/t/3SABC1234567"]),
    ("email", "nl", "cart_reminder", ["1 x Oplaadkabel USB-C à € 4,50", "2 x Tom & Jerry sokken à € 4,00", "Totaal: € 12,50"]),
    ("email", "en", "cart_reminder", ["1 x Oplaadkabel USB-C at €4.50 each", "Total: €12.50"]),
]


@pytest.mark.parametrize(("channel", "locale", "template", "facts"), FACTS, ids=lambda v: v if isinstance(v, str) else "")
def test_key_facts(renderer, channel, locale, template, facts):
    out = render(renderer, channel, locale, template)
    text = "\n".join(p for p in (out.subject, out.body) if p)
    for fact in facts:
        assert fact.lower() in text.lower(), f"{fact!r} not in:\n{text}"


# --------------------------------------------------------------------------
# The hard constraint: every outage SMS is one GSM-7 segment


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(
    ("template", "service"),
    [(t, s) for t in OUTAGES for s in SERVICES + (None,) if not (t == "outage_started" and s is None)],
)
@pytest.mark.parametrize("with_end", [True, False])
def test_outage_sms_fits_one_segment(renderer, locale, template, service, with_end):
    """Every service, every weekday name, with and without an expected end."""
    event = copy.deepcopy(EVENTS[template])
    data = event["data"]
    if service is None:
        data.pop("service", None)  # optional after outage.started
    else:
        data["service"] = service
    if not with_end:
        data.pop("expected_end", None)
    for day in range(24, 31):  # every weekday name, long and short
        if "expected_end" in data:
            data["expected_end"] = f"2025-11-{day}T17:00:00Z"
        sms = render(renderer, "sms", locale, template, event=event)
        assert sms.segments.encoding == "GSM-7", sms.body
        assert sms.segments.segments == 1, (sms.segments.units, sms.body)


def test_outage_sms_without_expected_end_is_honest(renderer):
    event = copy.deepcopy(EVENTS["outage_started"])
    del event["data"]["expected_end"]
    assert "hersteltijd nog onbekend" in render(renderer, "sms", "nl", "outage_started", event=event).body
    assert "don't know yet" in render(renderer, "sms", "en", "outage_started", event=event).body
    mail = render(renderer, "email", "nl", "outage_started", event=event)
    assert "weten we nog niet" in mail.body and "laten het je weten" in mail.body
    assert "We don't know yet" in render(renderer, "email", "en", "outage_started", event=event).body


def test_long_delay_reason_is_left_out_of_the_sms(renderer):
    event = copy.deepcopy(EVENTS["order_delayed"])
    event["data"]["reason"] = "Door een storing in het sorteercentrum van de vervoerder lopen alle zendingen vertraging op"
    sms = render(renderer, "sms", "nl", "order_delayed", event=event)
    assert "Reden" not in sms.body and sms.segments.segments == 1
    assert "sorteercentrum" in render(renderer, "email", "nl", "order_delayed", event=event).body


# --------------------------------------------------------------------------
# Escaping


def test_html_escapes_customer_and_event_data(renderer):
    nasty = "<script>alert(1)</script> Jansen"
    for locale in LOCALES:
        for template in ALL:
            mail = render(renderer, "email", locale, template, name=nasty)
            assert "<script>" not in mail.html, (locale, template)
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    cart = render(renderer, "email", "nl", "cart_reminder")
    assert "Tom &amp; Jerry" in cart.html and "Tom & Jerry" not in cart.html


def test_text_and_sms_carry_no_html_entities(renderer):
    for locale in LOCALES:
        for template in ALL:
            for channel in CHANNEL_PARTS:
                out = render(renderer, channel, locale, template, name="Anne-Marie O'Brien")
                for part in (out.subject, out.body):
                    if part:
                        assert "&#" not in part and "&amp;" not in part and "&lt;" not in part, part
    assert "Tom & Jerry" in render(renderer, "email", "en", "cart_reminder").body
    assert "O&#39;Brien" not in render(renderer, "email", "nl", "outage_started", name="O'Brien").body


def test_autoescape_only_for_html_templates(renderer):
    auto = renderer.env.autoescape
    assert auto("email/nl/outage_started.html.j2") is True
    assert auto("email/nl/outage_started.text.j2") is False
    assert auto("sms/nl/outage_started.body.j2") is False


def test_unknown_service_value_is_not_echoed(renderer):
    event = copy.deepcopy(EVENTS["outage_started"])
    event["data"]["service"] = "<b>gas</b>"
    mail = render(renderer, "email", "nl", "outage_started", event=event)
    assert "<b>" not in mail.html and "gas" not in mail.body


# --------------------------------------------------------------------------
# Filters


def filt(renderer, source: str, locale: str = "nl", tz: str = "Europe/Amsterdam", **values) -> str:
    return renderer.env.from_string(source).render(locale=locale, tz=tz, **values)


@pytest.mark.parametrize(("locale", "expected"), [("nl", "€ 12,50"), ("en", "€12.50")])
def test_money(renderer, locale, expected):
    assert filt(renderer, "{{ v|money }}", locale, v=12.5) == expected
    assert filt(renderer, "{{ v|money('EUR') }}", locale, v="12.50") == expected


def test_money_thousands_and_plain_spaces(renderer):
    assert filt(renderer, "{{ v|money }}", "nl", v=1234.5) == "€ 1.234,50"
    assert filt(renderer, "{{ v|money }}", "en", v=1234.5) == "€1,234.50"
    assert "\xa0" not in filt(renderer, "{{ v|money('USD') }}", "nl", v=3)


@pytest.mark.parametrize(
    ("source", "locale", "expected"),
    [
        ("{{ v|datetime }}", "nl", "dinsdag 25 november 14:00"),
        ("{{ v|datetime }}", "en", "Tuesday 25 November 14:00"),
        ("{{ v|date }}", "nl", "dinsdag 25 november"),
        ("{{ v|date }}", "en", "Tuesday 25 November"),
        ("{{ v|time }}", "nl", "14:00"),
        ("{{ v|weekday_time }}", "nl", "dinsdag 14:00"),
        ("{{ v|weekday_time }}", "en", "Tuesday 14:00"),
    ],
)
def test_date_filters(renderer, source, locale, expected):
    assert filt(renderer, source, locale, v="2025-11-25T13:00:00Z") == expected
    assert filt(renderer, source, locale, v=datetime(2025, 11, 25, 13, tzinfo=timezone.utc)) == expected
    assert filt(renderer, source, locale, v=datetime(2025, 11, 25, 13)) == expected  # naive = UTC


def test_date_filters_follow_the_customer_zone(renderer):
    assert filt(renderer, "{{ v|time }}", v="2025-07-01T12:00:00Z") == "14:00"  # summer time
    assert filt(renderer, "{{ v|time }}", tz="Europe/London", v="2025-07-01T12:00:00Z") == "13:00"
    assert filt(renderer, "{{ v|date }}", v="2025-11-25T23:30:00Z") == "woensdag 26 november"
    assert filt(renderer, "{{ v|date }}", v="2025-11-28") == "vrijdag 28 november"
    assert filt(renderer, "{{ v|datetime }}", "en", v="2025-11-28") == "Friday 28 November"


def test_name_and_area_filters(renderer):
    assert filt(renderer, "{{ v|first_name }}", v="Jan de Vries") == "Jan"
    assert filt(renderer, "[{{ v|first_name }}]", v="  ") == "[]"
    assert filt(renderer, "{{ v|areas }}", v=["1012", "3511AB"]) == "1012, 3511AB"
    assert filt(renderer, "{{ v|areas }}", v="1012") == "1012"


# --------------------------------------------------------------------------
# Errors


def write(root: Path, name: str, source: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


def test_undefined_variable_names_file_and_line(tmp_path):
    path = write(tmp_path, "sms/nl/oops.body.j2", "Hallo\n{{ event.data.order_id }}\n")
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path).render("sms", "nl", "oops", event={"data": {}}, customer={})
    err = caught.value
    assert isinstance(err, ConfigError)
    assert err.file == str(path) and err.line == 2
    assert "order_id" in err.message
    assert str(err).startswith(f"{path}:2: ")


def test_missing_required_field_in_a_real_template(renderer):
    event = copy.deepcopy(EVENTS["order_shipped"])
    del event["data"]["carrier"]
    with pytest.raises(TemplateError) as caught:
        render(renderer, "sms", "nl", "order_shipped", event=event)
    assert caught.value.file.endswith("sms/nl/order_shipped.body.j2")
    assert "carrier" in caught.value.message


def test_sandbox_escape_is_refused(tmp_path):
    write(tmp_path, "sms/nl/evil.body.j2", "x\n{{ ''.__class__.__mro__ }}")
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path).render("sms", "nl", "evil", event={}, customer={})
    assert caught.value.message.startswith("unsafe template:")
    assert caught.value.line == 2


def test_sandbox_is_immutable(tmp_path):
    write(tmp_path, "sms/nl/mutate.body.j2", "{{ customer.update({'name': 'x'}) }}")
    cust = {"name": "Jan"}
    with pytest.raises(TemplateError, match="unsafe"):
        Renderer(tmp_path).render("sms", "nl", "mutate", event={}, customer=cust)
    assert cust == {"name": "Jan"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% for i in range(5000) %}x{% endfor %}", "range"),
        ("{{ 'x' * 1000000 }}", "repetition"),
        ("{% for i in range(1000) %}{% for j in range(1000) %}xxxxxxxxxx{% endfor %}{% endfor %}", "output exceeds"),
        ("{% for i in range(1000) %}{% for j in range(1000) %}{% set _ = range(1) %}{% endfor %}{% endfor %}", "calls"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion|calls"),
        # No output and no calls inside: without a step budget these ran for hours.
        ("{% set l = [0] * 1000 %}{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}"
         "{% endfor %}", "loop steps"),
        ("{% set r = range(1000) %}{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}{% endfor %}"
         "{% endfor %}", "loop steps"),
    ],
)
def test_runaway_templates_are_stopped(tmp_path, source, message):
    write(tmp_path, "sms/nl/loop.body.j2", source)
    with pytest.raises(TemplateError, match=message):
        Renderer(tmp_path).render("sms", "nl", "loop", event={}, customer={})


def test_loops_within_the_step_budget_render(tmp_path):
    write(tmp_path, "sms/nl/items.body.j2", "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
                                           "{% for item in event.data['items'] %}{{ loop.index }}:{{ item }} {% endfor %}")
    rendered = Renderer(tmp_path).render("sms", "nl", "items", event={"data": {"items": ["a", "b"]}}, customer={})
    assert rendered.body == "1:a 2:b"


def test_a_render_past_its_cpu_time_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(render_module, "RENDER_SECONDS", 0.001)
    write(tmp_path, "sms/nl/slow.body.j2", "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}")
    with pytest.raises(TemplateError, match="ran for more than 0.001 s"):
        Renderer(tmp_path).render("sms", "nl", "slow", event={}, customer={})


def test_the_render_budget_counts_cpu_time_not_time_spent_waiting_for_a_core():
    started = render_module._clock()
    time.sleep(0.3)
    assert render_module._clock() - started < 0.05


def test_missing_template(tmp_path):
    renderer = Renderer(tmp_path)
    write(tmp_path, "email/nl/half.subject.j2", "Onderwerp")
    assert renderer.missing("email", "nl", "half") == ["email/nl/half.text.j2", "email/nl/half.html.j2"]
    with pytest.raises(TemplateError, match="template not found: email/nl/half.text.j2"):
        renderer.render("email", "nl", "half", event={}, customer={})
    with pytest.raises(TemplateError, match="unknown channel"):
        renderer.render("fax", "nl", "half", event={}, customer={})


def test_check_syntax_reports_file_and_line(tmp_path):
    write(tmp_path, "sms/nl/good.body.j2", "{{ brand }}: hallo")
    broken = write(tmp_path, "sms/nl/broken.body.j2", "regel 1\nregel 2\n{% if event.data.x %}\nnooit gesloten\n")
    bad_filter = write(tmp_path, "sms/en/filter.body.j2", "ok\n{{ brand|shout }}")
    orphan = write(tmp_path, "email/nl/orphan.html.j2", '{% extends "email/nl/_nope.html.j2" %}')
    problems = Renderer(tmp_path).check_syntax()
    found = {(p.file, p.line) for p in problems}
    assert all(isinstance(p, TemplateError) for p in problems)
    assert (str(broken), 4) in found or (str(broken), 5) in found
    assert (str(bad_filter), 2) in found
    assert (str(orphan), 1) in found
    assert len(problems) == 3
    assert any("shout" in p.message for p in problems)


def test_filter_failure_on_bad_data_is_a_template_error(tmp_path):
    write(tmp_path, "sms/nl/when.body.j2", "{{ event.data.at|datetime }}")
    with pytest.raises(TemplateError, match="gisteren"):
        Renderer(tmp_path).render("sms", "nl", "when", event={"data": {"at": "gisteren"}}, customer={})


def test_compile_expression(renderer):
    condition = renderer.compile_expression("event.type == 'outage.started' and customer.critical")
    assert condition(event={"type": "outage.started"}, customer={"critical": True}) is True
    assert condition(event={"type": "order.shipped"}, customer={"critical": True}) is False
    with pytest.raises(TemplateError, match="invalid expression"):
        renderer.compile_expression("event.type ==")


def test_rendered_is_frozen(renderer):
    out = render(renderer, "sms", "nl", "outage_started")
    with pytest.raises(AttributeError):
        out.body = "x"  # type: ignore[misc]


def test_extra_context(tmp_path):
    write(tmp_path, "sms/nl/x.body.j2", "{{ brand }} {{ rule }} {{ locale }} {{ tz }}")
    out = Renderer(tmp_path, brand="Acme").render(
        "sms", "nl", "x", event={}, customer={"timezone": "Europe/London"}, extra={"rule": "r1"}
    )
    assert out.body == "Acme r1 nl Europe/London"
