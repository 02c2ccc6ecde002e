"""``SqlDeploymentStore``: each model's deployment in SQLite or PostgreSQL.

A write is compare and set on ``revision``: an insert for the first revision (the primary
key refuses a second one), an ``UPDATE ... WHERE revision = :expected`` after that, so
two replicas writing at once cannot both succeed, on either backend.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import RowMapping, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.traffic.deployments import (
    Deployment,
    deployment_from_document,
    deployment_to_document,
)
from modelgate.storage.sql.engine import reading, writing
from modelgate.storage.sql.schema import NAME_LENGTH, deployments
from modelgate.storage.sql.values import checked_text, checked_time, storable

__all__ = ["SqlDeploymentStore"]

_D = deployments.c
#: every deployment, by model name (bytewise on PostgreSQL, as SQLite compares): built
#: once, as every replica reads it every ``deployment_refresh_seconds``, changed or not
_ALL = select(deployments).order_by(_D.model)
_ALL_POSTGRES = select(deployments).order_by(_D.model.collate("C"))


class SqlDeploymentStore:
    """:class:`~modelgate.core.traffic.ports.DeploymentStore` on ``deployments``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def get(self, model: str) -> Deployment | None:
        if not storable(model, NAME_LENGTH):
            return None
        async with reading(self._engine) as connection:
            result = await connection.execute(select(deployments).where(_D.model == model))
            row = result.first()
        return None if row is None else _deployment(row._mapping)

    async def list(self) -> list[Deployment]:
        async with reading(self._engine) as connection:
            result = await connection.execute(_ALL_POSTGRES if self._postgres else _ALL)
            return [_deployment(row._mapping) for row in result]

    async def put(self, deployment: Deployment, expected_revision: int) -> bool:
        if deployment.revision != expected_revision + 1:
            raise ValueError("a deployment's revision must be expected_revision + 1")
        if deployment.updated_at is None:
            raise ValueError("a stored deployment needs updated_at")
        row: dict[str, Any] = {
            "model": checked_text(deployment.model, "model", NAME_LENGTH),
            "revision": deployment.revision,
            "spec": deployment_to_document(deployment),
            "updated_at": checked_time(deployment.updated_at, "updated_at"),
            "updated_by": checked_text(deployment.updated_by, "updated_by", NAME_LENGTH),
        }
        if expected_revision == 0:
            try:
                async with writing(self._engine) as connection:
                    await connection.execute(deployments.insert().values(row))
            except IntegrityError:
                return False  # someone created it first
            return True
        statement = (
            deployments.update()
            .where(_D.model == deployment.model, _D.revision == expected_revision)
            .values(row)
        )
        async with writing(self._engine) as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount == 1)

    async def delete(self, model: str) -> bool:
        if not storable(model, NAME_LENGTH):
            return False
        async with writing(self._engine) as connection:
            result = await connection.execute(deployments.delete().where(_D.model == model))
        return bool(result.rowcount)


def _deployment(row: RowMapping) -> Deployment:
    return deployment_from_document(
        row["model"],
        row["spec"],
        revision=row["revision"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )
