"""forewarn's command line: demo, worker, produce, load-customers, rules check, preview, simulate."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn, Optional

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from streams import gc_tuning
from streams.errors import ForewarnError
from streams.settings import ROOT, Settings, settings_help

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Tell customers about a problem before they notice it.")
rules_cli = typer.Typer(no_args_is_help=True, help="Check the rules file.")
cli.add_typer(rules_cli, name="rules")
preferences_cli = typer.Typer(no_args_is_help=True, help="What a customer wants to hear: show it, or say it for them.")
cli.add_typer(preferences_cli, name="preferences")
console = Console()
err = Console(stderr=True, soft_wrap=True)

# The settings each command reads, listed by its --help.
_KAFKA = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE",
          "KAFKA_SSL_KEYFILE", "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
          "KAFKA_SASL_PASSWORD")
_CORE = ("FOREWARN_RULES", "FOREWARN_TEMPLATES", "FOREWARN_SCHEMAS", "FOREWARN_BRAND", "FOREWARN_STATUS_URL")
_LINKS = ("FOREWARN_UNSUBSCRIBE_SECRET", "FOREWARN_UNSUBSCRIBE_MAILTO", "FOREWARN_UNSUBSCRIBE_DAYS",
          "FOREWARN_WEBHOOK_PUBLIC_URL", "FOREWARN_WEBHOOK_HOST", "FOREWARN_WEBHOOK_PORT", "SENDGRID_FROM")
_SOURCES = ("FOREWARN_TOPIC_ORDERS", "FOREWARN_TOPIC_CARTS", "FOREWARN_TOPIC_OUTAGES", "FOREWARN_TOPIC_CUSTOMERS")
_RATES = ("FOREWARN_SMS_RATE", "FOREWARN_EMAIL_RATE", "FOREWARN_FANOUT_LIMIT")


def _reads(*groups: tuple[str, ...], every: bool = False) -> str:
    """A --help epilog listing the settings a command reads, from the environment."""
    if not every and not groups:
        return "Reads no settings."
    listed = settings_help(None if every else [name for group in groups for name in group])
    return "Settings, from the environment:\n\n" + listed.replace("\n", "\n\n")


RULES_OPTION = typer.Option(None, "--rules", help="rules file (default: FOREWARN_RULES, else config/rules.yaml)")
TEMPLATES_OPTION = typer.Option(None, "--templates", help="templates folder (default: FOREWARN_TEMPLATES, else "
                                                          "templates/)")


def _fail(message: str, code: int = 2) -> NoReturn:
    """Stop with ``message`` as one plain line on stderr."""
    err.print(f"[red]error[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _preflight(settings: Settings, *, sends: bool = False):
    """Load rules and templates, or stop with every problem listed (exit 2); ``sends``: links can be signed."""
    from streams.core.config import load_config
    from streams.core.unsubscribe import require_links
    from streams.errors import ConfigError, RulesInvalid

    try:
        config = load_config(settings)
        if sends:
            require_links(settings, config.rules)
        return config
    except RulesInvalid as exc:
        for problem in exc.problems:
            err.print(f"[red]error[/red] {problem}", highlight=False)
        raise typer.Exit(2)
    except ConfigError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False)
        raise typer.Exit(2)


@cli.command(epilog=_reads(every=True))
def worker(rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION) -> None:
    """Run the stream processors (embedded broker when KAFKA_BOOTSTRAP_SERVERS is unset)."""
    from streams.kafka.embedded import bootstrap_servers
    from streams.kafka.admin import ensure_topics
    from streams.kafka.security import broker_credentials

    from dataclasses import replace

    settings = _settings(rules, templates)
    if _emails_to_outbox(settings):  # nobody receives these links: a key for this run will do
        settings = _throwaway_secret(settings)
    config = _preflight(settings, sends=True)
    if _writes_outbox(settings):
        _check_outbox(settings.outbox_dir)
    broker_credentials(settings.kafka_security)  # TLS files that do not load: one line, before connecting
    with bootstrap_servers(settings.bootstrap_servers) as bootstrap:
        if not settings.bootstrap_servers:
            err.print(f"embedded broker on {bootstrap} (memory only)")
        ensure_topics(bootstrap, settings.topics.all(), settings.partitions,
                      compacted=settings.topics.compacted())
        from faust.worker import Worker

        from streams.worker import build_app

        app = build_app(replace(settings, bootstrap_servers=bootstrap), config)
        gc_tuning.tune()
        Worker(app, loglevel=settings.log_level).execute_from_commandline()


def _throwaway_secret(settings: Settings, say: bool = True) -> Settings:
    """A run that sends nobody anything real signs its unsubscribe links with a key made for it."""
    if settings.unsubscribe_secret:
        return settings
    import secrets
    from dataclasses import replace

    key = secrets.token_urlsafe(32)
    os.environ["FOREWARN_UNSUBSCRIBE_SECRET"] = key  # the demo's worker and receiver processes too
    if say:
        err.print("[dim]FOREWARN_UNSUBSCRIBE_SECRET unset: unsubscribe links signed with a key for this run only[/dim]")
    return replace(settings, unsubscribe_secret=key)


def _emails_to_outbox(settings: Settings) -> bool:
    from streams.channels.registry import sendgrid_configured

    return settings.dispatch and not sendgrid_configured(settings)


def _writes_outbox(settings: Settings) -> bool:
    """Whether this worker sends anything through the outbox: it dispatches, and a channel has no provider."""
    from streams.channels.registry import sendgrid_configured, twilio_configured

    return settings.dispatch and not (twilio_configured(settings) and sendgrid_configured(settings))


def _check_outbox(directory: Path, named_by: str = "FOREWARN_OUTBOX") -> None:
    """Stop in one line unless ``directory`` exists or can be made, and takes a file (a probe, removed again)."""
    probe = directory / f".forewarn-write-check-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        _fail(f"cannot write the outbox {directory}: {exc.strerror or exc} ({named_by} names the folder)")


# (line number, key, value) of a line to send, or (line number, None, None, why not) of one refused here.
Numbered = tuple[int, Optional[bytes], Optional[bytes], Optional[str]]


@cli.command(epilog=_reads(_KAFKA))
def produce(topic: str, file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Send each JSON line of FILE to TOPIC, keyed by customer or outage.

    A line that is not JSON, too large or refused by Kafka is reported by its number and the rest are still
    sent; exit 1 if any was refused. Events that break their schema are sent: they reach deadletter.
    """
    settings = _configured_broker()
    _send_numbered(settings.bootstrap_servers, topic, file, _event_lines(file), "lines")


