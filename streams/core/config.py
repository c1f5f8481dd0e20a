"""What the core needs loaded before the first event: schemas, templates, rules."""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.render import Renderer
from streams.core.rules import RuleSet, RulesWarning, report_rules
from streams.core.sms_lint import SmsFit
from streams.core.unsubscribe import UnsubscribeLinks, links_for
from streams.errors import ConfigError, RulesInvalid
from streams.core.events import Schemas
from streams.settings import Settings


@dataclass(frozen=True)
class CoreConfig:
    schemas: Schemas
    renderer: Renderer
    rules: RuleSet
    links: UnsubscribeLinks | None = None  # None: no FOREWARN_UNSUBSCRIBE_SECRET


def renderer_for(settings: Settings) -> Renderer:
    return Renderer(settings.template_dir, brand=settings.brand, status_url=settings.status_url)


@dataclass(frozen=True)
class ConfigReport:
    """What ``forewarn rules check`` prints: every problem, every warning, each SMS template's worst case."""

    problems: list[ConfigError]
    warnings: list[RulesWarning]
    sms: list[SmsFit]
    config: CoreConfig | None  # None when there are problems


def load_config(settings: Settings) -> CoreConfig:
    """Everything checked at start-up, as ``forewarn rules check`` does; raises RulesInvalid listing every problem."""
    report = report_config(settings)
    if report.problems:
        raise RulesInvalid(report.problems)
    assert report.config is not None
    return report.config


def check_config(settings: Settings) -> list[ConfigError]:
    """Every problem in the rules and templates."""
    return report_config(settings).problems


def report_config(settings: Settings) -> ConfigReport:
    """Compile and inspect every template, then check the rules (conditions and templates tried on samples)."""
    schemas = Schemas(settings.schema_dir)
    renderer = renderer_for(settings)
    problems: list[ConfigError] = list(renderer.check_syntax())
    rules = report_rules(settings.rules_file, renderer, schemas)
    seen = {str(p) for p in problems}
    problems += [p for p in rules.problems if str(p) not in seen]
    config = None if problems else CoreConfig(schemas, renderer, rules.ruleset, links_for(settings))
    return ConfigReport(problems, rules.warnings, rules.sms, config)
