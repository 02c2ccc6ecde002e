"""Loading and unloading models on request (the repository API): who may, what a load may
change, and the audit trail of each.

- ``models:write`` loads and unloads the versions in the repository, as their manifests say:
  an operator any model, a tenant only the models private to it (``tenants: [its id]``;
  PERMISSION_DENIED for a shared one, whose reloads would make every tenant wait), and
  one model at most once every ``tenant_change_interval_s`` (RATE_LIMITED).
- A configuration override (Triton's ``parameters.config``) also needs an operator holding
  ``models:configure`` (PERMISSION_DENIED otherwise) and may set only the fields of
  :data:`modelgate.core.serving.overrides.OVERRIDABLE` (INVALID_ARGUMENT naming the field
  otherwise); a Triton model configuration is first mapped onto them
  (core/serving/triton_config.py).
- Every load and unload is appended to the audit trail (actor, model, override fields,
  outcome), refused and failed ones included, before the caller gets its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.authorization import (
    is_operator,
    require_model,
    require_model_configuration,
)
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.ports import AuditLog
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.overrides import check_override, override_fields
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.triton_config import triton_override
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["ModelControl"]

log = logging.getLogger("modelgate.registry")

#: the actor of a change made with access control off
ANONYMOUS_ACTOR = "anonymous"
#: a tenant loads or unloads one model at most this often (per process): each load builds
#: and warms the model's sessions on the CPU every tenant shares
TENANT_CHANGE_INTERVAL_S = 10.0


class ModelControl:
    def __init__(
        self,
        registry: ModelRegistry,
        audit: AuditLog | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        tenant_change_interval_s: float = TENANT_CHANGE_INTERVAL_S,
    ):
        self.registry = registry
        #: None: nothing is recorded (tests and tools without a database)
        self.audit = audit
        self._now = now
        self._monotonic = monotonic
        self.tenant_change_interval_s = tenant_change_interval_s
        #: (tenant, model) -> when that tenant last loaded or unloaded it
        self._changed: dict[tuple[str, str], float] = {}

    async def load(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        principal: Principal | None = None,
        source_ip: str | None = None,
    ) -> None:
        """(Re)load every version of ``name``; ``config`` overrides run-time settings."""
        fields = override_fields(config) if config else []
        try:
            manifest = await self.registry.manifest(name)
        except ModelgateError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:  # a manifest on disk that does not read
                log.warning("loading model %s failed: %s", name, exc.message)
                unread = {"fields": fields, "reason": exc.message}
                await self._record(principal, "model.load.failed", name, source_ip, unread)
            raise
        require_model(principal, manifest, None, Scope.MODELS_WRITE)
        override: dict[str, Any] | None = None
        try:
            if config:  # an override is refused as such, whichever model it names
                require_model_configuration(principal, fields)
                override = check_override(triton_override(config, manifest))
            require_model_control(principal, manifest)
        except ModelgateError as exc:
            log.warning("load of model %s refused: %s", name, exc.message)
            refused = {"fields": fields, "reason": exc.message}
            await self._record(principal, "model.load.refused", name, source_ip, refused)
            raise
        self._pace(principal, name)
        try:
            await self.registry.load(name, override)
        except ModelgateError as exc:  # the registry logged it
            failed: dict[str, Any] = {"fields": fields, "reason": exc.message}
            await self._record(principal, "model.load.failed", name, source_ip, failed)
            raise
        versions = [loaded.version for loaded in self.registry.versions(name)]
        after: dict[str, Any] = {"fields": fields, "override": override, "versions": versions}
        await self._record(principal, "model.load", name, source_ip, after)

    async def unload(
        self, name: str, principal: Principal | None = None, source_ip: str | None = None
    ) -> None:
        manifest = await self.registry.manifest(name)
        require_model(principal, manifest, None, Scope.MODELS_WRITE)
        before = {"versions": [loaded.version for loaded in self.registry.versions(name)]}
        try:
            require_model_control(principal, manifest)
        except ModelgateError as exc:
            log.warning("unload of model %s refused: %s", name, exc.message)
            refused = {"reason": exc.message}
            await self._record(principal, "model.unload.refused", name, source_ip, refused, before)
            raise
        self._pace(principal, name)
        await self.registry.unload(name)
        await self._record(principal, "model.unload", name, source_ip, None, before)

    def _pace(self, principal: Principal | None, name: str) -> None:
        """RATE_LIMITED when this tenant loaded or unloaded ``name`` less than
        ``tenant_change_interval_s`` ago (operators are not paced)."""
        interval = self.tenant_change_interval_s
        if principal is None or interval <= 0 or is_operator(principal):
            return
        now = self._monotonic()
        last = self._changed.get((principal.tenant_id, name))
        if last is not None and now - last < interval:
            raise ModelgateError(
                ErrorKind.RATE_LIMITED,
                f"model '{name}' was loaded or unloaded {now - last:.1f} s ago; a tenant may "
                f"load or unload a model once every {interval:g} s",
                retry_after=interval - (now - last),
            )
        if len(self._changed) >= 10_000:  # bounded: forget the changes that no longer pace
            self._changed = {k: t for k, t in self._changed.items() if now - t < interval}
        self._changed[(principal.tenant_id, name)] = now

    async def _record(
        self,
        principal: Principal | None,
        action: str,
        model: str,
        source_ip: str | None,
        after: Mapping[str, Any] | None,
        before: Mapping[str, Any] | None = None,
    ) -> None:
        if self.audit is None:
            return
        tenant = None if principal is None else principal.tenant_id
        await self.audit.append(
            AuditEntry(
                actor=ANONYMOUS_ACTOR if principal is None else actor_of(principal),
                action=action,
                target=f"model:{model}",
                at=self._now(),
                source_ip=source_ip,
                before=before,
                after=after,
                # a tenant reads its own changes in its trail; an operator's are platform-wide
                tenant_id=None if tenant == ADMIN_TENANT else tenant,
            )
        )


def require_model_control(principal: Principal | None, manifest: ModelManifest) -> None:
    """PERMISSION_DENIED unless the principal may load or unload this model: an operator,
    or the one tenant a model is private to. Loading or unloading a model other tenants
    use would make them wait for its load and warm-up, as often as a tenant liked."""
    if principal is None or is_operator(principal):
        return
    if manifest.tenants is not None and set(manifest.tenants) == {principal.tenant_id}:
        return
    raise ModelgateError(
        ErrorKind.PERMISSION_DENIED,
        f"model '{manifest.name}' is shared with other tenants: only an operator loads or "
        "unloads it (a tenant loads and unloads the models private to it)",
    )
