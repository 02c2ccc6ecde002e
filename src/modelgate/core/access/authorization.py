"""Authorization: may this principal do this, to this model?

Policy only; where in a request it is asked is the service's business. A model the caller
may not use answers NOT_FOUND, exactly like a model that does not exist, so a tenant cannot
learn the names of another tenant's models by probing.

``principal is None`` means access control is off (``MODELGATE_AUTH=off``): everything is
allowed. A model is seen through :class:`~modelgate.core.access.ports.ModelAudience` (its name
and the tenants it is private to), which a manifest is, so access imports nothing of serving.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Principal, Scope, allows_model, has_scope
from modelgate.core.access.ports import ModelAudience
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "can_see",
    "is_operator",
    "may_configure_models",
    "require_model",
    "require_model_configuration",
    "require_scope",
]


def is_operator(principal: Principal) -> bool:
    """An operator acts on every tenant: the bootstrap key, or ``tenants:admin``."""
    return principal.tenant_id == ADMIN_TENANT or Scope.TENANTS_ADMIN.value in principal.scopes


def require_scope(principal: Principal | None, scope: Scope) -> None:
    if principal is not None and not has_scope(principal, scope):
        raise ModelgateError(
            ErrorKind.PERMISSION_DENIED, f"this credential lacks the '{scope.value}' scope"
        )


def may_configure_models(principal: Principal | None) -> bool:
    """May this principal override a manifest's run-time settings when it loads a model?
    Operators holding ``models:configure`` (``tenants:admin`` implies it); never a tenant's
    credential, whatever scopes it claims (a token's scopes come from its issuer)."""
    if principal is None:
        return True
    return is_operator(principal) and has_scope(principal, Scope.MODELS_CONFIGURE)


def require_model_configuration(principal: Principal | None, fields: Sequence[str] = ()) -> None:
    """PERMISSION_DENIED unless :func:`may_configure_models`; the message names ``fields``,
    the fields the refused override sets."""
    if not may_configure_models(principal):
        sets = f" (it sets {', '.join(repr(f) for f in fields)})" if fields else ""
        raise ModelgateError(
            ErrorKind.PERMISSION_DENIED,
            f"a load with a configuration override ('parameters.config'){sets} needs the "
            f"'{Scope.MODELS_CONFIGURE.value}' scope, which only operators hold; load "
            "without one to serve the model as its manifest says",
        )


def can_see(principal: Principal | None, manifest: ModelAudience) -> bool:
    """Tenant-specific models are visible to their tenants (and operators) only."""
    if principal is None or manifest.tenants is None:
        return True
    return principal.tenant_id == ADMIN_TENANT or principal.tenant_id in manifest.tenants


def require_model(
    principal: Principal | None,
    manifest: ModelAudience,
    version: str | None,
    scope: Scope,
) -> None:
    """NOT_FOUND unless the principal sees the model and holds ``scope`` for it."""
    if principal is None:
        return
    if not can_see(principal, manifest):
        raise _hidden(manifest)
    if scope is Scope.INFER:
        if not allows_model(principal, manifest.name, version):
            raise _hidden(manifest)
        return
    require_scope(principal, scope)


def _hidden(manifest: ModelAudience) -> ModelgateError:
    """A model the caller may not use, refused as if it did not exist (built only when
    refused: every inference asks, and building an error costs more than the checks)."""
    return ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{manifest.name}'")
