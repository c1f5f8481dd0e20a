"""Customer lists from ops (JSON Lines or CSV) as ``customer.upserted`` events."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

TRUE = {"true", "1", "yes", "ja", "y"}
CSV_COLUMNS = ("customer_id", "name", "phone", "email", "locale", "timezone", "tier", "postcode", "node_id",
               "critical", "consent_sms", "consent_email", "marketing_sms", "marketing_email")


def write_customer_csv(path: Path, rows: Iterable[Iterable[str]]) -> Path:
    """A customers CSV as ``load-customers`` reads it: the header, then ``rows`` in ``CSV_COLUMNS`` order."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(CSV_COLUMNS)
        out.writerows(rows)
    return path


def read_customer_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, flat record or None, reason or None) for each customer in the file."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                yield line, _from_csv(row), None
        return
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield line, None, f"not JSON: {exc}"
                continue
            if not isinstance(record, dict) or "customer_id" not in record:
                yield line, None, "a customer line needs an object with customer_id"
                continue
            yield line, record, None


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {k: (v or "").strip() for k, v in row.items() if k}
    record["consents"] = {"sms": record.pop("consent_sms", "").lower() in TRUE,
                          "email": record.pop("consent_email", "").lower() in TRUE}
    marketing = {channel: record.pop(f"marketing_{channel}").lower() in TRUE
                 for channel in ("sms", "email") if f"marketing_{channel}" in record}
    if marketing:
        record["consents"]["marketing"] = marketing
    if "critical" in record:
        record["critical"] = record["critical"].lower() in TRUE
    if not record.get("node_id"):
        record.pop("node_id", None)
    return record


def upsert_event(record: dict[str, Any], at: datetime | None = None, sequence: int = 0) -> dict[str, Any]:
    data = {k: v for k, v in record.items() if k != "customer_id"}
    moment = at or datetime.now(timezone.utc)
    return {"id": f"cust-{record['customer_id']}-{int(moment.timestamp())}-{sequence}",
            "type": "customer.upserted", "occurred_at": moment.isoformat(),
            "customer_id": record["customer_id"], "data": data}
