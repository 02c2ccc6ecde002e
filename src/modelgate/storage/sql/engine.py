"""Engines for the SQL backend: which database, with which timeouts, and its migrations.

SQLite (the embedded default) and PostgreSQL (scale-out) differ in how a writer excludes
other writers, and the stores must not care:

- SQLite: ``sqlite3``'s own transaction handling is switched off (it never BEGINs before a
  SELECT, so a read-then-write is not isolated) and SQLAlchemy emits BEGIN itself. A
  :func:`write_transaction` begins with ``BEGIN IMMEDIATE``, which takes SQLite's single
  write lock at once: a second writer, in this process or another, waits up to the busy
  timeout for it. Plain reads use a deferred BEGIN and, under WAL, never block writers.
- PostgreSQL: a :func:`write_transaction` is an ordinary READ COMMITTED transaction; a
  store that must serialize more than row locks do takes a transaction-level advisory
  lock inside it (``pg_advisory_xact_lock``), released at commit or rollback.

Every outbound call is bounded: asyncpg's connect timeout and ``command_timeout``, the
server's ``statement_timeout`` (which also bounds waits for locks), the pool's checkout
timeout, and SQLite's busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from asyncpg.exceptions import InternalClientError
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "DATABASE_FAILURES",
    "MIGRATIONS_DIR",
    "advisory_xact_lock",
    "create_engine",
    "database_url_for",
    "is_database_failure",
    "migrate",
    "reading",
    "unavailable",
    "write_transaction",
    "writing",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: what a query raises when the database is down, cut off or too slow (not a bad query):
#: connection errors as SQLAlchemy wraps them, the pool's checkout timeout, what asyncpg
#: raises on connect (refused, reset) or on its command timeout, and asyncpg's own error for
#: a stream it cannot read (which SQLAlchemy passes on unwrapped)
DATABASE_FAILURES = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    OSError,
    TimeoutError,
    InternalClientError,
)
#: SQLSTATE classes that say the server, not the query, failed: connection exception (08,
#: including a protocol violation after a damaged stream), insufficient resources (53, too
#: many connections), operator intervention (57: shutting down, starting up, statement
#: timeout) and transaction rollback (40: serialization failure, deadlock)
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
DATABASE_FILE = "modelgate.db"

# The execution option that turns a SQLite BEGIN into BEGIN IMMEDIATE.
_WRITE_LOCK = "modelgate_write_lock"
# Advisory lock keys (any 64-bit ints, fixed forever): one per serialized operation.
_MIGRATION_LOCK_KEY = 0x6D67_6D69_6772_6174  # "mgmigrat"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def database_url_for(data_dir: Path | str, url: str | None = None) -> str:
    """The async SQLAlchemy URL to use: ``url`` if given, else a SQLite file in ``data_dir``.

    ``postgres://``, ``postgresql://`` and ``sqlite://`` URLs get their async driver
    (asyncpg, aiosqlite); any other scheme is INVALID_ARGUMENT.
    """
    if url is None or not url.strip():
        return f"sqlite+aiosqlite:///{Path(data_dir).resolve() / DATABASE_FILE}"
    try:
        parsed = make_url(url.strip())
    except ArgumentError as exc:
        raise invalid(f"not a database URL: {exc}") from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        supported = "postgresql://, postgresql+asyncpg://, sqlite://, sqlite+aiosqlite://"
        raise invalid(f"unsupported database URL scheme {parsed.drivername!r} ({supported})")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    connect_timeout_s: float = 10.0,
    statement_timeout_s: float = 30.0,
    busy_timeout_s: float = 10.0,
) -> AsyncEngine:
    """An async engine for ``url`` (as returned by :func:`database_url_for`)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return create_async_engine(
            parsed,
            pool_pre_ping=True,
            pool_timeout=connect_timeout_s,
            connect_args={
                "timeout": connect_timeout_s,
                # client side: a query whose answer never comes (network partition)
                "command_timeout": statement_timeout_s + 5.0,
                # server side: a query that runs or waits for a lock too long
                "server_settings": {
                    "statement_timeout": str(int(statement_timeout_s * 1000)),
                    "idle_in_transaction_session_timeout": str(int(statement_timeout_s * 2000)),
                    "application_name": "modelgate",
                },
            },
        )
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed, pool_timeout=connect_timeout_s, connect_args={"timeout": busy_timeout_s}
        )
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    raise invalid(f"unsupported database backend {backend!r}")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 stops issuing BEGIN itself; _on_sqlite_begin does it for every transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # Per connection. WAL is not set here but by migrate: it is a property of the file,
        # and switching to it fails at once, without the busy handler, while another
        # connection is switching too.
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe under WAL
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE_LOCK, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: on SQLite it holds the database's write lock from
    its first statement, so a read inside it stays true until commit."""
    async with engine.connect() as connection:
        await connection.execution_options(**{_WRITE_LOCK: True})
        async with connection.begin():
            yield connection


def is_database_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is down, restarting, cut off or too slow (retry
    later), as opposed to a bad query. asyncpg's server errors reach SQLAlchemy as a plain
    :class:`DBAPIError` whatever their SQLSTATE, so the type alone does not tell."""
    if isinstance(exc, DATABASE_FAILURES):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None)
        return isinstance(state, str) and state[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


def unavailable(exc: BaseException) -> ModelgateError:
    """What a store raises for a database failure (:func:`is_database_failure`):
    UNAVAILABLE, so that a request answers 503 with ``Retry-After`` and a worker waits,
    instead of a 500."""
    return ModelgateError(ErrorKind.UNAVAILABLE, "the database is unavailable", retry_after=1.0)


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """:func:`write_transaction`, with a database failure raised as UNAVAILABLE."""
    try:
        async with write_transaction(engine) as connection:
            yield connection
    except Exception as exc:
        if is_database_failure(exc):
            raise unavailable(exc) from exc
        raise


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads, with a database failure raised as UNAVAILABLE."""
    try:
        async with engine.connect() as connection:
            yield connection
    except Exception as exc:
        if is_database_failure(exc):
            raise unavailable(exc) from exc
        raise


async def advisory_xact_lock(connection: AsyncConnection, key: int) -> None:
    """Serialize on ``key`` until the transaction ends (PostgreSQL; SQLite's write
    transaction already excludes every other writer)."""
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def alembic_config() -> Config:
    """Alembic's configuration, built in code: the package needs no ``alembic.ini``."""
    config = Config()
    # Config values go through configparser interpolation: a '%' in the path must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


async def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``).

    Idempotent, and safe to run from several processes at once: the upgrade runs in one
    write transaction under a lock, so the second process finds the schema current.
    """
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            await _use_wal(engine)
        async with write_transaction(engine) as connection:
            await advisory_xact_lock(connection, _MIGRATION_LOCK_KEY)
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def _use_wal(engine: AsyncEngine, timeout_s: float = 10.0) -> None:
    """Switch the SQLite file to write-ahead logging (readers never block the writer).

    Another process may be switching at the same moment, and SQLite then answers "locked"
    at once instead of waiting: retry until ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with engine.connect() as connection:
        # the driver's own connection: no SQLAlchemy BEGIN, which the switch must not be in
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        while True:
            try:
                cursor = await driver.execute("PRAGMA journal_mode=WAL")
                await cursor.close()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.02)
