"""rules check measures each SMS template's worst case: encoding, the character that forces UCS-2, segments."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from streams.core.render import Renderer
from streams.core.rules import report_rules
from streams.core.segments import forcing_character
from streams.settings import ROOT
from tests.conftest import write

RULES = """\
version: 1
defaults:
  sms_max_segments: {most}
rules:
  - id: outage-started
    on: outage.started
    category: service
    channels: [sms]
    template: outage_started
"""


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    return folder


def lint(tmp_path, templates, schemas, most=3):
    path = write(tmp_path / "rules.yaml", textwrap.dedent(RULES.format(most=most)))
    return report_rules(path, Renderer(templates), schemas)


def test_the_shipped_outage_sms_fits_one_gsm7_segment_with_no_warning(tmp_path, templates, schemas):
    report = lint(tmp_path, templates, schemas)
    assert report.problems == [] and report.warnings == []
    fits = {(fit.template, fit.locale): fit for fit in report.sms}
    assert set(fits) == {("outage_started", "nl"), ("outage_started", "en")}
    assert all(fit.segments.segments == 1 and fit.segments.encoding == "GSM-7" for fit in fits.values())


def test_one_dutch_letter_outside_gsm7_makes_it_ucs2_and_names_the_word(tmp_path, templates, schemas):
    body = templates / "sms" / "nl" / "outage_started.body.j2"
    body.write_text(body.read_text().rstrip("\n") + " Je wordt geïnformeerd.\n")
    report = lint(tmp_path, templates, schemas)
    nl = next(fit for fit in report.sms if fit.locale == "nl")
    assert nl.segments.encoding == "UCS-2" and nl.segments.segments == 3
    last_line = len(body.read_text().splitlines())
    assert nl.forced_by == f"'ï' in the template's text (line {last_line}: geïnformeerd.)"
    [warning] = report.warnings
    assert warning.file == str(body) and "3 segment(s) at most, UCS-2, forced by 'ï'" in warning.message
    refused = lint(tmp_path, templates, schemas, most=2)
    [problem] = refused.problems
    assert problem.file == str(body) and "defaults.sms_max_segments is 2" in problem.message
    assert refused.ruleset is None


def test_the_worst_case_comes_from_the_largest_record_the_schema_allows(tmp_path, templates, schemas):
    body = templates / "sms" / "en" / "outage_started.body.j2"
    body.write_text("{{ brand }}: {{ outage.description }}\n")  # free text up to the schema's maxLength
    report = lint(tmp_path, templates, schemas, most=10)
    en = next(fit for fit in report.sms if fit.locale == "en")
    assert en.sample == "largest outage.started" and en.segments.segments > 1
    assert en.forced_by is None or "data" in en.forced_by


@pytest.mark.parametrize(("text", "forced"), [("Hallo", None), ("geïnformeerd", "ï"), ("€ 12,50 [x]", None),
                                              ("Zoë 😀", "ë")])
def test_the_character_that_forces_ucs2(text, forced):
    assert forcing_character(text) == forced