@cli.command("load-customers", epilog=_reads(_KAFKA, ("FOREWARN_TOPIC_CUSTOMERS",)))
def load_customers(file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Load customers from JSON Lines or CSV onto the customers topic.

    A line that cannot be read, is too large or is refused by Kafka is reported by its number and the rest
    are still sent; exit 1 if any was refused.
    """
    settings = _configured_broker()
    _send_numbered(settings.bootstrap_servers, settings.topics.customers, file, _customer_lines(file), "customers")


def _event_lines(file: Path) -> Iterator[Numbered]:
    from streams.kafka.admin import key_of

    with file.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                key = key_of(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                yield number, None, None, f"not JSON: {exc}"
                continue
            yield number, key.encode() if key else None, line, None


def _customer_lines(file: Path) -> Iterator[Numbered]:
    from streams.tools.customer_files import read_customer_rows, upsert_event

    last = 0
    try:
        for last, record, reason in read_customer_rows(file):
            if reason or not record.get("customer_id"):
                yield last, None, None, reason or "no customer_id"
                continue
            event = upsert_event(record, sequence=last)
            yield last, str(record["customer_id"]).encode(), orjson.dumps(event), None
    except UnicodeDecodeError:
        yield last + 1, None, None, "not UTF-8 text; the rest of the file was not read"


def _send_numbered(bootstrap: str, topic: str, file: Path, lines: Iterable[Numbered], what: str) -> None:
    """Send each line, report each refused one as FILE:LINE: reason, end with the counts; exit 1 if any was refused."""
    from streams.kafka.admin import LineSender

    refused = _Refused(file)
    tried = 0
    with LineSender(bootstrap, topic) as sender, Progress(console=err, transient=True) as progress:
        task = progress.add_task(what, total=_count_lines(file))
        for number, key, value, reason in lines:
            tried += 1
            if value is None:
                sender.refuse(number, reason or "refused")
            else:
                sender.send(number, key, value)
            refused.report(sender.take_refusals())
            if tried % 2000 == 0:
                progress.update(task, completed=number)
    refused.report(sender.take_refusals())  # the ones Kafka refused while the last lines were flushed
    console.print(f"sent {sender.delivered} of {tried} {what} to {topic}; {refused.count} refused")
    if refused.count:
        raise typer.Exit(1)


def _count_lines(file: Path) -> int:
    with file.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


class _Refused:
    """Prints each refused line as FILE:LINE: reason (the first hundred; a broker gone mid-file refuses them
    all) and counts every one."""

    shown = 100

    def __init__(self, file: Path) -> None:
        self.file = file
        self.count = 0

    def report(self, refusals: Iterable) -> None:
        for refusal in refusals:
            self.count += 1
            if self.count <= self.shown:
                err.print(f"{self.file}:{refusal.line}: {refusal.reason}", markup=False, highlight=False)
            elif self.count == self.shown + 1:
                err.print("more lines were refused: they are counted below, not shown", highlight=False)


def _configured_broker() -> Settings:
    settings = Settings.from_env()
    if not settings.bootstrap_servers:
        _fail("set KAFKA_BOOTSTRAP_SERVERS (host:port of the broker to send to)")
    return settings


def _settings(rules: Optional[Path] = None, templates: Optional[Path] = None) -> Settings:
    """The settings from the environment, with the rules file and templates folder the options name."""
    from dataclasses import replace

    settings = Settings.from_env()
    if rules is not None:
        settings = replace(settings, rules_file=rules)
    if templates is not None:
        settings = replace(settings, template_dir=templates)
    return settings


@rules_cli.command("check", epilog=_reads(_CORE))
def rules_check(file: Optional[Path] = typer.Argument(None, help="rules file (the same as --rules)"),
                rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION) -> None:
    """Print every problem in the rules and templates with file and line, and each SMS's worst case; exit 1 if any."""
    from streams.core.config import report_config

    settings = _settings(file or rules, templates)
    report = report_config(settings)
    for problem in report.problems:
        err.print(f"[red]error[/red] {escape(str(problem))}", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning[/yellow] {escape(str(warning))}", highlight=False)
    _print_sms_fits(report.sms)
    from streams.core.rules import shown_path

    if report.problems:
        err.print(f"{len(report.problems)} problem(s) in {shown_path(settings.rules_file)}")
        raise typer.Exit(1)
    console.print(f"{shown_path(settings.rules_file)}: ok"
                  + (f", {len(report.warnings)} warning(s)" if report.warnings else ""))


def _print_sms_fits(fits) -> None:
    if not fits:
        return
    table = Table(title="SMS, the worst case over the samples the schemas allow")
    for column in ("template", "locale", "segments", "encoding", "characters", "sample"):
        table.add_column(column)
    for fit in sorted(fits, key=lambda f: (f.template, f.locale)):
        encoding = fit.segments.encoding + (f" ({fit.forcing!r})" if fit.forcing else "")
        table.add_row(fit.template, fit.locale, str(fit.segments.segments), escape(encoding),
                      str(fit.segments.chars), fit.sample)
    console.print(table)


@cli.command(epilog=_reads(_CORE, _LINKS))
def preview(rule: str, event: Path = typer.Option(..., exists=True, dir_okay=False, help="the event, JSON"),
            customer: Path = typer.Option(..., exists=True, dir_okay=False, help="the customer record, JSON"),
            at: Optional[str] = typer.Option(None, help="the event's moment instead of its occurred_at, "
                                                        "e.g. 2026-12-08T22:30:00+01:00"),
            history: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                   help="earlier events (JSON Lines), counted against caps and "
                                                        "the budget"),
            channel: Optional[str] = typer.Option(None, help="also render this channel, whether chosen or not"),
            rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION) -> None:
    """What RULE would do for one event and one customer: tier, condition, wait, quiet hours, caps, the texts."""
    from datetime import datetime

    from streams.core.events import parse_event
    from streams.tools.preview import preview as run, read_history

    config = _preflight(_throwaway_secret(_settings(rules, templates), say=False))
    try:
        record = orjson.loads(customer.read_bytes())
    except orjson.JSONDecodeError as exc:
        _fail(f"{customer} is not a JSON customer record: {exc}")
    if not isinstance(record, dict):
        _fail(f"{customer} is not a JSON customer record: an object is needed")
    try:
        moment = datetime.fromisoformat(at) if at else None
    except ValueError:
        _fail(f"--at {at!r} is not a moment: write e.g. 2026-12-08T22:30:00+01:00")
    if moment is not None and moment.tzinfo is None:
        _fail(f"--at {at!r} needs its offset, e.g. +01:00")
    try:
        result = run(config, rule, parse_event(event.read_bytes(), config.schemas), record, moment,
                     read_history(history))
    except ForewarnError as exc:  # an unknown rule, an event or history line that does not hold up
        _fail(str(exc))
    for line in result.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    for outcome in result.outcomes:
        if hasattr(outcome, "body"):
            _print_text(outcome.channel, outcome.subject, outcome.body, outcome.segments, outcome.encoding,
                        result.forced.get(outcome.id))
    if channel:
        _print_forced_render(config, result, channel)


def _print_text(channel: str, subject: Optional[str], body: str, segments: Optional[int], encoding: Optional[str],
                forced: Optional[str]) -> None:
    console.rule(channel)
    if subject:
        console.print(f"Subject: {subject}", highlight=False, markup=False)
    console.print(body, highlight=False, markup=False)
    if segments:
        console.print(f"{segments} segment(s), {encoding}" + (f", forced by {forced}" if forced else ""),
                      highlight=False, markup=False)


def _print_forced_render(config, result, channel: str) -> None:
    """The text of ``channel`` for this customer even if the rule would not use it (templates under work)."""
    from streams.core.sms_lint import show_forced
    from streams.errors import TemplateError

    if channel not in ("sms", "email"):
        _fail("--channel is sms or email")
    try:
        rendered = config.renderer.render(channel, result.locale, result.plan.template, event=result.event,
                                          customer=result.customer, extra=result.extra)
    except TemplateError as exc:
        _fail(f"{exc}")
    forced = show_forced(config.renderer, result.locale, result.plan.template, rendered.body, "given") \
        if channel == "sms" else None
    _print_text(f"{channel} (rendered on request)", rendered.subject, rendered.body,
                rendered.segments.segments if rendered.segments else None,
                rendered.segments.encoding if rendered.segments else None, forced)


@cli.command(epilog=_reads(_CORE, _LINKS, _KAFKA, _SOURCES))
def simulate(rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION,
             customers: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                      help="customers, JSON Lines or CSV"),
             events: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="events, JSON Lines"),
             from_kafka: bool = typer.Option(False, "--from-kafka", help="read the customers and events topics "
                                                                         "instead (no consumer group joins)"),
             since: str = typer.Option("7d", help="with --from-kafka: events of this last stretch of time"),
             against: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                    help="another rules file: run both and compare"),
             as_json: bool = typer.Option(False, "--json", help="print the figures as JSON (for CI)"),
             sample: int = typer.Option(5, min=0, help="with --against: how many changed customers to show"),
             out: Path = typer.Option(Path("simulation"))) -> None:
    """Run the decision core over the input on event time; write notifications, suppressed, rejected.

    With --against, both rule sets decide the same input: per rule what each sends, holds back and costs,
    and a sample of the customers whose messages change, before and after.
    """
    settings = _throwaway_secret(_settings(rules, templates), say=False)
    config = _preflight(settings)
    sources = _simulation_input(settings, customers, events, from_kafka, since)
    if against is None:
        _simulate_once(config, sources, out, as_json)
        return
    from dataclasses import replace

    from streams.core.rules import shown_path
    from streams.tools.compare import compare
    from streams.tools.reports import print_comparison
    from streams.tools.simulate import simulate_sources

    other = _preflight(replace(settings, rules_file=against))
    before = simulate_sources(other, *sources(), None, keep_messages=True)
    after = simulate_sources(config, *sources(), out, keep_messages=True)
    comparison = compare(before, after, (shown_path(against), shown_path(settings.rules_file)),
                         (other.rules.cost, config.rules.cost), sample)
    if as_json:
        console.print_json(orjson.dumps(comparison.to_dict()).decode())
    else:
        print_comparison(console, comparison)
        console.print(f"{shown_path(settings.rules_file)}'s outcomes written to {out}/", soft_wrap=True,
                      highlight=False)


