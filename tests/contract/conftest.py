"""Backends for the contract suites: every test taking ``engine`` runs once per backend.

- ``sqlite``: a file in a temporary folder.
- ``postgres``: a database of its own (``modelgate_test_<hex>``) on the PostgreSQL server at
  ``MODELGATE_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
  created for this test run and dropped at its end. The server is required: its absence
  is a failure, not a skip.

Each backend's database is created and migrated once per run; each test starts from empty
tables (``clear_tables``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.storage.sql.engine import create_engine, migrate, write_transaction
from modelgate.storage.sql.schema import metadata

ADMIN_URL = os.environ.get(
    "MODELGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgres"]
T = TypeVar("T")
S = TypeVar("S")


def run_apart(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a loop of its own, in a thread of its own, so that
    session fixtures never touch the loop pytest-asyncio gives each test."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL, timeout=10, command_timeout=60)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def new_postgres_database() -> str:
    """Create an empty database (UTF-8, from template0) and return its async URL."""
    name = f"modelgate_test_{secrets.token_hex(6)}"
    try:
        run_apart(_admin(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {ADMIN_URL} is required by the contract tests: {exc}")
    url = make_url(ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    run_apart(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def new_sqlite_database(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'modelgate.db'}"


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = new_sqlite_database(tmp_path_factory.mktemp("sqlite"))
    run_apart(migrate(url))
    return url


@pytest.fixture(scope="session")
def _postgres_url() -> Iterator[str]:
    url = new_postgres_database()
    try:
        run_apart(migrate(url))
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def migrated_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The run's migrated database of ``backend``, as left by the previous test."""
    return str(request.getfixturevalue(f"_{backend}_url"))


@pytest.fixture
async def engine_url(migrated_url: str) -> str:
    """A migrated database of ``backend`` with empty tables."""
    url = migrated_url
    engine = create_engine(url)
    try:
        await clear_tables(engine)
    finally:
        await engine.dispose()
    return url


@pytest.fixture
async def engine(engine_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(engine_url)
    try:
        yield engine
    finally:
        await engine.dispose()


#: the backends of a store that also has an in-memory implementation
WITH_MEMORY = ["memory", *BACKENDS]


def store_factory(
    backend: str,
    request: pytest.FixtureRequest,
    memory: Callable[[], S],
    sql: Callable[[AsyncEngine], S],
) -> Callable[[], Awaitable[S]]:
    """A factory of empty stores of ``backend`` (one per Hypothesis example): ``memory()``,
    or ``sql(engine)`` on the run's database of that backend with its tables emptied."""
    if backend == "memory":

        async def fresh_memory() -> S:
            return memory()

        return fresh_memory
    engine: AsyncEngine = request.getfixturevalue("engine")

    async def fresh_sql() -> S:
        await clear_tables(engine)
        return sql(engine)

    return fresh_sql


async def clear_tables(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as connection:
        for table in reversed(metadata.sorted_tables):
            await connection.execute(delete(table))
