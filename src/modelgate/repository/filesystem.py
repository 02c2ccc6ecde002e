"""A model repository on disk: ``<root>/<model>/model.yaml`` and integer version folders."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from modelgate.core.serving.manifest import merge, parse_manifest
from modelgate.core.serving.ports import VersionSource
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["MODEL_NAME", "FileModelRepository"]

#: what a model may be called: a folder name here, a path segment in every route (the
#: gateway holds a static node's models to it too: cluster/oip_catalog.py)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "model.yaml"
#: libyaml's safe loader when PyYAML was built with it: the same documents, about ten
#: times faster than the pure-Python one. A node reads every manifest of its repository at
#: each heartbeat (cluster/node.py), so this is CPU it spends every couple of seconds.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
VERSION_MANIFEST = "version.yaml"


class FileModelRepository:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def names(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [
            e
            for e in entries
            if MODEL_NAME.fullmatch(e) and os.path.isfile(os.path.join(self.root, e, MANIFEST))
        ]

    def versions(self, name: str, override: Mapping[str, Any] | None = None) -> list[VersionSource]:
        manifest = os.path.join(self.root, name, MANIFEST)
        if not MODEL_NAME.fullmatch(name) or not os.path.isfile(manifest):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        folder = os.path.join(self.root, name)
        base = _read_yaml(folder, MANIFEST, name)
        if override:
            base = merge(base, dict(override))
        numbers = sorted(
            int(e)
            for e in os.listdir(folder)
            if e.isdigit() and int(e) > 0 and os.path.isdir(os.path.join(folder, e))
        )
        numbers = _apply_policy(name, base.get("version_policy", "all"), numbers)
        sources = []
        for number in numbers:
            path = os.path.join(folder, str(number))
            data = base
            if os.path.isfile(os.path.join(path, VERSION_MANIFEST)):
                data = merge(base, _read_yaml(path, VERSION_MANIFEST, f"{name}/{number}"))
            sources.append(VersionSource(number, path, parse_manifest(name, data)))
        return sources


def _read_yaml(folder: str, file_name: str, shown: str) -> dict[str, Any]:
    """The mapping in ``folder/file_name``; errors call the folder ``shown`` (the model's
    name and version), never its path on the host."""
    where = f"{shown}/{file_name}"
    try:
        with open(os.path.join(folder, file_name), encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise invalid(f"cannot read {where}: {reason}") from None
    try:
        # from a string, so that YAML's error marks say "<unicode string>", not the path
        data = yaml.load(text, Loader=_FAST_LOADER)  # a safe loader, C or Python
    except yaml.YAMLError:
        try:  # the same document again, for the pure-Python loader's fuller message
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise invalid(f"cannot read {where}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid(f"{where} must hold a mapping")
    return data


def _apply_policy(name: str, policy: Any, numbers: list[int]) -> list[int]:
    """Triton's version policies: all, {latest: N}, {specific: [..]}."""
    if policy == "all":
        return numbers
    if isinstance(policy, dict) and len(policy) == 1:
        ((kind, value),) = policy.items()
        if kind == "latest" and isinstance(value, int) and value > 0:
            return numbers[-value:]
        if kind == "specific" and isinstance(value, list):
            wanted = {int(v) for v in value}
            return [n for n in numbers if n in wanted]
    raise invalid(
        f"model '{name}': version_policy must be all, {{latest: N}} or "
        f"{{specific: [...]}}, not {policy!r}"
    )