def _simulate_once(config, sources, out: Path, as_json: bool) -> None:
    from streams.tools.reports import print_simulation
    from streams.tools.simulate import simulate_sources

    started = time.perf_counter()
    report = simulate_sources(config, *sources(), out)
    elapsed = time.perf_counter() - started
    if as_json:
        console.print_json(orjson.dumps(report.figures(config.rules)).decode())
        return
    print_simulation(console, report, config.rules, f"simulation: {report.events} events, {report.customers} "
                                                    f"customers, {report.rejected} rejected, {elapsed:.2f} s")
    console.print(f"written to {out}/notifications.jsonl, suppressed.jsonl, rejected.jsonl")


def _simulation_input(settings: Settings, customers: Optional[Path], events: Optional[Path], from_kafka: bool,
                      since: str):
    """A function giving (customers, events) sources afresh: files, or the topics read once."""
    from streams.tools.simulate import file_customers, file_events

    if from_kafka:
        if customers or events:
            _fail("--from-kafka reads the topics: leave out --customers and --events")
        return _topic_input(settings, since)
    if customers is None or events is None:
        _fail("give --customers and --events files, or --from-kafka")
    return lambda: (file_customers(customers), file_events(events))


def _read_topics(settings: Settings, since: str):
    """The customers topic whole and the events of the last ``since``, read without joining a group."""
    from streams.core.policy import parse_duration
    from streams.tools.topic_input import read_history

    try:
        window = parse_duration(since)
    except ValueError:
        _fail(f"--since {since!r} is not a duration: a number and a unit, e.g. 90m, 12h, 7d")
    if not settings.bootstrap_servers:
        _fail("set KAFKA_BOOTSTRAP_SERVERS (host:port of the broker to read)")
    history = read_history(settings, settings.bootstrap_servers, window)
    err.print(f"read {len(history.customers)} customers and {len(history.events)} events since "
              f"{history.since.isoformat(timespec='seconds')} from {settings.bootstrap_servers}", highlight=False)
    return history


