"""Rules from ``config/rules.yaml``: load, check and match.

The file is read with ruamel.yaml in YAML 1.2 mode, so ``on:`` stays the string
"on" (PyYAML's YAML 1.1 would turn it into True) and every node keeps its line.
A rules file is refused as a whole: every problem is reported with file, line
and a plain message, and nothing starts until all are fixed.

Checks, in order: the JSON Schema in ``schemas/rules.json``; unique ids; each
``when:`` parses as a sandboxed Jinja2 expression; every template exists for
every channel and locale the rule can use; every ``event.…`` and ``customer.…``
field named in a condition or template exists in the schema of the events the
rule listens to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Callable

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jsonschema.exceptions import best_match

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from streams.core.policy import Cap, QuietHours, parse_duration
from streams.core.render import CHANNEL_PARTS, Renderer
from streams.errors import RulesError, RulesInvalid, TemplateError
from streams.core.events import SCHEMA_BASE, Schemas

LOCALES = ("nl", "en")
Resolver = Any  # referencing.Resolver, which the package does not export
TIERS = ("basic", "standard", "premium")
DEFAULT_KEYS = {"order": "data.order_id", "cart": "data.cart_id", "outage": "data.outage_id"}
# Names that jinja resolves as dict methods before dict keys: event.data.items is the method.
DICT_METHODS = frozenset(dir(dict))


@dataclass(frozen=True)
class TierPlan:
    """How a rule reaches one tier: on or off, which channels, which template, how long to wait."""

    enabled: bool
    channels: tuple[str, ...]
    channel_mode: str
    template: str
    wait: timedelta | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    events: tuple[str, ...]
    audience: str
    channels: tuple[str, ...]
    channel_mode: str
    template: str
    priority: int
    key: str
    line: int
    enabled: bool = True
    when: str | None = None
    condition: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    tiers: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)
    wait: timedelta | None = None
    coalesce: timedelta | None = None
    cancel_on: tuple[tuple[str, str], ...] = ()
    urgent: bool = False
    essential: bool = False
    quiet_hours: QuietHours | None = None
    cap: Cap | None = None
    min_change: timedelta | None = None
    min_interval: timedelta | None = None

    @property
    def holds(self) -> bool:
        """Whether a trigger waits in the pending table rather than being sent at once."""
        return bool(self.wait or self.coalesce or any(
            "wait" in override for override in self.tiers.values()))

    def plan_for(self, tier: str) -> TierPlan:
        plans = self.__dict__.get("_plans")
        if plans is None:  # computed once per tier: a fan-out asks for every customer
            plans = {}
            object.__setattr__(self, "_plans", plans)
        plan = plans.get(tier)
        if plan is None:
            plan = plans[tier] = self._plan_for(tier)
        return plan

    def _plan_for(self, tier: str) -> TierPlan:
        override = self.tiers.get(tier, {})
        return TierPlan(
            enabled=override.get("enabled", True),
            channels=tuple(override.get("channels", self.channels)),
            channel_mode=override.get("channel_mode", self.channel_mode),
            template=override.get("template", self.template),
            wait=parse_duration(override["wait"]) if "wait" in override else self.wait,
        )

    def cancelled_by(self, event_type: str) -> str | None:
        """'key' or 'customer' when ``event_type`` cancels this rule's pending messages."""
        for cancel_type, match in self.cancel_on:
            if cancel_type == event_type:
                return match
        return None

    def plans(self) -> list[TierPlan]:
        return [self.plan_for(tier) for tier in TIERS]

    def key_of(self, event: dict[str, Any]) -> str:
        value: Any = event
        for part in self.key.removeprefix("event.").split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return str(value) if value is not None else event["id"]


DEFAULT_QUIET_HOURS = QuietHours(time(21, 0), time(8, 0))
DEFAULT_BUDGET = Cap(3, timedelta(days=7))


