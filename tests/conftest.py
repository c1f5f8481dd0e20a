from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from streams.kafka.embedded import EmbeddedBroker, free_port
from streams.core.render import Renderer
from streams.core.events import Schemas
from streams.kafka.admin import ensure_topics
from streams.tools.worker_process import WorkerProcess
from streams.settings import ROOT, Settings


# A worker's group join waits about half the session timeout on the embedded broker: 3 s instead of
# production's 5 for each of the suite's few dozen worker starts. Every worker the tests start inherits it.
os.environ.setdefault("FOREWARN_SESSION_TIMEOUT", "6")
# The same signing key for every worker and simulator a test starts, so their unsubscribe links agree.
os.environ.setdefault("FOREWARN_UNSUBSCRIBE_SECRET", "tests-only-" + uuid.uuid4().hex)


SERIAL_GROUPS = ("kills", "poison", "providers")  # longest chain first


def pytest_collection_modifyitems(items) -> None:
    """The fault tests run in groups, each one test after the other on one xdist worker: the longest chains,
    so they start first."""
    def rank(item) -> int:
        mark = item.get_closest_marker("xdist_group")
        return SERIAL_GROUPS.index(mark.args[0]) if mark and mark.args[0] in SERIAL_GROUPS else len(SERIAL_GROUPS)

    items.sort(key=rank)


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


def event(event_id: str, event_type: str, data: dict, customer_id: str | None = None) -> dict:
    """An event envelope that happened now."""
    envelope = {"id": event_id, "type": event_type, "occurred_at": datetime.now(timezone.utc).isoformat(), "data": data}
    if customer_id:
        envelope["customer_id"] = customer_id
    return envelope


def cart(event_id: str, customer_id: str, cart_id: str) -> dict:
    """A ``cart.updated`` event with one item."""
    return event(event_id, "cart.updated", {
        "cart_id": cart_id, "items": [{"sku": "A1", "name": "Wifi-versterker", "qty": 1, "unit_price": 49.95}],
        "total": 49.95, "currency": "EUR", "checkout_url": f"https://shop.example.nl/checkout/{cart_id}"}, customer_id)


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
                "FOREWARN_CLOCK": "event", "FOREWARN_DATA_DIR": str(tmp_path / "data")}
        worker = WorkerProcess({**base, **env}, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    start.app_id = app_id
    yield start
    for worker in started:
        worker.kill()


SCREENSHOTS = ROOT / "artefacts" / "screenshots"  # kept after a run: the browser tests' evidence


@pytest.fixture
def browser():
    """Headless chromium, with the flags this machine's closed network needs."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "needs Debian's chromium and chromium-driver (make test installs them)"
    profile = tempfile.mkdtemp(prefix="forewarn-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=800,700", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