def _topic_input(settings: Settings, since: str):
    history = _read_topics(settings, since)
    return lambda: ((("customers topic", n, raw, None) for n, raw in enumerate(history.customers)),
                    (("event topics", n, raw, None) for n, raw in enumerate(history.events)))


@cli.command(epilog=_reads(_CORE, _RATES, _KAFKA, ("FOREWARN_TOPIC_CUSTOMERS",)))
def plan(outage: Path = typer.Argument(..., exists=True, dir_okay=False, help="an outage.started event, JSON"),
         customers: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                  help="customers, JSON Lines or CSV"),
         from_kafka: bool = typer.Option(False, "--from-kafka", help="the customers topic instead of a file"),
         as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
         rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION) -> None:
    """The fan-out plan of OUTAGE before it is real: recipients per channel and tier, segments, cost, time."""
    from streams.core.events import parse_event
    from streams.tools.plan import plan_outage, plan_outage_files

    settings = _throwaway_secret(_settings(rules, templates), say=False)
    config = _preflight(settings)
    if from_kafka == (customers is not None):
        _fail("give --customers FILE or --from-kafka")
    try:
        if customers is not None:
            result = plan_outage_files(settings, outage, customers, config)
        else:
            history = _read_topics(settings, "0s")
            event = parse_event(outage.read_bytes(), config.schemas)
            result = plan_outage(config, event, (parse_event(raw, config.schemas) for raw in history.customers),
                                 settings)
    except ForewarnError as exc:  # not an outage, no rule fans it out, a file that does not hold up
        _fail(str(exc))
    if as_json:
        console.print_json(orjson.dumps(result.to_dict()).decode())
    else:
        for line in result.lines():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.over_limit:
        raise typer.Exit(3)