@dataclass
class RuleSet:
    rules: list[Rule]
    file: str
    default_locale: str = "nl"
    budget: Cap | None = DEFAULT_BUDGET
    by_event: dict[str, list[Rule]] = field(init=False)
    cancelling: dict[str, list[Rule]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_event, self.cancelling = {}, {}
        for rule in sorted(self.rules, key=lambda r: -r.priority):
            if rule.enabled:
                for event_type in rule.events:
                    self.by_event.setdefault(event_type, []).append(rule)
                for event_type, _ in rule.cancel_on:
                    self.cancelling.setdefault(event_type, []).append(rule)

    def matching(self, event_type: str) -> list[Rule]:
        return self.by_event.get(event_type, [])

    def cancelled_by(self, event_type: str) -> list[Rule]:
        return self.cancelling.get(event_type, [])

    @cached_property
    def history_window(self) -> timedelta:
        """How long sent messages must be remembered for every cap to be judged."""
        windows = [r.cap.per for r in self.rules if r.cap] + ([self.budget.per] if self.budget else [])
        windows += [r.min_interval for r in self.rules if r.min_interval]
        return max(windows, default=timedelta(days=7))

    def get(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def load_rules(path: Path, renderer: Renderer, schemas: Schemas) -> RuleSet:
    """Load and check a rules file; raise RulesInvalid listing every problem."""
    ruleset, problems = check_rules(path, renderer, schemas)
    if problems:
        raise RulesInvalid(problems)
    assert ruleset is not None
    return ruleset


def check_rules(path: Path, renderer: Renderer, schemas: Schemas) -> tuple[RuleSet | None, list[RulesError]]:
    return _Checker(path, renderer, schemas).run()


class _Checker:
    def __init__(self, path: Path, renderer: Renderer, schemas: Schemas):
        self.path = path
        self.file = str(path)
        self.renderer = renderer
        self.schemas = schemas
        self.problems: list[RulesError] = []

    def problem(self, message: str, line: int | None) -> None:
        self.problems.append(RulesError(message, self.file, line))

    def run(self) -> tuple[RuleSet | None, list[RulesError]]:
        document = self._read()
        if document is None:
            return None, self.problems
        for error in self.schemas.validator("rules.json").iter_errors(document):
            if error.validator in ("oneOf", "anyOf") and error.context:
                error = best_match(error.context)
            where = "/".join(str(p) for p in error.absolute_path)
            self.problem(f"{where or 'top level'}: {error.message}", _line_of(document, list(error.absolute_path)))
        if self.problems:
            return None, self.problems
        defaults = document.get("defaults") or {}
        rules = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(document["rules"]):
            line = document["rules"].lc.item(index)[0] + 1
            if raw["id"] in seen:
                self.problem(f"rule id '{raw['id']}' is used twice (first at line {seen[raw['id']]})", line)
                continue
            seen[raw["id"]] = line
            rule = self._rule(raw, line, defaults)
            if rule is not None:
                rules.append(rule)
        if self.problems:
            return None, self.problems
        budget = Cap.parse(defaults["budget"]) if "budget" in defaults else DEFAULT_BUDGET
        return RuleSet(rules, self.file, defaults.get("locale", "nl"), budget), []

    def _read(self) -> Any:
        yaml = YAML(typ="rt")
        yaml.version = (1, 2)
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            self.problem(f"cannot read rules: {exc.strerror}", None)
            return None
        try:
            document = yaml.load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.problem(f"not valid YAML: {exc.problem or exc.context}", mark.line + 1 if mark else None)
            return None
        if not isinstance(document, dict):
            self.problem("the rules file must be a mapping with 'version' and 'rules'", 1)
            return None
        return document

    def _rule(self, raw: Any, line: int, defaults: dict[str, Any]) -> Rule | None:
        def line_of(key: str) -> int:
            return raw.lc.key(key)[0] + 1 if key in raw else line

        events = tuple([raw["on"]] if isinstance(raw["on"], str) else raw["on"])
        families = {e.split(".", 1)[0] for e in events}
        audience = raw.get("audience", "area" if families == {"outage"} else "customer")
        if audience == "area" and families != {"outage"}:
            self.problem(f"rule '{raw['id']}': audience 'area' needs outage events only", line_of("audience"))
        if audience == "customer" and "outage" in families:
            self.problem(f"rule '{raw['id']}': outage events have no customer; use audience 'area'", line_of("audience"))
        if audience == "told" and families != {"outage"}:
            self.problem(f"rule '{raw['id']}': audience 'told' needs outage events only", line_of("audience"))
        key = raw.get("key") or DEFAULT_KEYS[sorted(families)[0]]
        cancel_on = tuple((c, "key") if isinstance(c, str) else (c["on"], c.get("match", "key"))
                          for c in raw.get("cancel_on", ()))
        quiet = raw.get("quiet_hours", defaults.get("quiet_hours"))
        rule = Rule(
            id=raw["id"], events=events, audience=audience,
            channels=tuple(raw["channels"]), channel_mode=raw.get("channel_mode", "first"),
            template=raw["template"], priority=raw.get("priority", defaults.get("priority", 50)),
            key=key, line=line, enabled=raw.get("enabled", True), when=raw.get("when"),
            tiers={tier: dict(value) for tier, value in (raw.get("tiers") or {}).items()},
            wait=_duration(raw, "wait"), coalesce=_duration(raw, "coalesce"), cancel_on=cancel_on,
            urgent=raw.get("urgent", False), essential=raw.get("essential", False),
            quiet_hours=None if quiet is False else (QuietHours.parse(quiet) if quiet else DEFAULT_QUIET_HOURS),
            cap=Cap.parse(raw["cap"]) if "cap" in raw else None,
            min_change=_duration(raw, "min_change"), min_interval=_duration(raw, "min_interval"),
        )
        for cancel_type, match in cancel_on:
            if match == "key" and cancel_type.split(".")[0] != sorted(families)[0] and "key" not in raw:
                self.problem(f"rule '{rule.id}': {cancel_type} cannot carry the key {key}; "
                             "use {on: ..., match: customer} or set key", line_of("cancel_on"))
        if rule.when is not None:
            rule = self._condition(rule, line_of("when"))
        self._templates(rule, line_of)
        return rule

    def _condition(self, rule: Rule, line: int) -> Rule:
        try:
            compiled = self.renderer.compile_expression(rule.when)
            tree = self.renderer.env.parse("{{ (" + rule.when + ") }}")
        except (TemplateSyntaxError, TemplateError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            self.problem(f"rule '{rule.id}': condition does not parse: {message}", line)
            return rule
        for problem in self._field_problems(tree, rule.events):
            self.problem(f"rule '{rule.id}': condition {problem}", line)
        return Rule(**{**rule.__dict__, "condition": compiled})

    def _templates(self, rule: Rule, line_of: Callable[[str], int]) -> None:
        wanted: dict[str, set[tuple[str, str]]] = {}
        for plan in rule.plans():
            wanted.setdefault(plan.template, set()).update((c, loc) for c in plan.channels for loc in LOCALES)
        for template, combinations in wanted.items():
            missing = [name for channel, locale in sorted(combinations)
                       for name in self.renderer.missing(channel, locale, template)]
            if missing:
                line = line_of("template") if template == rule.template else line_of("tiers")
                self.problem(f"rule '{rule.id}': template '{template}' not found "
                             f"(missing {', '.join(missing)})", line)
                continue
            for channel, locale in sorted(combinations):
                self._template_fields(rule, channel, locale, template)

    def _template_fields(self, rule: Rule, channel: str, locale: str, template: str) -> None:
        for part in CHANNEL_PARTS[channel]:
            name = self.renderer.template_name(channel, locale, template, part)
            source, filename, _ = self.renderer.env.loader.get_source(self.renderer.env, name)
            try:
                tree = self.renderer.env.parse(source, name, filename)
            except TemplateSyntaxError as exc:
                self.problems.append(RulesError(f"template syntax: {exc.message}", filename, exc.lineno))
                continue
            for problem, template_line in self._field_problems_with_lines(tree, rule.events):
                self.problems.append(RulesError(
                    f"{problem} (used by rule '{rule.id}', line {rule.line} of {self.file})",
                    filename, template_line))

    def _field_problems(self, tree: nodes.Template, events: tuple[str, ...]) -> list[str]:
        return [problem for problem, _ in self._field_problems_with_lines(tree, events)]

    def _field_problems_with_lines(self, tree: nodes.Template, events: tuple[str, ...]) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        reported: set[str] = set()
        for root, path, line in field_paths(tree):
            for event_type in events:
                schema_name = f"events/{event_type}.json" if root == "event" else "customer.json"
                error = self._resolve(schema_name, path)
                if error:
                    shown = root + "".join(f".{name}" if how == "attr" else f"[{name!r}]" for how, name in path)
                    text = f"uses {shown}: {error}" + (f" in {event_type}" if root == "event" else "")
                    if text not in reported:
                        reported.add(text)
                        found.append((text, line))
        return found

    def _resolve(self, schema_name: str, path: list[tuple[str, str | int]]) -> str | None:
        resolver = self.schemas.registry.resolver(SCHEMA_BASE + schema_name)
        schema = self.schemas.registry.contents(SCHEMA_BASE + schema_name)
        for how, part in path:
            if isinstance(part, int):
                schema, resolver = _deref(schema, resolver)
                schema = schema.get("items", {})
                continue
            properties = _properties(schema, resolver)
            if how == "attr" and part in DICT_METHODS:
                if part in properties:
                    return f"'{part}' is a dict method in templates; write ['{part}'] instead"
                return None  # a method call such as .get(...): the rest is not a field path
            if part not in properties:
                known = ", ".join(sorted(properties)) or "none"
                return f"no field '{part}' (known: {known})"
            schema, resolver = properties[part]
        return None


def _duration(raw: Any, name: str) -> timedelta | None:
    return parse_duration(raw[name]) if name in raw else None


def field_paths(tree: nodes.Node) -> list[tuple[str, list[tuple[str, str | int]], int]]:
    """Every ``event…`` / ``customer…`` chain in a template or expression, as (how, name) steps.

    ``how`` is "attr" for ``a.b`` and "item" for ``a['b']``: jinja looks up
    ``a.items`` as the dict method, ``a['items']`` as the key.
    """
    found = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        path: list[tuple[str, str | int]] = []
        current: nodes.Node = node
        while isinstance(current, (nodes.Getattr, nodes.Getitem)):
            if isinstance(current, nodes.Getattr):
                path.append(("attr", current.attr))
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, (str, int)):
                path.append(("item", current.arg.value))
            else:
                path = []  # a computed index: only what comes before it can be checked
            current = current.node
        if isinstance(current, nodes.Name) and current.name in ("event", "customer"):
            found.append((current.name, list(reversed(path)), node.lineno))
    return found


def _deref(schema: dict[str, Any], resolver: Resolver) -> tuple[dict[str, Any], Resolver]:
    while "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    return schema, resolver


def _properties(schema: dict[str, Any], resolver: Resolver) -> dict[str, tuple[dict[str, Any], Resolver]]:
    """Every property an object schema allows, following $ref and allOf."""
    schema, resolver = _deref(schema, resolver)
    found: dict[str, tuple[dict[str, Any], Resolver]] = {}
    for part in schema.get("allOf", []):
        found.update(_properties(part, resolver))
    for name, sub in schema.get("properties", {}).items():
        found[name] = (sub if isinstance(sub, dict) else {}, resolver)
    return found


def _line_of(document: Any, path: list[Any]) -> int | None:
    node, line = document, 1
    for part in path:
        try:
            if isinstance(part, int):
                line = node.lc.item(part)[0] + 1
            else:
                line = node.lc.key(part)[0] + 1
            node = node[part]
        except (AttributeError, KeyError, IndexError, TypeError):
            break
    return line
