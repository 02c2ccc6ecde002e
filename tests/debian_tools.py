"""Programs the tests take from Debian's packages without installing them: the package is
downloaded with ``apt-get download``, unpacked with ``dpkg-deb -x`` and the binary copied
into ``build/<package>/`` (kept between runs; a fresh clone fetches it once). Nothing is
configured or started by the package manager, so no system service appears."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.build_lock import build_lock

ROOT = Path(__file__).resolve().parents[1]


def debian_binary(package: str, member: str, name: str | None = None) -> Path:
    """``member`` (e.g. ``usr/sbin/nginx``) of Debian's ``package``, as an executable in
    ``build/<package>/``; the test fails (never skips) when it cannot be fetched."""
    name = name or Path(member).name
    found = shutil.which(name)
    if found:
        return Path(found)
    binary = ROOT / "build" / package / name
    with build_lock(package):
        if not binary.is_file():
            _fetch(package, member, binary)
    return binary


def _fetch(package: str, member: str, binary: Path) -> None:
    """Download ``package``, unpack it and copy ``member`` to ``binary`` (renamed into place,
    so that no process ever runs a half-copied file)."""
    name = binary.name
    with tempfile.TemporaryDirectory() as scratch:
        download = ["apt-get", "download", package]
        fetched = subprocess.run(download, cwd=scratch, capture_output=True, text=True, check=False)
        if fetched.returncode != 0 and os.geteuid() == 0:  # no package lists yet: read them
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            fetched = subprocess.run(
                download, cwd=scratch, capture_output=True, text=True, check=False
            )
        packages = sorted(Path(scratch).glob(f"{package}_*.deb"))
        if fetched.returncode != 0 or not packages:
            pytest.fail(f"{name} is needed: install Debian's {package} package\n{fetched.stderr}")
        subprocess.run(["dpkg-deb", "-x", str(packages[-1]), f"{scratch}/x"], check=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f".{name}.partial")
        shutil.copy2(f"{scratch}/x/{member}", partial)
        partial.replace(binary)