@cli.command(epilog=_reads())
def generate(out: Path = typer.Option(Path("week")), customers: int = typer.Option(10_000),
             outages: int = typer.Option(15), seed: int = typer.Option(20261123)) -> None:
    """Write a synthetic week of events and its customers, for the simulator and benchmarks."""
    from streams.tools.generate import WeekSpec, generate_week

    customers_path, events_path = generate_week(WeekSpec(customers=customers, outages=outages, seed=seed), out)
    lines = sum(1 for _ in events_path.open("rb"))
    console.print(f"{customers} customers in {customers_path}, {lines} events in {events_path}")


@cli.command(epilog=_reads(_CORE, _LINKS, ("FOREWARN_OUTBOX", "FOREWARN_PARTITIONS", "FOREWARN_LOG_LEVEL")))
def demo(customers: Path = typer.Option(ROOT / "config" / "demo" / "customers.jsonl", exists=True),
         events: Path = typer.Option(ROOT / "config" / "demo" / "events.jsonl", exists=True),
         outbox: Optional[Path] = typer.Option(None, help="where the messages are written (default: "
                                                          "FOREWARN_OUTBOX, else outbox/); emptied first"),
         timeout: float = typer.Option(120.0),
         providers: str = typer.Option("outbox", help="outbox (files) or imitation (the Twilio and SendGrid "
                                                      "SDKs against a local imitation of their APIs)"),
         rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION) -> None:
    """Start everything on the embedded broker, replay the demo events, show what was sent."""
    from streams.tools.demo import run_demo

    if providers not in ("outbox", "imitation"):
        _fail("--providers is outbox or imitation")
    settings = _throwaway_secret(_settings(rules, templates))
    _preflight(settings, sends=True)
    outbox = outbox or settings.outbox_dir
    try:
        if outbox.exists():
            shutil.rmtree(outbox)
    except OSError as exc:
        _fail(f"cannot empty the outbox {outbox}: {exc.strerror or exc}")
    if providers == "outbox":
        _check_outbox(outbox, named_by="--outbox or FOREWARN_OUTBOX")
    run_demo(settings, customers, events, outbox, timeout, console, imitation=providers == "imitation")


