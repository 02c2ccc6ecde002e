"""Alembic's environment: runs the migrations on the connection ``migrate`` hands it.

modelgate has no ``alembic.ini`` and no offline (``--sql``) mode: ``engine.migrate`` builds
the configuration in code and passes an open connection, inside a transaction that holds
the migration lock, through ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from modelgate.storage.sql.schema import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError(
        "modelgate migrations run through modelgate.storage.sql.engine.migrate(url), "
        "not the alembic command line"
    )
run_migrations(_connection)
