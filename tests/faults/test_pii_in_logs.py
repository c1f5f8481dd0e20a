"""No phone number or e-mail address of a customer in any log, at any level.

The whole demo runs with the real SDKs against the provider imitation, the
worker at debug level; its console output and the worker's log are then
searched for every address the demo customers have.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.settings import ROOT

pytestmark = pytest.mark.broker
DEMO = ROOT / "config" / "demo"


def demo_addresses() -> list[str]:
    customers = [orjson.loads(line) for line in (DEMO / "customers.jsonl").read_bytes().splitlines() if line.strip()]
    return [c[field] for c in customers for field in ("phone", "email") if c.get(field)]


def test_a_full_demo_at_debug_level_logs_no_phone_number_or_email_address(tmp_path):
    env = {**os.environ, "FOREWARN_LOG_LEVEL": "debug", "COLUMNS": "400", "PYTHONPATH": str(ROOT)}
    finished = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--providers", "imitation",
                               "--outbox", str(tmp_path / "outbox")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    console = finished.stdout + finished.stderr
    assert finished.returncode == 0, console[-3000:]
    worker_log = Path(re.search(r"worker log: (\S+)", console).group(1)).read_text(errors="replace")
    assert "DEBUG" in worker_log, "the worker did not log at debug level: the search below would prove little"
    assert re.search(r"\+316\*+\d\d", console + worker_log), "masked numbers expected where messages are reported"
    for name, text in (("console", console), ("worker log", worker_log)):
        flat = re.sub(r"\s+", "", text)  # an address wrapped over two lines is still an address
        for address in demo_addresses():
            variants = {address, address.lstrip("+"), address.lower()}
            found = [v for v in variants if v in text or v in flat]
            assert not found, f"{name} contains {found[0][:4]}..."
