"""Which database errors mean "the database is unavailable, retry" (503 with Retry-After)
and which are a bad query (a bug: 500), raised by a real PostgreSQL, not built by hand.

asyncpg's server errors reach SQLAlchemy as a plain ``DBAPIError`` whatever their SQLSTATE,
so a statement timeout or an administrator's shutdown of the connection would otherwise
look like a bug."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.sql.engine import create_engine, is_database_failure, reading, writing
from tests.contract.conftest import ADMIN_URL

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def postgres() -> AsyncIterator[AsyncEngine]:
    from sqlalchemy.engine import make_url

    url = make_url(ADMIN_URL).set(drivername="postgresql+asyncpg")
    engine = create_engine(url.render_as_string(hide_password=False), statement_timeout_s=0.2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_statement_timeout_is_unavailable(postgres: AsyncEngine) -> None:
    with pytest.raises(ModelgateError) as caught:
        async with reading(postgres) as connection:
            await connection.execute(text("SELECT pg_sleep(5)"))
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert caught.value.retry_after == 1.0
    assert is_database_failure(caught.value.__cause__)  # type: ignore[arg-type]


async def test_a_connection_ended_by_the_server_is_unavailable(postgres: AsyncEngine) -> None:
    """What a PostgreSQL restart does to open connections (SQLSTATE 57P01)."""
    with pytest.raises(ModelgateError) as caught:
        async with writing(postgres) as connection:
            await connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    async with reading(postgres) as connection:  # the pool replaced the dead connection
        assert (await connection.execute(text("SELECT 1"))).scalar() == 1


@pytest.mark.parametrize(
    "statement",
    [
        "SELEC 1",  # syntax
        "SELECT * FROM no_such_table_anywhere",  # undefined table
        "SELECT 1 / 0",  # division by zero
        "SELECT 'x'::int",  # invalid text representation
    ],
)
async def test_a_bad_query_is_not_a_database_failure(postgres: AsyncEngine, statement: str) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with reading(postgres) as connection:
            await connection.execute(text(statement))
    assert not is_database_failure(caught.value)
