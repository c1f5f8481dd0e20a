"""``forewarn rules check`` as ops run it, on each bad template or condition that used to pass it, or kill it:
it must say no (exit 1) with file and line, within 10 s of CPU and 500 MB."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.settings import ROOT
from tests.conftest import write

FOREWARN = Path(sys.executable).with_name("forewarn")
LIMIT = 500 * 2**20
CPU_SECONDS = 10  # the bound; the wall clock only catches a hang, since a loaded machine stretches it
HANG_SECONDS = 120

RULES = """\
version: 1
rules:
  - id: order-delayed
    on: order.delayed
    category: service
    when: "{when}"
    channels: [sms]
    template: order_delayed
"""

BAD_TEMPLATES = {
    "lipsum": "{{ lipsum(200000)|length }}",
    "replace in a 99,000-step loop": "{% set ns = namespace(s='ab') %}{% for i in range(99) %}"
                                     "{% for j in range(1000) %}{% set ns.s = ns.s|replace('a', 'aa') %}"
                                     "{% endfor %}{% endfor %}{{ ns.s|length }}",
    "center": "{{ 'a'|center(1000000000) }}",
    "%": "{{ '%0999999999d' % 1 }}",
    "__class__": "{{ customer.__class__ }}",
    "include /etc/passwd": "{% include '/etc/passwd' %}",
    "extends outside": "{% extends '../rules.yaml' %}",  # the rules file itself, beside the folder
    "undefined variable": "{{ nosuchvar }}",
}
BAD_CONDITIONS = {
    "lipsum": "lipsum(200000)|length > 0",
    "center": "'a'|center(1000000000) == 'a'",
    "undefined": "nosuch > 0",
}


def _limit_memory_and_cpu() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))  # past it the kernel kills the check


def rules_check(rules: Path, templates: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOREWARN_TEMPLATES": str(templates), "COLUMNS": "400"}
    result = subprocess.run([str(FOREWARN), "rules", "check", str(rules)], env=env,
                            preexec_fn=_limit_memory_and_cpu, capture_output=True, text=True, timeout=HANG_SECONDS)
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: over {CPU_SECONDS} s of CPU?"
    return result


@pytest.fixture
def templates(tmp_path):
    return shutil.copytree(ROOT / "templates", tmp_path / "templates")


@pytest.mark.parametrize("source", BAD_TEMPLATES.values(), ids=BAD_TEMPLATES.keys())
def test_bad_template_is_refused_with_file_and_line(tmp_path, templates, source):
    bad = write(templates / "sms/nl/order_delayed.body.j2", "{{ brand }}:\n" + source + "\n")
    rules = write(tmp_path / "rules.yaml", RULES.replace('    when: "{when}"\n', ""))
    result = rules_check(rules, templates)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{bad}:2: " in result.stderr, result.stderr
    assert "MemoryError" not in result.stderr


@pytest.mark.parametrize("when", BAD_CONDITIONS.values(), ids=BAD_CONDITIONS.keys())
def test_bad_condition_is_refused_with_file_and_line(tmp_path, templates, when):
    rules = write(tmp_path / "rules.yaml", RULES.replace("{when}", when.replace('"', '\\"')))
    result = rules_check(rules, templates)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{rules}:6: rule 'order-delayed': condition" in result.stderr, result.stderr


def test_shipped_rules_pass_within_the_same_limits():
    result = rules_check(ROOT / "config" / "rules.yaml", ROOT / "templates")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": ok")
