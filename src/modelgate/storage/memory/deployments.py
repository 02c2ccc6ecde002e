"""A :class:`~modelgate.core.traffic.ports.DeploymentStore` in a dictionary (one process, tests)."""

from __future__ import annotations

from modelgate.core.traffic.deployments import Deployment
from modelgate.errors import invalid

__all__ = ["MemoryDeploymentStore"]

_NAME_LENGTH = 256  # as the SQL column, so that both answer alike


class MemoryDeploymentStore:
    def __init__(self) -> None:
        self._deployments: dict[str, Deployment] = {}

    async def get(self, model: str) -> Deployment | None:
        return self._deployments.get(model)

    async def list(self) -> list[Deployment]:
        return [self._deployments[m] for m in sorted(self._deployments)]

    async def put(self, deployment: Deployment, expected_revision: int) -> bool:
        for field, value in (("model", deployment.model), ("updated_by", deployment.updated_by)):
            if len(value) > _NAME_LENGTH or "\x00" in value:
                raise invalid(f"{field} is longer than {_NAME_LENGTH} characters or holds NUL")
        if deployment.revision != expected_revision + 1:
            raise ValueError("a deployment's revision must be expected_revision + 1")
        if deployment.updated_at is None:
            raise ValueError("a stored deployment needs updated_at")
        current = self._deployments.get(deployment.model)
        if (current.revision if current is not None else 0) != expected_revision:
            return False
        self._deployments[deployment.model] = deployment
        return True

    async def delete(self, model: str) -> bool:
        return self._deployments.pop(model, None) is not None
