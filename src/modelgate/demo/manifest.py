"""Writing the files of a model repository: manifests as YAML, statistics as JSON.

Kept in one place so every builder formats `model.yaml`, `version.yaml` and `reference.json` the
same way: keys in the order written (the order the docs use), mappings as indented blocks and
lists of plain values inline (`shape: [-1, 12]`), as in docs/model-repository.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class _ManifestDumper(yaml.SafeDumper):
    """SafeDumper that writes lists of scalars inline and everything else as blocks."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    inline = all(not isinstance(item, dict | list) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=inline)


_ManifestDumper.add_representer(list, _represent_list)


def write_yaml(path: Path, document: Mapping[str, Any], header: str = "") -> None:
    """Write a manifest; `header` becomes a leading comment saying the file is generated."""
    text = yaml.dump(
        dict(document),
        Dumper=_ManifestDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + text, encoding="utf-8")


def write_json(path: Path, document: Any) -> None:
    """Write a JSON document with stable key order and a trailing newline (diff-friendly)."""
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
