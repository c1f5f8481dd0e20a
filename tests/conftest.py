from __future__ import annotations

from pathlib import Path

import pytest

from streams.core.render import Renderer
from streams.events import Schemas
from streams.settings import ROOT


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
