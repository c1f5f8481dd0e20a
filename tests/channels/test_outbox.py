"""The outbox channel on a disk that fills up: lines whole or not at all, a transient error, writing again later."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.channels.outbox import OutboxChannel
from streams.errors import ChannelUnavailable
from tests.channels.support import notification

FULL = Path("/dev/full")  # every write: ENOSPC, as on a full disk


def lines(outbox: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in (outbox / "notifications.jsonl").read_bytes().splitlines()]


def test_a_full_disk_is_a_transient_error_and_the_message_is_written_once_space_returns(tmp_path):
    outbox = OutboxChannel(tmp_path)
    asyncio.run(outbox.send(notification(1)))
    kept = tmp_path / "kept.jsonl"
    (tmp_path / "notifications.jsonl").rename(kept)
    (tmp_path / "notifications.jsonl").symlink_to(FULL)
    for message in (notification(2), notification(3, "email")):
        with pytest.raises(ChannelUnavailable, match="not writable"):
            asyncio.run(outbox.send(message))
    assert list((tmp_path / "email").iterdir()) == []  # no .eml of a message that was not written
    (tmp_path / "notifications.jsonl").unlink()
    kept.rename(tmp_path / "notifications.jsonl")  # space is back
    asyncio.run(outbox.send(notification(2)))
    asyncio.run(outbox.send(notification(3, "email")))
    assert lines(tmp_path) == ["ntf-000001", "ntf-000002", "ntf-000003"]


WRITER = """
import asyncio, resource, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from streams.channels.outbox import OutboxChannel
from streams.errors import ChannelUnavailable
from tests.channels.support import notification
outbox = OutboxChannel(Path({folder!r}))
asyncio.run(outbox.send(notification(1)))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead
size = (Path({folder!r}) / "notifications.jsonl").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
try:
    asyncio.run(outbox.send(notification(2, body="x" * 500)))
except ChannelUnavailable as exc:
    print("unavailable:", exc)
"""


def test_a_line_the_disk_takes_only_part_of_is_cut_off_again(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-c", WRITER.format(root=root, folder=str(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert "unavailable:" in result.stdout, result.stderr
    assert lines(tmp_path) == ["ntf-000001"]  # parses whole: no half line left behind
    assert (tmp_path / "notifications.jsonl").read_bytes().endswith(b"\n")
