"""Shared test configuration: paths to the fixture and demo model repositories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models"
DEMO_MODELS = ROOT / "build" / "models"


@pytest.fixture(scope="session")
def demo_models() -> Path:
    """The built demo repository (``make models``); its absence is a failure, not a skip."""
    if not (DEMO_MODELS / "credit-risk" / "model.yaml").is_file():
        pytest.fail(f"demo models are not built in {DEMO_MODELS}: run `make models`")
    return DEMO_MODELS


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings a developer's shell (or make) exports must not leak into tests; tests that
    want one set it themselves. MODELGATE_TEST_* name the test services and stay."""

    for name in list(os.environ):
        if name.startswith("MODELGATE_") and not name.startswith("MODELGATE_TEST_"):
            monkeypatch.delenv(name)