@preferences_cli.command("show", epilog=_reads(_KAFKA, ("FOREWARN_TOPIC_PREFERENCES",)))
def preferences_show(customer: str, rule: str = typer.Option("any", help="as it stands for this rule id")) -> None:
    """Every statement on record for CUSTOMER (newest per scope, with source and time), and what they hear."""
    from streams.tools.preferences import show

    settings = _configured_broker()
    shown = show(settings, settings.bootstrap_servers, customer, rule)
    if shown.preferences is None:
        console.print(f"{customer}: no preferences on record (never known, or forgotten)")
    else:
        console.print(f"{customer}: newest statement per scope", highlight=False)
        for statement in sorted(shown.preferences.statements, key=lambda s: s.at):
            console.print(f"  {'yes' if statement.allow else 'no'} to {statement.scope.describe()} since "
                          f"{statement.at} ({statement.source}" + (f": {statement.detail})" if statement.detail
                                                                    else ")"), highlight=False, markup=False,
                          soft_wrap=True)
    for (channel, category), withheld in shown.hears.items():
        console.print(f"{category} by {channel}: " + ("sent" if withheld is None else f"held back ({withheld})"),
                      highlight=False)


@preferences_cli.command("set", epilog=_reads(_KAFKA, ("FOREWARN_TOPIC_CONSENT",)))
def preferences_set(customer: str,
                    allow: bool = typer.Option(..., "--allow/--deny", help="yes or no to what the options name"),
                    channel: Optional[str] = typer.Option(None, help="sms or email (default: every channel)"),
                    category: Optional[str] = typer.Option(None, help="service or marketing (default: both)"),
                    rule: Optional[str] = typer.Option(None, help="one rule id (default: every rule)"),
                    source: str = typer.Option("support", help="support or api"),
                    note: Optional[str] = typer.Option(None, help="why, for the record")) -> None:
    """Record what CUSTOMER said (on the phone, in a chat): the newest statement wins."""
    from streams.core.consent import CATEGORIES, CHANNELS, Scope
    from streams.tools.preferences import state

    if channel not in (None, *CHANNELS) or category not in (None, *CATEGORIES) or source not in ("support", "api"):
        _fail("--channel is sms or email, --category service or marketing, --source support or api")
    settings = _configured_broker()
    change = state(settings, settings.bootstrap_servers, customer, Scope(channel, category, rule), allow, source,
                   note)
    console.print(f"recorded for {customer}: {'yes' if allow else 'no'} to {change.statements[0].scope.describe()}"
                  f" ({source}); the worker applies it to what is waiting, parked or still to come")


@cli.command(epilog=_reads(_KAFKA, ("FOREWARN_TOPIC_CUSTOMERS", "FOREWARN_TOPIC_CONSENT")))
def forget(customer: str, reason: Optional[str] = typer.Option(None, help="e.g. the erasure request's reference")
           ) -> None:
    """Erase CUSTOMER: directory, state, waiting messages; preferences keep only a no to everything."""
    from streams.tools.preferences import forget as erase

    settings = _configured_broker()
    erase(settings, settings.bootstrap_servers, customer, reason)
    console.print(f"{customer}: customer.deleted and a tombstone sent to {settings.topics.customers}; "
                  "see docs/production.md for the topics that still hold their data until retention")


