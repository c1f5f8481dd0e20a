"""The one exception tree of forewarn.

    ForewarnError
    ├── ConfigError             refused at start-up: file, line, plain message
    │   ├── RulesError          rules.yaml does not hold up
    │   ├── TemplateError       a template is missing, broken, unsafe or fails to render
    │   │   └── TemplateBudgetExceeded  a render or condition ran out of time, size, steps or calls
    │   └── RulesInvalid        several of the above at once (``problems``)
    ├── EventError              an incoming event is not JSON or breaks its schema
    ├── ReceiptRefused          a delivery receipt is forged, stale, replayed or unsigned (403)
    │   └── ReceiptMalformed    not shaped as the provider sends it (400, 413, 415)
    ├── UnsubscribeRefused      an unsubscribe link is forged, malformed or expired
    ├── BrokerError             the embedded broker would not start or answer,
    │                           or a tool's messages were not all delivered
    └── ChannelError            a channel could not hand a message over
        ├── ChannelRejected     permanent: invalid number, unsubscribed; do not retry
        └── ChannelUnavailable  transient: retry later (``retry_after`` seconds, if known)
            ├── Throttled       the provider said 429
            └── OutcomeUnknown  5xx or time-out after a send: ask the provider before sending again

Channels raise; they never return False.
"""

from __future__ import annotations


class ForewarnError(Exception):
    """Root of every error forewarn raises on purpose."""


class ConfigError(ForewarnError):
    """Configuration that must be fixed before the worker may start."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class RulesError(ConfigError):
    """A rule is malformed or names something that does not exist."""


class TemplateError(ConfigError):
    """A template is missing, does not parse, is unsafe, or fails to render."""


class TemplateBudgetExceeded(TemplateError):
    """A render or a rule condition went over a budget of streams.core.render (time, size, steps, calls) and was stopped."""


class RulesInvalid(ConfigError):
    """Several configuration problems at once; ``problems`` holds each of them."""

    def __init__(self, problems: list[ConfigError]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __str__(self) -> str:
        return self.message


class EventError(ForewarnError):
    """An incoming event that cannot be processed; it goes to the dead-letter topic."""


class ReceiptRefused(ForewarnError):
    """A receipt we do not believe: ``reason`` is forged, stale, replayed or unsigned."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ReceiptMalformed(ReceiptRefused):
    """A receipt no provider sends: bad form, JSON, text or field; too large (413); wrong content type (415)."""

    def __init__(self, detail: str, status: int = 400):
        super().__init__("malformed")
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        return f"malformed: {self.detail}"


class BrokerError(ForewarnError):
    """The embedded broker did not start or does not answer, or messages given to Kafka were not delivered."""


class UnsubscribeRefused(ForewarnError):
    """An unsubscribe token does not hold: forged or malformed (``ticket`` None), or expired."""

    def __init__(self, message: str, ticket=None):
        super().__init__(message)
        self.ticket = ticket


class ChannelError(ForewarnError):
    """A channel could not hand a message to its provider."""


class ChannelRejected(ChannelError):
    """The provider refused the message for good (invalid number, unsubscribed, ...)."""

    def __init__(self, message: str, code: str | int | None = None):
        super().__init__(message)
        self.code = code


class ChannelUnavailable(ChannelError):
    """The provider could not take the message now; it may later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Throttled(ChannelUnavailable):
    """The provider said "too many requests" (HTTP 429); ``retry_after`` when it said when."""


class OutcomeUnknown(ChannelUnavailable):
    """The request may or may not have been taken (5xx, time-out, connection lost mid-answer).

    Neither Twilio nor SendGrid takes an idempotency key, so sending again could
    send twice: ask the provider (``Channel.find_sent``) before sending again.
    """
