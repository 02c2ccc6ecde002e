"""The models a server offers, as the protocols describe them, and who may see them.

Server and model metadata, readiness, the model configuration, statistics, the repository
index and its load and unload: everything an adapter asks of the models apart from an
inference, which is :class:`~modelgate.core.pipeline.inference.InferenceService`'s. The same
answers go out over REST and gRPC, so both ask here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modelgate import __version__
from modelgate.core.access.authorization import can_see, require_model, require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.ports import AuditLog
from modelgate.core.serving.model_control import ModelControl
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.signature import card_parameters, config_tensor, tensor_metadata
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["EXTENSIONS", "ModelCatalog"]

EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_configuration",
    "statistics",
)


class ModelCatalog:
    """Metadata, health, statistics and repository control for every adapter."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        server_name: str = "modelgate",
        audit: AuditLog | None = None,
    ):
        self.registry = registry
        #: what else must hold for the server to be ready (the queueing delay's readiness,
        #: :meth:`~modelgate.core.admission.overload.QueueDelay.ready`)
        self.ready_checks: list[Callable[[], bool]] = []
        #: loads and unloads on request, with their audit trail
        self.control = ModelControl(registry, audit)
        self.server_name = server_name

    # -- health and metadata -------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": __version__, "extensions": list(EXTENSIONS)}

    def server_ready(self) -> bool:
        return self.registry.ready and all(check() for check in self.ready_checks)

    async def authorize(
        self, principal: Principal | None, name: str, version: str | None, scope: Scope
    ) -> None:
        """NOT_FOUND unless ``principal`` may use ``scope`` on the model (None: auth is off)."""
        if principal is not None:
            require_model(principal, await self.registry.manifest(name), version, scope)

    async def model_ready(
        self, name: str, version: str | None, principal: Principal | None = None
    ) -> bool:
        """Ready means loaded and serving; an unknown model or version is NOT_FOUND."""
        await self.authorize(principal, name, version, Scope.MODELS_READ)
        loaded = self.registry.get(name, version)
        if loaded is None:
            if name not in self.registry.repository.names():
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
            return False
        return True

    async def model_metadata(
        self, name: str, version: str | None, principal: Principal | None = None
    ) -> dict[str, Any]:
        await self.authorize(principal, name, version, Scope.MODELS_READ)
        loaded = await self.registry.acquire(name, version)
        manifest = loaded.manifest
        return {
            "name": name,
            "versions": [str(v.version) for v in self.registry.versions(name)],
            "platform": manifest.platform,
            "inputs": [tensor_metadata(spec) for spec in manifest.inputs],
            "outputs": [tensor_metadata(spec) for spec in manifest.outputs],
            "parameters": card_parameters(manifest),
        }

    async def model_config(
        self, name: str, version: str | None, principal: Principal | None = None
    ) -> dict[str, Any]:
        """The model's configuration (Triton's model_configuration extension, JSON form)."""
        await self.authorize(principal, name, version, Scope.MODELS_READ)
        loaded = await self.registry.acquire(name, version)
        manifest = loaded.manifest
        batching = manifest.batching
        config: dict[str, Any] = {
            "name": name,
            "platform": manifest.platform,
            "backend": manifest.runtime,
            "max_batch_size": batching.max_batch_size if batching else 0,
            "input": [config_tensor(s, batching is not None) for s in manifest.inputs],
            "output": [config_tensor(s, batching is not None) for s in manifest.outputs],
            "version_policy": {"all": {}}
            if manifest.version_policy == "all"
            else manifest.version_policy,
            "instance_group": [
                {
                    "count": manifest.instances,
                    "kind": "KIND_GPU" if manifest.hardware.prefer == "gpu" else "KIND_CPU",
                }
            ],
            "parameters": {k: {"string_value": str(v)} for k, v in manifest.labels.items()},
        }
        if batching is not None:
            config["dynamic_batching"] = {
                "max_queue_delay_microseconds": batching.max_queue_delay_us,
                "default_queue_policy": {"max_queue_size": batching.max_queue_size},
            }
        return config

    async def statistics(
        self, name: str | None, version: str | None, principal: Principal | None = None
    ) -> dict[str, Any]:
        require_scope(principal, Scope.MODELS_READ)
        if name:
            await self.authorize(principal, name, version, Scope.MODELS_READ)
            loaded = self.registry.versions(name)
            if not loaded and name not in self.registry.repository.names():
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
            if version:
                loaded = [v for v in loaded if str(v.version) == version]
                if not loaded:
                    raise ModelgateError(
                        ErrorKind.NOT_FOUND, f"version '{version}' of model '{name}' is not loaded"
                    )
        else:
            loaded = [
                v for n in await self.visible_models(principal) for v in self.registry.versions(n)
            ]
        return {"model_stats": [v.stats.as_dict() for v in loaded]}

    async def visible_models(self, principal: Principal | None) -> list[str]:
        """Names of the models this principal may see (every model when auth is off)."""
        names = await asyncio.to_thread(self.registry.repository.names)
        if principal is None:
            return names
        visible = []
        for name in names:
            try:
                manifest = await self.registry.manifest(name)
            except ModelgateError:
                continue  # a model whose manifest does not load is shown to no tenant
            if can_see(principal, manifest):
                visible.append(name)
        return visible

    # -- repository control --------------------------------------------------------------
    async def repository_index(
        self, ready_only: bool = False, principal: Principal | None = None
    ) -> list[dict[str, str]]:
        require_scope(principal, Scope.MODELS_READ)
        visible = set(await self.visible_models(principal))
        rows = [r for r in self.registry.index() if r["name"] in visible]
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    async def load(
        self,
        name: str,
        config: dict[str, Any] | None = None,
        principal: Principal | None = None,
        source_ip: str | None = None,
    ) -> None:
        """Who may load, what an override may change, the audit: core/serving/model_control.py."""
        await self.control.load(name, config, principal, source_ip)

    async def unload(
        self, name: str, principal: Principal | None = None, source_ip: str | None = None
    ) -> None:
        await self.control.unload(name, principal, source_ip)
