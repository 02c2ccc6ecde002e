"""Installing a candidate as the next version of its model, all at once.

The version is assembled in a hidden folder inside the model's folder (the repository scanner
only reads folders named by a number), loaded and run there through the server's runtime, and
renamed to the next free number only when complete: a failure or Ctrl-C at any step leaves no
version the server could find, only a hidden folder that is removed on the way out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from modelgate import __version__
from modelgate.core.serving.manifest import merge, parse_manifest
from modelgate.core.serving.ports import VersionSource
from modelgate.repository import lineage as versions_lineage
from modelgate.repository.filesystem import MANIFEST, VERSION_MANIFEST
from modelgate.repository.lineage import LINEAGE_FILE, file_digest, started_by, write_lineage

__all__ = [
    "LINEAGE_FILE",
    "STAGING_PREFIX",
    "install_version",
    "lineage_record",
    "register_candidate",
]

STAGING_PREFIX = ".staging-optimize-"
_ATTEMPTS = 5  # numbers tried when another writer takes the next one first


def register_candidate(
    repository: Path,
    source: VersionSource,
    candidate_artifact: Path,
    lineage: dict[str, Any],
    validate: Callable[[VersionSource], None],
) -> int:
    """The new version's number. ``validate`` gets the staged version (its real manifest) and
    raises to refuse it; then nothing is installed."""
    return install_version(
        repository,
        source.manifest.name,
        lambda staging: _assemble(staging, source, candidate_artifact, lineage),
        validate,
    )


def install_version(
    repository: Path,
    name: str,
    assemble: Callable[[Path], None],
    validate: Callable[[VersionSource], None],
    *,
    prefix: str = STAGING_PREFIX,
) -> int:
    """Install the version ``assemble`` writes into the (empty) staging folder it is given
    (``version.yaml`` included) as the next version of ``name``, all at once; ``validate``
    gets the staged version and raises to refuse it (then nothing is installed). Used by
    ``modelgate optimize --register`` and ``modelgate shard``."""
    model_dir = repository / name
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=model_dir))
    try:
        assemble(staging)
        base = yaml.safe_load((model_dir / MANIFEST).read_text(encoding="utf-8")) or {}
        override = yaml.safe_load((staging / VERSION_MANIFEST).read_text(encoding="utf-8"))
        validate(VersionSource(0, str(staging), parse_manifest(name, merge(base, override))))
        staging.chmod(0o755)  # mkdtemp makes 0700; the server may run as another user
        for _ in range(_ATTEMPTS):
            number = _next_number(model_dir)
            try:
                os.rename(staging, model_dir / str(number))
            except OSError:
                continue  # taken meanwhile: try the one after it
            break
        else:
            raise RuntimeError(f"could not claim a version number in {model_dir}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return number


def _assemble(
    staging: Path, source: VersionSource, artifact: Path, lineage: dict[str, Any]
) -> None:
    original = Path(source.path)
    for entry in original.iterdir():
        if entry.name in (VERSION_MANIFEST, LINEAGE_FILE, source.manifest.artifact):
            continue
        if entry.is_dir():
            shutil.copytree(entry, staging / entry.name)
        else:
            shutil.copy2(entry, staging / entry.name)
    target = staging / source.manifest.artifact
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(artifact, target)
    version_data: dict[str, Any] = {}
    if (original / VERSION_MANIFEST).is_file():
        version_data = yaml.safe_load((original / VERSION_MANIFEST).read_text("utf-8")) or {}
    card = dict(version_data.get("card") or {})
    # measurements of the source no longer describe this file; the lineage carries new ones
    for stale in ("validation_metrics", "cosine_to_sentence_transformers", "quantization"):
        card.pop(stale, None)
    card["optimized_from"] = {
        "version": source.version,
        "method": lineage["method"],
        "lineage": LINEAGE_FILE,
    }
    version_data["card"] = card
    header = "# Written by `modelgate optimize --register`; see lineage.json.\n"
    (staging / VERSION_MANIFEST).write_text(
        header + yaml.safe_dump(version_data, sort_keys=False), encoding="utf-8"
    )
    parent = {**lineage["parent"], "artifact": file_digest(original / source.manifest.artifact)}
    record = versions_lineage.lineage_record(
        origin="optimization",
        artifact=target,
        builder={"name": "modelgate optimize", "version": __version__, "method": lineage["method"]},
        parent=parent,
        evaluation=lineage["evaluation"],
        by=lineage["started_by"],
    )
    write_lineage(staging, record)


def _next_number(model_dir: Path) -> int:
    numbers = [int(e.name) for e in model_dir.iterdir() if e.name.isdigit()]
    return max(numbers, default=0) + 1


def lineage_record(source: VersionSource, method: str, row: dict[str, Any]) -> dict[str, Any]:
    """What ``register_candidate`` records of the new version's origin: the version it was
    made from, how, and the candidate's measurement against it. The artifact's hashes are
    added when it is in place (repository/lineage.py's record, origin ``optimization``)."""
    numbers = {
        key: value
        for key, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return {
        "method": method,
        "parent": {"model": source.manifest.name, "version": source.version, "relation": method},
        "evaluation": {
            "against": f"version {source.version}, on its reference inputs",
            "metrics": numbers,
            "measurement": row,
        },
        "started_by": started_by(),
    }
