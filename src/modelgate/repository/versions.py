"""Installing a new version of a model, all at once: what ``modelgate optimize --register``
and the learning loop share.

The version is assembled in a hidden folder inside the model's folder (the repository scanner
only reads folders named by a number), checked there, and renamed to the next free number
only when complete: a failure or Ctrl-C at any step leaves no version the server could find,
only a hidden folder that is removed on the way out. Two writers racing for a number: the
rename of the second fails (the folder exists and is not empty), and it tries the next one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from modelgate.core.serving.manifest import merge, parse_manifest
from modelgate.core.serving.ports import VersionSource
from modelgate.repository.filesystem import MANIFEST, VERSION_MANIFEST

__all__ = ["install_version", "next_version_number", "staged_source"]

_ATTEMPTS = 5  # numbers tried when another writer takes the next one first


def install_version(
    model_dir: Path,
    assemble: Callable[[Path], None],
    validate: Callable[[VersionSource], None],
    *,
    staging_prefix: str,
) -> int:
    """The new version's number. ``assemble`` writes the version's files into the (empty)
    staging folder it is given; ``validate`` gets the staged version (with its real, merged
    manifest) and raises to refuse it; then nothing is installed."""
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix, dir=model_dir))
    try:
        assemble(staging)
        validate(staged_source(model_dir, staging))
        staging.chmod(0o755)  # mkdtemp makes 0700; the server may run as another user
        for _ in range(_ATTEMPTS):
            number = next_version_number(model_dir)
            try:
                os.rename(staging, model_dir / str(number))
            except OSError:
                continue  # taken meanwhile: try the one after it
            break
        else:
            raise RuntimeError(f"could not claim a version number in {model_dir.name}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return number


def staged_source(model_dir: Path, folder: Path) -> VersionSource:
    """A version folder not (yet) in the repository, as the server would read it: its
    ``version.yaml`` merged onto the model's ``model.yaml``; version number 0."""
    base = yaml.safe_load((model_dir / MANIFEST).read_text(encoding="utf-8")) or {}
    override: dict[str, object] = {}
    if (folder / VERSION_MANIFEST).is_file():
        override = yaml.safe_load((folder / VERSION_MANIFEST).read_text(encoding="utf-8")) or {}
    return VersionSource(0, str(folder), parse_manifest(model_dir.name, merge(base, override)))


def next_version_number(model_dir: Path) -> int:
    numbers = [int(e.name) for e in model_dir.iterdir() if e.name.isdigit()]
    return max(numbers, default=0) + 1
