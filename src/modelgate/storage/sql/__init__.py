"""The SQL backend (SQLAlchemy Core, async): SQLite embedded, PostgreSQL for scale-out.

::

    schema.py       the tables, as SQLAlchemy ``MetaData``
    engine.py       URL defaults, engine creation (timeouts, SQLite pragmas), migrations
    migrations/     Alembic scripts, run by :func:`migrate`, with no ``alembic.ini``
    identity.py     ``SqlIdentityStore``  (core.access.ports.IdentityStore)
    audit.py        ``SqlAuditLog``       (core.access.ports.AuditLog)
"""

from __future__ import annotations

from modelgate.storage.sql.audit import SqlAuditLog
from modelgate.storage.sql.engine import create_engine, database_url_for, migrate
from modelgate.storage.sql.identity import SqlIdentityStore

__all__ = ["SqlAuditLog", "SqlIdentityStore", "create_engine", "database_url_for", "migrate"]
