"""Alembic scripts for the SQL backend; run by ``modelgate.storage.sql.engine.migrate``."""