@cli.command(epilog=_reads(_KAFKA, _LINKS, ("TWILIO_AUTH_TOKEN", "SENDGRID_WEBHOOK_PUBLIC_KEY",
                                            "FOREWARN_WEBHOOK_MAX_AGE", "FOREWARN_WEBHOOK_INSECURE_LOCAL",
                                            "FOREWARN_TOPIC_DELIVERIES", "FOREWARN_TOPIC_CONSENT")))
def webhooks() -> None:
    """Receive Twilio status callbacks and SendGrid events (signed), onto the deliveries topic.

    Needs FOREWARN_WEBHOOK_PUBLIC_URL, the https:// URL the providers call (Twilio signs it), or
    FOREWARN_WEBHOOK_INSECURE_LOCAL=1 to receive on loopback only.
    """
    from aiokafka.errors import KafkaError
    from rich.markup import escape

    from streams.errors import ConfigError
    from streams.channels.receipts import serve

    settings = _configured_broker()
    try:
        serve(settings)
    except ConfigError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2)
    except KafkaError as exc:  # aiokafka's, which main() does not know
        err.print(f"[red]error[/red] the Kafka broker did not answer: {escape(str(exc))} "
                  f"(check KAFKA_BOOTSTRAP_SERVERS={settings.bootstrap_servers})", highlight=False)
        raise typer.Exit(2)


_CONSOLE = ("FOREWARN_CONSOLE_DB", "FOREWARN_CONSOLE_RETENTION_DAYS")
deadletter_cli = typer.Typer(no_args_is_help=True, help="What could not be handled: list it, send it back.")
cli.add_typer(deadletter_cli, name="deadletter")
report_cli = typer.Typer(no_args_is_help=True, help="Reports over what was sent and what customers did.")
cli.add_typer(report_cli, name="report")


@cli.command("console", epilog=_reads(_KAFKA, _CONSOLE, _CORE, _SOURCES, (
        "FOREWARN_CONSOLE_HOST", "FOREWARN_CONSOLE_PORT", "FOREWARN_CONSOLE_TOKEN")))
def console_command() -> None:
    """The web console: each customer's messages and why, outages, rules per day, dead letters (re-drive)."""
    from streams.console.serve import serve

    settings = _configured_broker()
    err.print(f"console on http://{settings.console_host}:{settings.console_port}/ "
              f"(store {settings.console_db}, catching up from {settings.bootstrap_servers})", highlight=False)
    serve(settings, settings.bootstrap_servers)


def _store(settings: Settings):
    """The console's store, caught up from the topics when KAFKA_BOOTSTRAP_SERVERS is set."""
    from streams.console.feed import Feed
    from streams.console.serve import open_store

    store = open_store(settings)
    if settings.bootstrap_servers:
        Feed(store, settings.bootstrap_servers, settings).catch_up()
    else:
        err.print(f"[dim]KAFKA_BOOTSTRAP_SERVERS unset: {settings.console_db} as it was last caught up[/dim]")
    return store


@cli.command(epilog=_reads(_KAFKA, _CONSOLE))
def history(customer: str, reveal: bool = typer.Option(False, help="show phone numbers and addresses (logged)")
            ) -> None:
    """What CUSTOMER was sent, what was held back and why, what they did: oldest first."""
    from streams.tools.activity import print_timeline

    settings = Settings.from_env()
    store = _store(settings)
    try:
        print_timeline(console, store.customer_timeline(customer), reveal, title=f"customer {customer}")
    finally:
        store.close()


@cli.command(epilog=_reads(_KAFKA, _CONSOLE))
def outage(outage_id: str) -> None:
    """An outage's story: started, told per channel and tier, updates, held back, resolved."""
    from streams.tools.activity import print_outage

    store = _store(Settings.from_env())
    try:
        story = store.outage_story(outage_id)
        if story is None:
            _fail(f"no outage {outage_id} in the console's store")
        print_outage(console, story)
    finally:
        store.close()


@deadletter_cli.command("list", epilog=_reads(_KAFKA, _CONSOLE))
def deadletter_list(limit: int = typer.Option(50, min=1)) -> None:
    """The newest dead letters: where, the hop, the reason, whether someone re-drove it."""
    from streams.tools.activity import print_dead_letters

    store = _store(Settings.from_env())
    try:
        print_dead_letters(console, store.dead_letters(limit))
    finally:
        store.close()


