"""A model version's lineage record: ``<model>/<version>/lineage.json``.

Where the version came from (``origin``: the demo build, an import by hand, the learning loop,
an optimization of another version), the artifact's SHA-256 and size when it was made, the
data set it was trained on where known (hash, rows, size), the builder or trainer and its
version, its evaluation, and who made it when. The file is written once, when the version is
made, atomically (a temporary file renamed into place), and read by the admin API's model
card (api/admin/cards.py). A version without one has an unknown lineage, which is not an
error: its card still shows the artifact's hash, computed from the file.

A JSON file beside the artifact, not a section of ``version.yaml``: the manifest is strict and
says how to serve; the lineage says what the version is, and a trainer that knows nothing of
manifests can write it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any

__all__ = [
    "LINEAGE_FILE",
    "MAX_LINEAGE_BYTES",
    "ORIGINS",
    "SCHEMA",
    "LineageRead",
    "file_digest",
    "lineage_record",
    "read_lineage",
    "started_by",
    "write_lineage",
]

LINEAGE_FILE = "lineage.json"
SCHEMA = 1
#: what made a version: the demo build, an operator who copied an artifact in
#: (``import``), the learning loop's trainer, an optimization of another version (its
#: ``parent``), or another version split into stages (``modelgate shard``)
ORIGINS: tuple[str, ...] = ("demo-build", "import", "learning-loop", "optimization", "sharding")
#: a lineage file larger than this is not read (it is metadata, not data)
MAX_LINEAGE_BYTES = 1 << 20
_CHUNK = 1 << 20

_digests: dict[tuple[str, int, int, int], dict[str, Any]] = {}
_digests_lock = Lock()
_MAX_CACHED = 256


@dataclass(frozen=True)
class LineageRead:
    """What ``lineage.json`` of a version holds: the record, or None with ``problem`` saying
    why not (None too: the file is absent)."""

    record: dict[str, Any] | None
    problem: str | None = None


def file_digest(path: str | Path) -> dict[str, Any]:
    """``{"sha256": hex, "bytes": size}`` of a file, remembered per (path, size, mtime,
    inode) so that a card asked twice does not read a large artifact twice."""
    stat = os.stat(path)
    key = (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _digests_lock:
        found = _digests.get(key)
    if found is not None:
        return dict(found)
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    result = {"sha256": digest.hexdigest(), "bytes": size}
    with _digests_lock:
        if len(_digests) >= _MAX_CACHED:
            _digests.clear()
        _digests[key] = result
    return dict(result)


def read_lineage(version_dir: str | Path) -> LineageRead:
    """The version's lineage record; never raises for a missing, oversized or malformed
    file (the card says what is wrong instead)."""
    path = Path(version_dir) / LINEAGE_FILE
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_LINEAGE_BYTES + 1)
    except FileNotFoundError:
        return LineageRead(None)
    except OSError as exc:
        return LineageRead(None, f"cannot read {LINEAGE_FILE}: {exc.strerror or 'error'}")
    if len(raw) > MAX_LINEAGE_BYTES:
        return LineageRead(None, f"{LINEAGE_FILE} is larger than {MAX_LINEAGE_BYTES} bytes")
    try:
        record = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        return LineageRead(None, f"{LINEAGE_FILE} is not JSON: {exc}")
    if not isinstance(record, dict):
        return LineageRead(None, f"{LINEAGE_FILE} must hold a JSON object")
    if record.get("origin") not in ORIGINS:
        return LineageRead(
            record, f"origin {record.get('origin')!r} is not one of {', '.join(ORIGINS)}"
        )
    return LineageRead(record)


def started_by() -> str:
    """Who runs this process (``user@host``), for a record made without a principal."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{os.uname().nodename}" if hasattr(os, "uname") else user


def lineage_record(
    *,
    origin: str,
    artifact: str | Path,
    builder: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    parent: Mapping[str, Any] | None = None,
    sanitization: Mapping[str, Any] | None = None,
    fairness: Mapping[str, Any] | None = None,
    by: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """A lineage record for the artifact file ``artifact`` (hashed now). ``parent`` names the
    version it was made from (``{"model", "version", "relation"}``); ``sanitization`` and
    ``fairness`` are the learning loop's (what the data set lost, the fairness metrics)."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
    path = Path(artifact)
    return {
        "schema": SCHEMA,
        "origin": origin,
        "parent": dict(parent) if parent is not None else None,
        "artifact": {"file": path.name, **file_digest(path)},
        "dataset": dict(dataset) if dataset is not None else None,
        "sanitization": dict(sanitization) if sanitization is not None else None,
        "builder": dict(builder),
        "training": dict(training) if training is not None else None,
        "evaluation": dict(evaluation) if evaluation is not None else None,
        "fairness": dict(fairness) if fairness is not None else None,
        "started_by": by or started_by(),
        "created_at": (at or datetime.now(UTC)).isoformat(),
    }


def write_lineage(version_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as the version's ``lineage.json`` all at once (temporary file, then
    a rename), so a reader never sees half a record."""
    folder = Path(version_dir)
    text = json.dumps(dict(record), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".lineage-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, folder / LINEAGE_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return folder / LINEAGE_FILE
