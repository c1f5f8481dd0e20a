"""Worker start-up checks what ``forewarn rules check`` checks: a template that cannot render stops it."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from streams.core.config import check_config, load_config
from streams.errors import RulesInvalid
from streams.settings import ROOT, Settings
from tests.conftest import write


def test_shipped_rules_and_templates_pass():
    assert check_config(Settings()) == []


def test_start_up_refuses_an_unsafe_template_even_one_no_rule_uses(tmp_path):
    templates = shutil.copytree(ROOT / "templates", tmp_path / "templates")
    bad = write(templates / "sms/nl/spare.body.j2", "ok\n{% include '/etc/passwd' %}\n")
    with pytest.raises(RulesInvalid) as caught:
        load_config(replace(Settings(), template_dir=templates))
    assert str(caught.value) == f"{bad}:2: includes '/etc/passwd', outside the templates folder"


def test_start_up_refuses_a_template_over_budget(tmp_path):
    templates = shutil.copytree(ROOT / "templates", tmp_path / "templates")
    bad = write(templates / "email/en/order_shipped.text.j2", "{{ lipsum(200000) }}")
    with pytest.raises(RulesInvalid) as caught:
        load_config(replace(Settings(), template_dir=templates))
    assert [(p.file, p.line) for p in caught.value.problems] == [(str(bad), 1)]
    assert "over budget" in caught.value.problems[0].message