@deadletter_cli.command("redrive", epilog=_reads(_KAFKA, _CONSOLE))
def deadletter_redrive(where: str = typer.Argument(..., help="TOPIC/PARTITION/OFFSET, as `deadletter list` shows"),
                       who: str = typer.Option(..., help="your name, for the record")) -> None:
    """Send one dead letter back to its topic, once it can succeed; record who did."""
    from datetime import datetime, timezone

    from streams.console.serve import redrive_for

    try:
        topic, partition, offset = where.rsplit("/", 2)
        place = (topic, int(partition), int(offset))
    except ValueError:
        _fail(f"{where!r}: write TOPIC/PARTITION/OFFSET, e.g. orders/0/17")
    settings = _configured_broker()
    store = _store(settings)
    try:
        entry = store.dead_letter(*place)
        if entry is None:
            _fail(f"no dead letter at {where}")
        if entry.redriven_by:
            _fail(f"{where} was re-driven already, by {entry.redriven_by}")
        redrive = redrive_for(settings, settings.bootstrap_servers)
        why_not = redrive.check(entry)
        if why_not:
            _fail(f"not re-driven: {why_not}")
        redrive.send(entry)
        store.mark_redriven(*place, who, datetime.now(timezone.utc))
        console.print(f"{where} sent back to {entry.topic}; recorded as re-driven by {who}", highlight=False)
    finally:
        store.close()


@report_cli.command("deflection", epilog=_reads(_CORE, _LINKS))
def report_deflection(customers: Path = typer.Option(..., exists=True, dir_okay=False, help="customers file"),
                      events: Path = typer.Option(..., exists=True, dir_okay=False,
                                                  help="events, support.contacted among them"),
                      within: str = typer.Option("3d", help="a contact this soon after is about the same thing"),
                      rules: Optional[Path] = RULES_OPTION, templates: Optional[Path] = TEMPLATES_OPTION) -> None:
    """Did telling customers first spare them a call? Per rule: who was told, who was not, who still called."""
    from streams.core.policy import parse_duration
    from streams.tools.deflection import lines, report_from_simulation

    try:
        window = parse_duration(within)
    except ValueError:
        _fail(f"--within {within!r} is not a duration: a number and a unit, e.g. 3d")
    config = _preflight(_throwaway_secret(_settings(rules, templates), say=False))
    for line in lines(report_from_simulation(config, customers, events, window)):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@cli.command(epilog=_reads())
def imitation(port: int = typer.Option(0), sms_rate: Optional[float] = typer.Option(None),
              email_rate: Optional[float] = typer.Option(None),
              as_json: bool = typer.Option(False, "--json", help="one JSON line instead of shell exports")) -> None:
    """Run the local imitation of the Twilio and SendGrid APIs (127.0.0.1 only); prints the worker's environment.

    The output is `export` lines: paste them into the shell that runs the worker.
    """
    from streams.tools.imitation import serve

    serve(port=port, sms_rate=sms_rate, email_rate=email_rate, as_json=as_json)


def main() -> None:
    """The ``forewarn`` command: a mistake the user can fix is one plain line and exit 2, not a traceback."""
    try:
        code = cli(standalone_mode=False)  # click's usage errors come here, not to typer's boxed panel
    except Exception as exc:  # noqa: BLE001 - what is not the user's to fix is raised again
        code = _plain_error(exc)
    raise SystemExit(code if isinstance(code, int) else 0)


def _plain_error(exc: Exception) -> int:
    """Print ``exc`` as one line and return the exit code, or raise it again if it is a bug."""
    from kafka.errors import KafkaError
    from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer 0.29 vendors click

    from streams.errors import ForewarnError

    if isinstance(exc, typer.Abort):  # end of input at a prompt
        return 1
    if isinstance(exc, NoArgsIsHelpError):  # typer has printed the help already
        return exc.exit_code
    if isinstance(exc, ClickException):  # a missing file, a bad option, an unknown command
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else ""
        message, code = f"{where}{exc.format_message()}", exc.exit_code
    elif isinstance(exc, ForewarnError):
        message, code = str(exc), 2
    elif isinstance(exc, KafkaError):
        message, code = f"the Kafka broker did not answer: {exc} (check KAFKA_BOOTSTRAP_SERVERS)", 2
    elif isinstance(exc, OSError) and exc.filename:  # a file that cannot be read or written
        message, code = f"{exc.strerror}: {exc.filename}", 2
    else:
        raise exc
    err.print(f"[red]error[/red] {escape(message)}", highlight=False)
    return code


if __name__ == "__main__":
    main()
