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
from streams.settings import ROOT, Settings, settings_help

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Tell customers about a problem before they notice it.")
rules_cli = typer.Typer(no_args_is_help=True, help="Check the rules file.")
cli.add_typer(rules_cli, name="rules")
preferences_cli = typer.Typer(no_args_is_help=True, help="What a customer wants to hear: show it, or say it for them.")
cli.add_typer(preferences_cli, name="preferences")
console = Console()
err = Console(stderr=True, soft_wrap=True)


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


@cli.command(epilog="Settings, from the environment:\n\n" + settings_help().replace("\n", "\n\n"))
def worker() -> None:
    """Run the stream processors (embedded broker when KAFKA_BOOTSTRAP_SERVERS is unset)."""
    from streams.kafka.embedded import bootstrap_servers
    from streams.kafka.admin import ensure_topics
    from streams.kafka.security import broker_credentials

    from dataclasses import replace

    settings = Settings.from_env()
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


def _throwaway_secret(settings: Settings) -> Settings:
    """A run that sends nobody anything real signs its unsubscribe links with a key made for it."""
    if settings.unsubscribe_secret:
        return settings
    import secrets
    from dataclasses import replace

    key = secrets.token_urlsafe(32)
    os.environ["FOREWARN_UNSUBSCRIBE_SECRET"] = key  # the demo's worker and receiver processes too
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


