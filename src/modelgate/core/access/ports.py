"""The ports of access, as Protocols: what access needs of the contexts above it and of
the adapters that keep its state.

Contracts are stated on each port; the implementations live outside ``core/`` (a model's
manifest, in serving, is a :class:`ModelAudience`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "ModelAudience",
]


class ModelAudience(Protocol):
    """A model as authorization sees it: its name (for the NOT_FOUND it answers) and the
    tenants it is private to (None: every tenant's). A manifest is one."""

    @property
    def name(self) -> str: ...

    @property
    def tenants(self) -> tuple[str, ...] | None: ...
