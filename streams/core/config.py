"""What the core needs loaded before the first event: schemas, templates, rules."""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.render import Renderer
from streams.core.rules import RuleSet, check_rules, load_rules
from streams.errors import ConfigError
from streams.core.events import Schemas
from streams.settings import Settings


@dataclass(frozen=True)
class CoreConfig:
    schemas: Schemas
    renderer: Renderer
    rules: RuleSet


def renderer_for(settings: Settings) -> Renderer:
    return Renderer(settings.template_dir, brand=settings.brand, status_url=settings.status_url)


def load_config(settings: Settings) -> CoreConfig:
    """Everything checked at start-up; raises ConfigError (RulesInvalid lists every problem)."""
    schemas = Schemas(settings.schema_dir)
    renderer = renderer_for(settings)
    return CoreConfig(schemas, renderer, load_rules(settings.rules_file, renderer, schemas))


def check_config(settings: Settings) -> list[ConfigError]:
    """Every problem in the rules and templates, for ``forewarn rules check``."""
    schemas = Schemas(settings.schema_dir)
    renderer = renderer_for(settings)
    problems: list[ConfigError] = list(renderer.check_syntax())
    _, rule_problems = check_rules(settings.rules_file, renderer, schemas)
    seen = {str(p) for p in problems}
    problems += [p for p in rule_problems if str(p) not in seen]
    return problems
