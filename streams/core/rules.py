"""Rules from ``config/rules.yaml``: load, check and match.

The file is read with ruamel.yaml in YAML 1.2 mode, so ``on:`` stays the string
"on" (PyYAML's YAML 1.1 would turn it into True) and every node keeps its line.
A rules file is refused as a whole: every problem is reported with file, line
and a plain message, and nothing starts until all are fixed.

Checks, in order: the JSON Schema in ``schemas/rules.json``; unique ids; each
``when:`` parses as a sandboxed Jinja2 expression; every template exists for
every channel and locale the rule can use; every ``event.…`` and ``customer.…``
field named in a condition or template exists in the schema of the events the
rule listens to; nothing in a condition or template is unsafe or undefined.
Then each condition is evaluated, and each template rendered, on sample events
and customers made from the schemas (their example, the largest and the
smallest record they allow; see ``samples``), within the budgets of
streams.core.render: what fails or runs over there would fail in the worker.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Callable
from weakref import WeakKeyDictionary

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from streams.core.consent import MARKETING, SERVICE
from streams.core.cost import Costs
from streams.core.condition_words import bare_name_problem, comparison_problems, repaired, syntax_problem
from streams.core.schema_words import Finding, explain, suggest
from streams.core.outcomes import fact_fingerprint
from streams.core.policy import Budget, Cap, QuietHours, parse_duration
from streams.core.render import CHANNEL_PARTS, Renderer
from streams.core.sms_lint import SmsFit, worst_fit
from streams.errors import ConfigError, RulesError, RulesInvalid, TemplateError
from streams.core.events import SCHEMA_BASE, Schemas

LOCALES = ("nl", "en")
Resolver = Any  # referencing.Resolver, which the package does not export
TIERS = ("basic", "standard", "premium")
DEFAULT_KEYS = {"order": "data.order_id", "cart": "data.cart_id", "outage": "data.outage_id"}
# Names that jinja resolves as dict methods before dict keys: event.data.items is the method.
DICT_METHODS = frozenset(dir(dict))
SAMPLE_ITEMS = 100  # items in each list of the largest sample record: a cart of a hundred lines, a hundred areas
SAMPLE_TEXT = 1_000  # characters of a free-text field with no maxLength, in the largest sample
# Free text for the largest samples: words, and what escaping and SMS encoding must handle.
FILLER = "Anne-Marie van 't Hoff & Zn. <b>ijs</b> € 12,50 éè "
Trial = tuple[str, dict[str, Any], dict[str, Any]]  # (which sample, event, customer)
DEFAULT_DEDUPE_WINDOW = timedelta(days=7)
DEFAULT_SMS_MAX_SEGMENTS = 3
REQUIRED_FIELDS = frozenset({"id", "on", "channels", "template"})


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
    # Event fields whose values, with the key, make the fact a message tells; None: no fact dedupe.
    dedupe: tuple[str, ...] | None = None
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW
    category: str = SERVICE
    list_unsubscribe: bool = False  # service emails carry List-Unsubscribe too
    expects: tuple[str, ...] = ()  # expect.any_of: what fulfils the expectation (and cancels the message)

    @property
    def unsubscribable(self) -> bool:
        """Its emails carry List-Unsubscribe: every marketing rule, and service rules that ask."""
        return self.category == MARKETING or self.list_unsubscribe

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

    def fact_of(self, event: dict[str, Any], key: str) -> str | None:
        """The fingerprint of the fact a message about ``event`` tells, or None if this rule does not dedupe.

        Only customer-audience rules dedupe on facts: outage rules keep what each
        customer was told in their own told-state (see restraint.outage_told).
        """
        if self.dedupe is None or self.audience != "customer":
            return None
        return fact_fingerprint(self.id, key, [_value_at(event, path) for path in self.dedupe])


def _value_at(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.removeprefix("event.").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


DEFAULT_QUIET_HOURS = QuietHours(time(21, 0), time(8, 0))
DEFAULT_BUDGET = Budget(3, timedelta(days=7))


@dataclass
class RuleSet:
    rules: list[Rule]
    file: str
    default_locale: str = "nl"
    budget: Budget | None = DEFAULT_BUDGET
    sms_max_segments: int = DEFAULT_SMS_MAX_SEGMENTS
    cost: Costs | None = None  # None: defaults.cost not set
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

    @cached_property
    def dedupe_window(self) -> timedelta:
        """How long the facts sent must be remembered for every rule's fact dedupe."""
        return max((r.dedupe_window for r in self.rules if r.dedupe is not None), default=DEFAULT_DEDUPE_WINDOW)

    def get(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


@dataclass(frozen=True)
class RulesWarning:
    """What ``rules check`` points out without refusing the rules: an SMS of more than one segment."""

    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return str(ConfigError(self.message, self.file, self.line))


@dataclass(frozen=True)
class RulesReport:
    """Everything ``rules check`` found: the rules (None if refused), problems, warnings, each SMS's worst case."""

    ruleset: RuleSet | None
    problems: list[RulesError]
    warnings: list[RulesWarning]
    sms: list[SmsFit]


def load_rules(path: Path, renderer: Renderer, schemas: Schemas) -> RuleSet:
    """Load and check a rules file; raise RulesInvalid listing every problem."""
    ruleset, problems = check_rules(path, renderer, schemas)
    if problems:
        raise RulesInvalid(problems)
    assert ruleset is not None
    return ruleset


def check_rules(path: Path, renderer: Renderer, schemas: Schemas) -> tuple[RuleSet | None, list[RulesError]]:
    return _Checker(path, renderer, schemas).run()


def report_rules(path: Path, renderer: Renderer, schemas: Schemas) -> RulesReport:
    checker = _Checker(path, renderer, schemas)
    ruleset, problems = checker.run()
    return RulesReport(ruleset, problems, checker.warnings, [fit for fit, _ in checker.fits.values()])


class _Checker:
    def __init__(self, path: Path, renderer: Renderer, schemas: Schemas):
        self.path = path
        self.file = str(path)
        self.renderer = renderer
        self.schemas = schemas
        self.problems: list[RulesError | TemplateError] = []
        self._reported: set[str] = set()
        self.warnings: list[RulesWarning] = []
        self.fits: dict[tuple[str, str], tuple[SmsFit, str]] = {}  # (template, locale): worst case, which rule

    def problem(self, message: str, line: int | None) -> None:
        self.problems.append(RulesError(message, self.file, line))

    def run(self) -> tuple[RuleSet | None, list[RulesError]]:
        document = self._read()
        if document is None:
            return None, self.problems
        findings = [f for error in self.schemas.validator("rules.json").iter_errors(document) for f in explain(error)]
        for finding in findings:
            if finding.path[:1] != ("rules",) or len(finding.path) < 2:
                self.problem(finding.message, _finding_line(document, finding))
        if not isinstance(document.get("rules"), list):
            return None, self.problems
        defaults = _usable(document.get("defaults"), [f for f in findings if f.path[:1] == ("defaults",)])
        rules = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(document["rules"]):
            line = document["rules"].lc.item(index)[0] + 1
            own = [f for f in findings if f.path[:2] == ("rules", index)]
            raw = self._schema_checked(raw, own, index, line, document)
            if raw is None:
                continue
            if raw["id"] in seen:
                self.problem(f"rule id '{raw['id']}' is used twice (first at line {seen[raw['id']]})", line)
                continue
            seen[raw["id"]] = line
            rule = self._rule(raw, line, defaults)
            if rule is not None:
                rules.append(rule)
        budget = self._budget(defaults, document)
        self._lint_sms(defaults.get("sms_max_segments", DEFAULT_SMS_MAX_SEGMENTS))
        if self.problems:
            return None, sorted(self.problems, key=lambda p: (p.file != self.file, p.file or "", p.line or 0))
        return RuleSet(rules, self.file, defaults.get("locale", "nl"), budget,
                       sms_max_segments=defaults.get("sms_max_segments", DEFAULT_SMS_MAX_SEGMENTS),
                       cost=Costs.parse(defaults.get("cost"))), []

    def _schema_checked(self, raw: Any, findings: list[Finding], index: int, line: int,
                        document: Any) -> _RawRule | None:
        """The rule as written, or repaired as its problems suggest so that the rest can be checked; None: cannot be."""
        named = isinstance(raw, dict) and isinstance(raw.get("id"), str)
        label = f"rule '{raw['id']}'" if named else f"rule number {index + 1}"
        renamed = {f.rename[1] for f in findings if f.rename}
        findings = [f for f in findings if f.missing not in renamed]
        for finding in findings:
            self.problem(f"{label}: {finding.message}", _finding_line(document, finding))
        if not isinstance(raw, dict):
            return None
        rule = _RawRule(raw)
        if findings and not rule.repair(findings):
            return None
        if findings and any(True for _ in self._rule_validator().iter_errors(rule)):
            return None
        return rule

    def _rule_validator(self) -> Any:
        from jsonschema import Draft202012Validator

        return Draft202012Validator({"$ref": SCHEMA_BASE + "rules.json#/$defs/rule"}, registry=self.schemas.registry)

    def _budget(self, defaults: dict[str, Any], document: Any) -> Budget:
        """``defaults.budget``; a reserve must leave lower priorities at least one contact."""
        spec = defaults.get("budget")
        if spec is None:
            return DEFAULT_BUDGET
        budget = Budget.parse(spec)
        if budget.reserve and budget.reserve.count >= budget.count:
            self.problem(f"defaults.budget: reserve count {budget.reserve.count} leaves nothing of the budget of "
                         f"{budget.count} to priorities below {budget.reserve.priority}; reserve at most "
                         f"{budget.count - 1}", _line_of(document, ["defaults", "budget", "reserve", "count"]))
        return budget

    def _read(self) -> Any:
        yaml = YAML(typ="rt")
        yaml.version = (1, 2)
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            self.problem(f"cannot read rules: {exc.strerror}", None)
            return None
        except UnicodeDecodeError as exc:
            self.problem(f"not UTF-8 text (byte {exc.start}): a rules file is YAML text", None)
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

    def _rule(self, raw: _RawRule, line: int, defaults: dict[str, Any]) -> Rule | None:
        def line_of(key: str) -> int:
            return raw.lines.get(key, line)

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
        cancel_on = _cancels(raw)
        quiet = raw.get("quiet_hours", defaults.get("quiet_hours"))
        rule = Rule(
            id=raw["id"], events=events, audience=audience,
            channels=tuple(raw["channels"]), channel_mode=raw.get("channel_mode", "first"),
            template=raw["template"], priority=raw.get("priority", defaults.get("priority", 50)),
            key=key, line=line, enabled=raw.get("enabled", True), when=raw.get("when"),
            tiers={tier: dict(value) for tier, value in (raw.get("tiers") or {}).items()},
            wait=_duration(raw, "wait") or _expected_within(raw), coalesce=_duration(raw, "coalesce"),
            cancel_on=cancel_on,
            urgent=raw.get("urgent", False), essential=raw.get("essential", False),
            quiet_hours=None if quiet is False else (QuietHours.parse(quiet) if quiet else DEFAULT_QUIET_HOURS),
            cap=Cap.parse(raw["cap"]) if "cap" in raw else None,
            min_change=_duration(raw, "min_change"), min_interval=_duration(raw, "min_interval"),
            category=raw.get("category", SERVICE), list_unsubscribe=raw.get("list_unsubscribe", False),
            expects=_expected(raw),
        )
        if "category" not in raw and "category" not in raw.dropped:
            self.problem(f"rule '{rule.id}' has no category: add 'category: service' for what the customer needs "
                         "to know (outages, their orders; sent unless they opted out) or 'category: marketing' for "
                         "what sells (cart reminders; sent only with their marketing consent)", line)
        self._cancel_problems(rule, raw, line_of)
        condition_ok = True
        if rule.when is not None:
            before = len(self.problems)
            rule = self._condition(rule, line_of("when"))
            condition_ok = len(self.problems) == before
        self._templates(rule, line_of, self._trials(rule, line_of("when")) if condition_ok else [])
        return self._dedupe(rule, raw, defaults, line_of)

    def _cancel_problems(self, rule: Rule, raw: _RawRule, line_of: Callable[[str], int]) -> None:
        """What cancels a pending message must carry its key; ``expect`` is a wait of its own."""
        if "expect" in raw and ("wait" in raw or "coalesce" in raw):
            self.problem(f"rule '{rule.id}': expect is a wait of its own (its 'within'); leave out wait and "
                         "coalesce", line_of("expect"))
        steps: list[tuple[str, str | int]] = [("item", p) for p in rule.key.removeprefix("event.").split(".")]
        for cancel_type, match in rule.cancel_on:
            if match == "key" and self._resolve(f"events/{cancel_type}.json", steps):
                where = "expect" if cancel_type in _expected(raw) else "cancel_on"
                self.problem(f"rule '{rule.id}': {cancel_type} cannot carry the key {rule.key}; "
                             "use {on: ..., match: customer} or set key", line_of(where))

    def _dedupe(self, rule: Rule, raw: Any, defaults: dict[str, Any], line_of: Callable[[str], int]) -> Rule:
        """The rule with its dedupe paths: ``dedupe:`` as written (checked), else what its templates show."""
        window = raw.get("dedupe_window", defaults.get("dedupe_window"))
        spec = raw.get("dedupe")
        if rule.audience != "customer":
            if spec is not None:
                self.problem(f"rule '{rule.id}': dedupe is for customer rules; outage rules remember "
                             "what each customer was told", line_of("dedupe"))
            return rule
        if spec is False:
            paths = None
        elif spec is not None:
            paths = tuple(spec)
            for index, path in enumerate(paths):
                self._dedupe_path_problems(rule, path, raw["dedupe"].lc.item(index)[0] + 1)
        else:
            paths = self._shown_paths(rule)
        return replace(rule, dedupe=paths,
                       dedupe_window=parse_duration(window) if window else DEFAULT_DEDUPE_WINDOW)

    def _dedupe_path_problems(self, rule: Rule, path: str, line: int) -> None:
        steps: list[tuple[str, str | int]] = [("item", part) for part in path.removeprefix("event.").split(".")]
        for event_type in rule.events:
            error = self._resolve(f"events/{event_type}.json", steps)
            if error:
                self.problem(f"rule '{rule.id}': dedupe path {path}: {error} in {event_type}", line)

    def _shown_paths(self, rule: Rule) -> tuple[str, ...]:
        """Every ``event.data…`` path the rule's templates read, on every channel and locale it can use."""
        found: set[str] = set()
        for plan in rule.plans():
            for channel in plan.channels:
                for locale in LOCALES:
                    if self.renderer.missing(channel, locale, plan.template):
                        continue
                    for part in CHANNEL_PARTS[channel]:
                        try:
                            tree = self.renderer.parsed(self.renderer.template_name(channel, locale, plan.template,
                                                                                    part))
                        except TemplateSyntaxError:
                            continue  # reported by _template_fields
                        found.update(event_data_paths(tree))
        # A field read whole covers its parts: keep only the outermost reads.
        return tuple(sorted(p for p in found if not any(p.startswith(f"{q}.") for q in found)))

    def _condition(self, rule: Rule, line: int) -> Rule:
        try:
            compiled = self.renderer.compile_expression(rule.when)
            tree = self.renderer.env.parse("{{ (" + rule.when + ") }}")
        except (TemplateSyntaxError, TemplateError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            self.problem(f"rule '{rule.id}': condition is not a valid expression: "
                         f"{syntax_problem(rule.when, message.split(': ')[-1])}", line)
            self._slip_repaired(rule, line)
            return rule
        self._condition_meaning(rule, rule.when, tree, line)
        return Rule(**{**rule.__dict__, "condition": compiled})

    def _slip_repaired(self, rule: Rule, line: int) -> None:
        """With the slip mended (= for ==), what else is wrong: every problem at once, not one per fix."""
        mended = repaired(rule.when)
        if mended is None:
            return
        try:
            tree = self.renderer.env.parse("{{ (" + mended + ") }}")
        except TemplateSyntaxError:
            return
        self._condition_meaning(rule, mended, tree, line)

    def _condition_meaning(self, rule: Rule, source: str, tree: nodes.Template, line: int) -> None:
        """Fields the schema does not have, comparisons that can never be true, names nothing defines."""
        for problem in self._field_problems(tree, rule.events):
            self.problem(f"rule '{rule.id}': condition {problem}", line)
        explained = set()
        for problem, name in comparison_problems(tree, self._schemas_at(rule.events)):
            explained.add(name)
            self.problem(f"rule '{rule.id}': condition {problem}", line)
        for problem in self.renderer.expression_problems(source):
            bare = re.fullmatch(r"undefined variable '(.+)'", problem)
            if bare and bare.group(1) in explained:
                continue
            self.problem(f"rule '{rule.id}': condition: "
                         f"{bare_name_problem(bare.group(1)) if bare else problem}", line)

    def _trials(self, rule: Rule, line: int) -> list[Trial]:
        """The sample events and customers the rule's condition lets through; a condition failing on one is refused."""
        customers = samples(self.schemas, "customer.json")
        trials = [(f"{kind} {event_type}", event, customer)
                  for event_type in rule.events
                  for kind, event in samples(self.schemas, f"events/{event_type}.json").items()
                  if (customer := customers.get(kind) or customers.get("example")) is not None]
        if rule.condition is None:
            return trials
        passed = []
        for label, event, customer in trials:
            try:
                wanted = rule.condition(event=event, customer=customer)
            except Exception as exc:  # the decider would suppress with condition_error
                message = exc.message if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
                self.problem(f"rule '{rule.id}': condition fails on the {label} sample: {message}", line)
                return []
            if wanted:
                passed.append((label, event, customer))
        return passed

    def _templates(self, rule: Rule, line_of: Callable[[str], int], trials: list[Trial]) -> None:
        wanted: dict[str, set[tuple[str, str]]] = {}
        for plan in rule.plans():
            wanted.setdefault(plan.template, set()).update((c, loc) for c in plan.channels for loc in LOCALES)
        for template, combinations in wanted.items():
            missing = [name for channel, locale in sorted(combinations)
                       for name in self.renderer.missing(channel, locale, template)]
            if missing:
                line = line_of("template") if template == rule.template else line_of("tiers")
                meant = suggest(template, self._template_names())
                more = f" and {len(missing) - 2} more" if len(missing) > 2 else ""
                self.problem(f"rule '{rule.id}': template '{template}' not found (missing "
                             f"{', '.join(missing[:2])}{more} in {shown_path(self.renderer.template_dir)})"
                             + (f"; did you mean '{meant}'?" if meant and meant != template else ""), line)
                continue
            for channel, locale in sorted(combinations):
                if self._template_fields(rule, channel, locale, template):
                    self._template_renders(rule, channel, locale, template, trials)
                    if channel == "sms":
                        self._fit(rule, locale, template, trials)

    def _fit(self, rule: Rule, locale: str, template: str, trials: list[Trial]) -> None:
        """Keep the worst case of this SMS template over the samples any rule lets through."""
        fit = worst_fit(self.renderer, locale, template, trials)
        known = self.fits.get((template, locale))
        if fit is not None and (known is None or (fit.segments.segments, fit.segments.units) >
                                (known[0].segments.segments, known[0].segments.units)):
            self.fits[(template, locale)] = (fit, rule.id)

    def _lint_sms(self, most: int) -> None:
        """An error above ``defaults.sms_max_segments``, a warning above one segment."""
        for (template, locale), (fit, rule_id) in sorted(self.fits.items()):
            segments = fit.segments.segments
            if segments > most:
                self.problems.append(RulesError(
                    f"SMS of {fit.describe()} for rule '{rule_id}'; defaults.sms_max_segments is {most}: shorten "
                    "the text, or bound what it shows (|truncate)", fit.file, None))
            elif segments > 1:
                self.warnings.append(RulesWarning(f"SMS of {fit.describe()} for rule '{rule_id}': each segment "
                                                  "is billed", fit.file))

    def _template_names(self) -> set[str]:
        """Every template name the folder has for some channel and locale."""
        return {name.split("/")[-1].split(".")[0] for name in self.renderer.env.list_templates(extensions=["j2"])}

    def _template_fields(self, rule: Rule, channel: str, locale: str, template: str) -> bool:
        """Check the fields and the static safety of each part; True if all is well."""
        before = len(self.problems)
        for part in CHANNEL_PARTS[channel]:
            name = self.renderer.template_name(channel, locale, template, part)
            filename = str(self.renderer.template_dir / name)
            try:
                tree = self.renderer.parsed(name)
            except TemplateSyntaxError as exc:
                self.problems.append(RulesError(f"template syntax: {exc.message}", filename, exc.lineno))
                continue
            for problem, template_line in self._field_problems_with_lines(tree, rule.events):
                self.problems.append(RulesError(
                    f"{problem} (used by rule '{rule.id}', line {rule.line} of {self.file})",
                    filename, template_line))
            for problem in self.renderer.template_problems(name):
                self._template_problem(problem)
        return len(self.problems) == before

    def _template_renders(self, rule: Rule, channel: str, locale: str, template: str, trials: list[Trial]) -> None:
        """Render on each sample the condition lets through; report the first failure (or overrun) only."""
        for label, event, customer in trials:
            error = _render_error(self.renderer, self.schemas, channel, locale, template, label, event, customer)
            if error is not None:
                self._template_problem(TemplateError(
                    f"{error.message} (rendering the {label} sample for rule '{rule.id}')", error.file, error.line),
                    key=f"{error.file}:{error.line}: {error.message}")
                return

    def _template_problem(self, problem: TemplateError, key: str | None = None) -> None:
        """A problem of a template several rules may use: reported once."""
        key = key or str(problem)
        if key not in self._reported:
            self._reported.add(key)
            self.problems.append(problem)

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
        return self._walk(schema_name, path)[1]

    def _schemas_at(self, events: tuple[str, ...]) -> Callable[[str, list[tuple[str, str | int]]], list[dict]]:
        """For condition_words: the schema of a field in each event type the rule listens to, where it has one."""
        def schemas_at(root: str, path: list[tuple[str, str | int]]) -> list[dict[str, Any]]:
            names = [f"events/{e}.json" for e in events] if root == "event" else ["customer.json"]
            return [schema for name in names if (schema := self._walk(name, path)[0]) is not None]
        return schemas_at

    def _walk(self, schema_name: str, path: list[tuple[str, str | int]]) -> tuple[dict[str, Any] | None, str | None]:
        """The schema at ``path`` (dereferenced), or None and why there is no such field."""
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
                    return None, f"'{part}' is a dict method in templates; write ['{part}'] instead"
                return None, None  # a method call such as .get(...): the rest is not a field path
            if part not in properties:
                known = ", ".join(sorted(properties)) or "none"
                meant = suggest(part, properties)
                return None, f"no field '{part}'" + (f"; did you mean '{meant}'?" if meant else "") + f" (known: {known})"
            schema, resolver = properties[part]
        return _deref(schema, resolver)[0], None


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it: shorter, and what the user typed."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _RawRule(dict):
    """A rule as written (the YAML values) with the line of each key; repairable so the rest can be checked."""

    def __init__(self, raw: Any):
        super().__init__(raw)
        self.lines = {key: where[0] + 1 for key, where in raw.lc.data.items()}
        self.dropped: set[str] = set()  # fields in error, reported already

    def repair(self, findings: list[Finding]) -> bool:
        """Apply the renames suggested and drop the fields in error; False if what is left cannot be a rule."""
        for finding in findings:
            inner = finding.path[2:]
            container = self._inside(inner)
            if finding.rename and container is not None and finding.rename[1] not in container:
                written, meant = finding.rename
                container[meant] = container.pop(written)
                if not inner:
                    self.lines[meant] = self.lines.get(written, 0)
            elif finding.key is not None and not inner:
                self.pop(finding.key, None)
            elif not inner or inner[0] in REQUIRED_FIELDS:
                return False
            else:
                self.pop(inner[0], None)
                self.dropped.add(str(inner[0]))
        return True

    def _inside(self, path: tuple[str | int, ...]) -> Any:
        """The mapping at ``path`` within the rule, or None."""
        node: Any = self
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node if isinstance(node, dict) else None


def _usable(defaults: Any, findings: list[Finding]) -> dict[str, Any]:
    """``defaults:`` without the fields in error (reported already), so the rules can still be checked."""
    if not isinstance(defaults, dict):
        return {}
    usable = dict(defaults)
    for finding in findings:
        usable.pop(finding.key if finding.key is not None and len(finding.path) == 1 else
                   finding.path[1] if len(finding.path) > 1 else None, None)
    return usable


def _finding_line(document: Any, finding: Finding) -> int | None:
    if finding.key is None:
        return _line_of(document, list(finding.path))
    node: Any = document
    for part in finding.path:
        node = node[part]
    where = getattr(node, "lc", None) and node.lc.data.get(finding.key)
    return where[0] + 1 if where else _line_of(document, list(finding.path))


def _cancels(raw: Any) -> tuple[tuple[str, str], ...]:
    """``cancel_on`` as (event type, match), and the events ``expect`` waits for: any of them cancels."""
    written = tuple((c, "key") if isinstance(c, str) else (c["on"], c.get("match", "key"))
                    for c in raw.get("cancel_on", ()))
    return written + tuple((event_type, "key") for event_type in _expected(raw)
                           if (event_type, "key") not in written)


def _expected(raw: Any) -> tuple[str, ...]:
    return tuple((raw.get("expect") or {}).get("any_of", ()))


def _expected_within(raw: Any) -> timedelta | None:
    expect = raw.get("expect")
    return parse_duration(expect["within"]) if expect else None


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


def event_data_paths(tree: nodes.Node) -> set[str]:
    """The ``data.…`` paths of the event a template reads, as dotted names (for the fact it tells).

    Follows ``{% set d = event.data %}`` aliases and ``.get("name")``; a path stops at a list
    index or a dict method, so that what it reads whole stands for it.
    """
    aliases: dict[str, list[str]] = {}
    for assign in tree.find_all(nodes.Assign):
        if isinstance(assign.target, nodes.Name):
            path = _event_chain(assign.node, aliases)
            if path is not None:
                aliases[assign.target.name] = path
    inner = {id(n.node) for n in tree.find_all((nodes.Getattr, nodes.Getitem))}
    inner |= {id(a.node) for a in tree.find_all(nodes.Assign)}
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        if isinstance(node, nodes.Call):
            path = _get_call(node, aliases)
            if path is not None:
                inner.add(id(node.node))
        elif id(node) in inner:
            continue
        else:
            path = _event_chain(node, aliases)
        if path and path[0] == "data":
            found.add(".".join(path))
    return found


def _get_call(call: nodes.Call, aliases: dict[str, list[str]]) -> list[str] | None:
    """``x.get("name")`` on an event path, as the path to ``name``."""
    target = call.node
    if not (isinstance(target, nodes.Getattr) and target.attr == "get" and call.args
            and isinstance(call.args[0], nodes.Const) and isinstance(call.args[0].value, str)):
        return None
    path = _event_chain(target.node, aliases)
    return None if path is None else [*path, call.args[0].value]


def _event_chain(node: nodes.Node, aliases: dict[str, list[str]]) -> list[str] | None:
    """The event path ``node`` reads (``event.data.x`` -> ["data", "x"]), or None if it reads no event field."""
    steps: list[str | None] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            steps.append(None if node.attr in DICT_METHODS else node.attr)
        else:
            arg = node.arg
            steps.append(arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None)
        node = node.node
    if not isinstance(node, nodes.Name) or (node.name != "event" and node.name not in aliases):
        return None
    path = [] if node.name == "event" else list(aliases[node.name])
    for step in reversed(steps):
        if step is None:  # an index or a method: what comes before it is read whole
            break
        path.append(step)
    return path


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


# ---------------------------------------------------------------------------
# Sample records, to try conditions and templates on


_RENDER_ERRORS: WeakKeyDictionary[Renderer, dict[tuple[str, ...], TemplateError | None]] = WeakKeyDictionary()


def _render_error(renderer: Renderer, schemas: Schemas, channel: str, locale: str, template: str, label: str,
                  event: dict[str, Any], customer: dict[str, Any]) -> TemplateError | None:
    """What rendering this sample raises, if anything; remembered per renderer (tests load rules many times)."""
    known = _RENDER_ERRORS.setdefault(renderer, {})
    key = (str(schemas.dir), channel, locale, template, label)
    if key not in known:
        extra = {"outage": event["data"]} if event["type"].startswith("outage.") else None
        try:
            renderer.render(channel, locale, template, event=event, customer=customer, extra=extra)
            known[key] = None
        except TemplateError as exc:
            known[key] = exc
    return known[key]


@lru_cache(maxsize=64)
def samples(schemas: Schemas, name: str) -> dict[str, dict[str, Any]]:
    """Records the schema ``name`` (``customer.json``, ``events/<type>.json``) allows, by kind.

    "example": its first example; "largest": every optional field, free text at its maxLength,
    SAMPLE_ITEMS items in every list, a string with a pattern as its longest example; "smallest":
    required fields only, the shortest of each. One that the schema refuses after all is left out.
    Do not change what they hold: they are shared.
    """
    schema = schemas.registry.contents(SCHEMA_BASE + name)
    resolver = schemas.registry.resolver(SCHEMA_BASE + name)
    found = {"example": copy.deepcopy(schema["examples"][0])} if schema.get("examples") else {}
    for kind in ("largest", "smallest"):
        try:
            record = _Sampler(kind == "largest").value(schema, resolver)
        except LookupError:  # a pattern without examples: nothing to build from
            continue
        if not schemas.problems(name, record):
            found[kind] = record
    return found


class _Sampler:
    """Builds the largest or the smallest value a (draft 2020-12, as used in schemas/) schema allows."""

    def __init__(self, largest: bool):
        self.largest = largest

    def value(self, schema: dict[str, Any], resolver: Resolver, index: int = 0) -> Any:
        schema, resolver = _deref(schema, resolver)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._pick(schema["enum"], key=lambda v: len(str(v)))
        kind = schema.get("type", "object")
        if kind == "object":
            return self._object(schema, resolver)
        if kind == "array":
            return self._array(schema, resolver)
        if kind == "string":
            return self._string(schema, index)
        if kind in ("number", "integer"):
            return self._number(schema, kind)
        if kind == "boolean":
            return self.largest
        raise LookupError(f"no sample for type {kind!r}")

    def _pick(self, values: list[Any], key: Callable[[Any], int]) -> Any:
        return max(values, key=key) if self.largest else min(values, key=key)

    def _object(self, schema: dict[str, Any], resolver: Resolver) -> dict[str, Any]:
        required = _required(schema, resolver)
        excluded = set(schema.get("not", {}).get("required", []))  # outage events: no customer_id
        properties = _properties(schema, resolver)
        return {name: self.value(*properties[name]) for name in properties
                if (self.largest or name in required) and name not in excluded}

    def _array(self, schema: dict[str, Any], resolver: Resolver) -> list[Any]:
        least = schema.get("minItems", 0)
        count = max(min(schema.get("maxItems", SAMPLE_ITEMS), SAMPLE_ITEMS), least) if self.largest else least
        return [self.value(schema.get("items", {}), resolver, index) for index in range(count)]

    def _string(self, schema: dict[str, Any], index: int) -> str:
        if "pattern" in schema:
            examples = schema.get("examples") or []
            if not examples:
                raise LookupError("a pattern without examples")
            return _varied(self._pick(examples, key=len), schema["pattern"], index)
        if self.largest:
            length = schema.get("maxLength", SAMPLE_TEXT)
            return (FILLER * (length // len(FILLER) + 1))[:length]
        return "x" * schema.get("minLength", 0)

    def _number(self, schema: dict[str, Any], kind: str) -> int | float:
        if not self.largest:
            return schema.get("minimum", 0)
        return schema.get("maximum", 1_000_000 if kind == "integer" else 1_234_567.89)


def _required(schema: dict[str, Any], resolver: Resolver) -> set[str]:
    schema, resolver = _deref(schema, resolver)
    found = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        found |= _required(part, resolver)
    return found


def _varied(example: str, pattern: str, index: int) -> str:
    """``example`` with its first number raised by ``index`` (items of a list must differ), if the pattern allows."""
    if not index:
        return example
    varied = re.sub(r"\d+", lambda m: str(int(m.group()) + index).zfill(len(m.group())), example, count=1)
    return varied if varied != example and re.fullmatch(pattern, varied) else example
