"""Migrations: ``migrate`` creates the schema of ``schema.py``, and running it again is a no-op."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from modelgate.storage.sql.engine import create_engine, migrate
from modelgate.storage.sql.schema import metadata, tenants

from .conftest import drop_postgres_database, new_postgres_database, new_sqlite_database

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TABLES = {
    "plans",
    "tenants",
    "api_keys",
    "audit_log",
    "usage_records",
    "prices",
    "payload_logs",
    "payload_consents",
    "predictions",
    "prediction_feedback",
    "deployments",  # 0005
    "jobs",  # 0006
    "job_items",
    "idempotency_keys",  # 0007
}
#: the newest revision
HEAD = "0010"


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database, never migrated."""
    if backend == "sqlite":
        yield new_sqlite_database(tmp_path)
        return
    url = new_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


async def _state(url: str) -> tuple[set[str], list[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return tables, [row[0] for row in versions]
    finally:
        await engine.dispose()


async def test_migrate_creates_every_table_and_twice_is_a_no_op(fresh_url: str) -> None:
    await migrate(fresh_url)
    tables, versions = await _state(fresh_url)
    assert tables == TABLES | {"alembic_version"}
    assert versions == [HEAD]

    await migrate(fresh_url)
    assert await _state(fresh_url) == (tables, versions)


async def test_processes_starting_together_migrate_once(fresh_url: str) -> None:
    await asyncio.gather(migrate(fresh_url), migrate(fresh_url), migrate(fresh_url))
    tables, versions = await _state(fresh_url)
    assert tables == TABLES | {"alembic_version"}
    assert versions == [HEAD]


async def test_migrations_build_exactly_the_tables_of_schema_py(migrated_url: str) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_a_sqlite_file_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    url = new_sqlite_database(tmp_path)
    await migrate(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            assert mode == "wal"
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(
                    insert(tenants).values(
                        id="t1", name="n", plan="no-such-plan", created_at=T0, disabled=False
                    )
                )
    finally:
        await engine.dispose()
