from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, free_port
from streams.core.render import Renderer
from streams.events import Schemas
from streams.kafka_tools import ensure_topics
from streams.process import WorkerProcess
from streams.settings import ROOT, Settings


def pytest_addoption(parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="the fault suite at full size (tests/faults; see the README)")


@pytest.fixture(scope="session")
def long_run(request) -> bool:
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def schemas() -> Schemas:
    return Schemas(ROOT / "schemas")


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    return Renderer(ROOT / "templates")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def broker():
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def settings(broker) -> Settings:
    settings = Settings.from_env()
    ensure_topics(broker.bootstrap, settings.topics.all(), settings.partitions)
    return settings


@pytest.fixture
def start_worker(broker, settings, tmp_path):
    """Start worker processes on the test's broker; every one is stopped at the end."""
    started: list[WorkerProcess] = []
    app_id = f"forewarn-test-{uuid.uuid4().hex[:8]}"

    def start(**env: str) -> WorkerProcess:
        base = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "FOREWARN_APP_ID": app_id,
                "FOREWARN_OUTBOX": str(tmp_path / "outbox"), "FOREWARN_METRICS_PORT": str(free_port()),
                "FOREWARN_CLOCK": "event"}
        worker = WorkerProcess({**base, **env}, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    start.app_id = app_id
    yield start
    for worker in started:
        worker.kill()
