"""Customer data is personal data: phone numbers and addresses never reach a log whole."""

from __future__ import annotations

import logging
import re
from typing import Any

# E.164 (+31612345678, also written with spaces) or a Dutch national mobile (0612345678); not any long number.
PHONE = re.compile(r"(?<![\w.])(?:\+\d[\d ]{7,16}\d|0\d{9})(?![\w.])")
EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_phone(number: str) -> str:
    digits = number.strip()
    return digits[:4] + "*" * max(0, len(digits) - 6) + digits[-2:] if len(digits) > 6 else "***"


def mask_email(address: str) -> str:
    return EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", address)


def mask(text: str) -> str:
    """Mask every phone number and email address in free text."""
    return PHONE.sub(lambda m: mask_phone(m.group(0)), mask_email(text))


class MaskingFilter(logging.Filter):
    """For handlers set up by hand: masks the message before any formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


class MaskingFormatter(logging.Formatter):
    """Wraps a handler's formatter and masks what it produced, tracebacks included."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask(self.inner.format(record))


def install(logger: logging.Logger | None = None) -> None:
    """Mask every handler of ``logger`` (default: the root logger), whoever configured it."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not isinstance(handler.formatter, MaskingFormatter):
            handler.setFormatter(MaskingFormatter(handler.formatter))


# Their debug output holds the raw bytes of the records they fetch and send: names, numbers, addresses.
# In the worker kafka-python only serves the end-offset checks, which log their own failures; its
# transport logs a traceback for every dropped connection it then retries.
RAW_RECORD_LOGGERS = {"kafka": "CRITICAL", "aiokafka": "INFO"}


def masked(inner: str, **options: Any) -> MaskingFormatter:
    """A ``logging.config`` factory: the formatter ``inner`` names, masked."""
    module, _, name = inner.rpartition(".")
    formatter_class = getattr(__import__(module, fromlist=[name]), name)
    fmt = options.pop("format", None)
    return MaskingFormatter(formatter_class(fmt=fmt, **options))


def logging_config() -> dict[str, Any]:
    """For faust's own logging set-up (``logging_config``), so it holds from the worker's first line.

    mode merges it into what it builds: its two formatters come masked, and the
    loggers that print raw records stay quiet at every level.
    """
    from mode.utils.logging import DEFAULT_FORMATTERS  # only where faust runs

    formatters = {name: {"()": "streams.privacy.masked", "inner": spec["()"],
                         **{k: v for k, v in spec.items() if k != "()"}}
                  for name, spec in DEFAULT_FORMATTERS.items()}
    return {"merge": True, "version": 1, "formatters": formatters,
            "loggers": {name: {"level": level} for name, level in RAW_RECORD_LOGGERS.items()}}