@cli.command()
def produce(topic: str, file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Send each JSON line of FILE to TOPIC, keyed by customer or outage.

    A line that is not JSON, too large or refused by Kafka is reported by its number and the rest are still
    sent; exit 1 if any was refused. Events that break their schema are sent: they reach deadletter.
    """
    settings = _configured_broker()
    _send_numbered(settings.bootstrap_servers, topic, file, _event_lines(file), "lines")


@cli.command("load-customers")
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


@rules_cli.command("check")
def rules_check(file: Optional[Path] = typer.Argument(None, help="rules file (default config/rules.yaml)")) -> None:
    """Print every problem in the rules and templates with file and line; exit 1 if any."""
    from dataclasses import replace

    from streams.core.config import check_config

    settings = Settings.from_env()
    if file is not None:
        settings = replace(settings, rules_file=file)
    problems = check_config(settings)
    for problem in problems:
        err.print(f"[red]error[/red] {problem}", highlight=False)
    if problems:
        err.print(f"{len(problems)} problem(s) in {settings.rules_file}")
        raise typer.Exit(1)
    console.print(f"{settings.rules_file}: ok")


@cli.command()
def preview(rule: str, event: Path = typer.Option(..., exists=True), customer: Path = typer.Option(..., exists=True),
            channel: Optional[str] = typer.Option(None, help="render for this channel only")) -> None:
    """Render what RULE would send for one event and one customer record (waits and caps aside)."""
    from streams.core.decider import ADDRESS_FIELD
    from streams.core.rules import LOCALES
    from streams.core.events import parse_event

    config = _preflight(Settings.from_env())
    try:
        chosen = config.rules.get(rule)
    except KeyError:
        err.print(f"[red]error[/red] no rule '{rule}' in {config.rules.file}")
        raise typer.Exit(2)
    try:
        record = orjson.loads(customer.read_bytes())
    except orjson.JSONDecodeError as exc:
        _fail(f"{customer} is not a JSON customer record: {exc}")
    record.setdefault("id", record.pop("customer_id", "preview"))
    incoming = parse_event(event.read_bytes(), config.schemas)
    if chosen.condition is not None and not chosen.condition(event=incoming, customer=record):
        console.print(f"the condition of '{rule}' is false for this event and customer: nothing would be sent")
        return
    plan = chosen.plan_for(record.get("tier", "standard"))
    locale = record.get("locale") if record.get("locale") in LOCALES else config.rules.default_locale
    for name in [channel] if channel else plan.channels:
        rendered = config.renderer.render(name, locale, plan.template, event=incoming, customer=record)
        console.rule(f"{name} to {record.get(ADDRESS_FIELD[name])} ({locale}, template {plan.template})")
        if rendered.subject:
            console.print(f"[bold]Subject:[/bold] {rendered.subject}", highlight=False)
        console.print(rendered.body, highlight=False, markup=False)
        if rendered.segments:
            console.print(f"[dim]{rendered.segments.segments} segment(s), {rendered.segments.encoding}[/dim]")


@cli.command()
def simulate(rules: Path = typer.Option(ROOT / "config" / "rules.yaml", exists=True),
             customers: Path = typer.Option(..., exists=True), events: Path = typer.Option(..., exists=True),
             out: Path = typer.Option(Path("simulation"))) -> None:
    """Run the decision core over files on event time; write notifications, suppressed, rejected."""
    from dataclasses import replace

    from streams.core.policy import format_duration
    from streams.tools.simulate import simulate as run

    config = _preflight(_throwaway_secret(replace(Settings.from_env(), rules_file=rules)))
    started = time.perf_counter()
    report = run(config, customers, events, out)
    elapsed = time.perf_counter() - started
    table = Table(title=f"simulation: {report.events} events, {report.customers} customers, "
                        f"{report.rejected} rejected, {elapsed:.2f} s")
    for column in ("rule", "sent", "suppressed (by reason)", "most messages to one customer"):
        table.add_column(column)
    for rule_id, tally in sorted(report.rules.items()):
        reasons = ", ".join(f"{reason} {count}" for reason, count in tally.suppressed.most_common()) or "-"
        table.add_row(rule_id, str(tally.sent), reasons, str(tally.most_to_one_customer))
    console.print(table)
    budget = config.rules.budget
    if budget:
        console.print(f"contact budget: {budget.count} per {format_duration(budget.per)}; most contacts to one customer in any such "
                      f"window: {report.most_contacts(budget.per, essential=False)} without and "
                      f"{report.most_contacts(budget.per)} with essential (outage) messages, which the budget never holds back")
        for line in report.budget_use(budget):
            console.print(line)
    console.print(f"most messages to one customer, all rules and channels: {max(report.per_customer.values(), default=0)}")
    console.print(f"written to {out}/notifications.jsonl, suppressed.jsonl, rejected.jsonl")


@cli.command()
def generate(out: Path = typer.Option(Path("week")), customers: int = typer.Option(10_000),
             outages: int = typer.Option(15), seed: int = typer.Option(20261123)) -> None:
    """Write a synthetic week of events and its customers, for the simulator and benchmarks."""
    from streams.tools.generate import WeekSpec, generate_week

    customers_path, events_path = generate_week(WeekSpec(customers=customers, outages=outages, seed=seed), out)
    lines = sum(1 for _ in events_path.open("rb"))
    console.print(f"{customers} customers in {customers_path}, {lines} events in {events_path}")


@cli.command()
def demo(customers: Path = typer.Option(ROOT / "config" / "demo" / "customers.jsonl", exists=True),
         events: Path = typer.Option(ROOT / "config" / "demo" / "events.jsonl", exists=True),
         outbox: Optional[Path] = typer.Option(None, help="where the messages are written (default: "
                                                          "FOREWARN_OUTBOX, else outbox/); emptied first"),
         timeout: float = typer.Option(120.0),
         providers: str = typer.Option("outbox", help="outbox (files) or imitation (the Twilio and SendGrid "
                                                      "SDKs against a local imitation of their APIs)")) -> None:
    """Start everything on the embedded broker, replay the demo events, show what was sent."""
    from streams.tools.demo import run_demo

    if providers not in ("outbox", "imitation"):
        _fail("--providers is outbox or imitation")
    settings = _throwaway_secret(Settings.from_env())
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


@preferences_cli.command("show")
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


@preferences_cli.command("set")
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


@cli.command()
def forget(customer: str, reason: Optional[str] = typer.Option(None, help="e.g. the erasure request's reference")
           ) -> None:
    """Erase CUSTOMER: directory, state, waiting messages; preferences keep only a no to everything."""
    from streams.tools.preferences import forget as erase

    settings = _configured_broker()
    erase(settings, settings.bootstrap_servers, customer, reason)
    console.print(f"{customer}: customer.deleted and a tombstone sent to {settings.topics.customers}; "
                  "see docs/production.md for the topics that still hold their data until retention")


@cli.command()
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


@cli.command()
def imitation(port: int = typer.Option(0), sms_rate: Optional[float] = typer.Option(None),
              email_rate: Optional[float] = typer.Option(None)) -> None:
    """Run the local imitation of the Twilio and SendGrid APIs (127.0.0.1 only); prints the worker's environment."""
    from streams.tools.imitation import serve

    serve(port=port, sms_rate=sms_rate, email_rate=email_rate)


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
