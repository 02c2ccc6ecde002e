"""What a load request's configuration override (Triton's ``parameters.config``) may change.

A manifest is the operator's: which code runs (``runtime``, ``artifact``,
``runtime_options``), who sees the model (``tenants``), its limits, fallbacks, caching,
logging and card. A load may change none of that. An operator (scope ``models:configure``,
see :func:`modelgate.core.access.authorization.may_configure_models`) may tune how the model runs
for this load, within the allow-list below; the repository's manifest is left as it is, so
the next load without an override goes back to it.

Allowed, each validated as the manifest validates it::

    batching                          max_batch_size, max_queue_delay_us, max_queue_size
                                      (or null: no batching)
    instances                         1..64 batches run at once
    execution                         auto | inline | thread
    hardware                          prefer: cpu | gpu
    version_policy                    all | {latest: N} | {specific: [...]} (of the
                                      versions in the repository)

Anything else is refused with INVALID_ARGUMENT naming the field: ``runtime_options`` too,
since a runtime reads code paths, trusted types and tokenizers from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelgate.errors import invalid

__all__ = ["OVERRIDABLE", "check_override", "override_fields"]

#: top-level fields a load may override; a mapping names the only keys allowed inside
OVERRIDABLE: Mapping[str, frozenset[str] | None] = {
    "batching": frozenset({"max_batch_size", "max_queue_delay_us", "max_queue_size"}),
    "instances": None,
    "execution": None,
    "hardware": frozenset({"prefer"}),
    "version_policy": None,
}


def override_fields(config: Mapping[str, Any]) -> list[str]:
    """The dotted fields an override sets (``batching.max_batch_size``), sorted."""
    fields: list[str] = []
    for key, value in config.items():
        if isinstance(value, Mapping) and value and isinstance(OVERRIDABLE.get(key), frozenset):
            fields.extend(f"{key}.{inner}" for inner in value)
        else:
            fields.append(str(key))
    return sorted(fields)


def check_override(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as a plain dict when every field it sets may change at load time;
    INVALID_ARGUMENT naming the first field that may not (in sorted order)."""
    for key in sorted(config, key=str):
        if key not in OVERRIDABLE:
            raise _refused(str(key))
        allowed = OVERRIDABLE[key]
        value = config[key]
        if allowed is None or (value is None and key == "batching"):
            continue
        if not isinstance(value, Mapping):
            raise invalid(f"override field '{key}' must be an object")
        for inner in sorted(value, key=str):
            if inner not in allowed:
                raise _refused(f"{key}.{inner}")
    return {key: _plain(value) for key, value in config.items()}


def _plain(value: Any) -> Any:
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def _refused(field: str) -> Exception:
    return invalid(
        f"a load may not change the manifest's '{field}'; allowed overrides: "
        + ", ".join(sorted(OVERRIDABLE))
        + " (see docs/model-repository.md)"
    )
