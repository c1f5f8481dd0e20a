"""What the core needs loaded before the first event: schemas, templates, rules."""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.render import Renderer
from streams.core.rules import RuleSet, check_rules
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


def load_config(settings: Settings) -> CoreConfig:
    """Everything checked at start-up, as ``forewarn rules check`` does; raises RulesInvalid listing every problem."""
    schemas, renderer, ruleset, problems = _checked(settings)
    if problems:
        raise RulesInvalid(problems)
    assert ruleset is not None
    return CoreConfig(schemas, renderer, ruleset, links_for(settings))


def check_config(settings: Settings) -> list[ConfigError]:
    """Every problem in the rules and templates, for ``forewarn rules check``."""
    return _checked(settings)[3]


def _checked(settings: Settings) -> tuple[Schemas, Renderer, RuleSet | None, list[ConfigError]]:
    """Compile and inspect every template, then check the rules (conditions and templates tried on samples)."""
    schemas = Schemas(settings.schema_dir)
    renderer = renderer_for(settings)
    problems: list[ConfigError] = list(renderer.check_syntax())
    ruleset, rule_problems = check_rules(settings.rules_file, renderer, schemas)
    seen = {str(p) for p in problems}
    problems += [p for p in rule_problems if str(p) not in seen]
    return schemas, renderer, ruleset, problems
