"""What the worker benchmarks share: a scratch folder with the bench's rules, a deciding worker, /proc readings."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from streams.kafka.embedded import EmbeddedBroker, free_port
from streams.tools.worker_process import WorkerProcess


def workspace(prefix: str, rules: str) -> tuple[Path, Path]:
    """A fresh folder for one run, and the path of the rules written into it."""
    work = Path(tempfile.mkdtemp(prefix=f"forewarn-{prefix}-"))
    rules_path = work / "rules.yaml"
    rules_path.write_text(rules)
    return work, rules_path


def deciding_worker(broker: EmbeddedBroker, work: Path, rules_path: Path, **env: str) -> WorkerProcess:
    """One worker that ingests and decides but does not send (FOREWARN_DISPATCH=0), its log in ``work``.

    Its consumer group is ``worker.env["FOREWARN_APP_ID"]``; ``env`` adds or overrides settings.
    """
    base = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "FOREWARN_APP_ID": f"bench-{uuid.uuid4().hex[:6]}",
            "FOREWARN_RULES": str(rules_path), "FOREWARN_DISPATCH": "0", "FOREWARN_LOG_LEVEL": "warning",
            "FOREWARN_METRICS_PORT": str(free_port())}
    return WorkerProcess({**base, **env}, work / "worker.log").start()


def rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size in bytes, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
