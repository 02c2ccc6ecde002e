"""Shared test configuration: paths to the fixture and demo model repositories, and the
Redis server the tests use (``MODELGATE_TEST_REDIS_URL``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings

# Hypothesis's default deadline (200 ms an example) is a timed assertion: on a shared 2-core
# machine a pause of the VM fails a test that found nothing wrong. Correctness, not speed, is
# what the property tests check (speed is benchmarked in bench/).
settings.register_profile("modelgate", deadline=None)
settings.load_profile("modelgate")

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models"
DEMO_MODELS = ROOT / "build" / "models"
REDIS_URL = os.environ.get("MODELGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards. The tests
    assume nothing else about the server, which others may share."""
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    yield prefix
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


#: the folders whose files run longest (real processes, hundreds of generated requests)
_LONG = ("e2e", "attacks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files first: ``make test`` hands whole files to its pytest-xdist workers in
    collection order (``--dist loadfile``), and a long file handed out last would leave one
    worker running alone at the end. The order within a file stays as written."""
    items.sort(key=lambda item: not any(part in _LONG for part in item.path.parts))
