"""``modelgate plans create``: a plan given no quota gets rows and tokens quotas per day, so
the work a tenant causes is bounded from its first plan (finding 3); 0 sets none."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelgate.cli import app
from modelgate.core.access.identity import Plan
from modelgate.core.access.tenancy import DEFAULT_ROWS_PER_DAY, DEFAULT_TOKENS_PER_DAY
from modelgate.storage.sql.engine import create_engine, database_url_for
from modelgate.storage.sql.identity import SqlIdentityStore


def _plan(data_dir: Path, name: str) -> Plan:
    async def read() -> Plan | None:
        engine = create_engine(database_url_for(data_dir))
        try:
            return await SqlIdentityStore(engine).get_plan(name)
        finally:
            await engine.dispose()

    plan = asyncio.run(read())
    assert plan is not None
    return plan


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MODELGATE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}


def _create(env: dict[str, str], *args: str) -> None:
    result = CliRunner().invoke(app, ["plans", "create", *args], env=env)
    assert result.exit_code == 0, result.output


def test_a_plan_given_no_quota_gets_rows_and_tokens_per_day(
    env: dict[str, str], tmp_path: Path
) -> None:
    _create(env, "basic", "--rps", "100")
    plan = _plan(tmp_path, "basic")
    assert plan.rows_per_day == DEFAULT_ROWS_PER_DAY == 1_000_000
    assert plan.tokens_per_day == DEFAULT_TOKENS_PER_DAY == 10_000_000
    assert plan.requests_per_day is None and plan.rows_per_month is None


def test_a_plan_given_its_own_quotas_keeps_exactly_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    _create(env, "daily", "--requests-per-day", "50")
    _create(env, "metered", "--rows-per-day", "500", "--tokens-per-day", "0")
    daily, metered = _plan(tmp_path, "daily"), _plan(tmp_path, "metered")
    assert (daily.requests_per_day, daily.rows_per_day, daily.tokens_per_day) == (50, None, None)
    assert (metered.rows_per_day, metered.tokens_per_day) == (500, None)  # 0: none


def test_zero_quotas_make_an_unmetered_plan(env: dict[str, str], tmp_path: Path) -> None:
    _create(env, "open", "--rows-per-day", "0", "--tokens-per-day", "0")
    plan = _plan(tmp_path, "open")
    assert plan.rows_per_day is None and plan.tokens_per_day is None
