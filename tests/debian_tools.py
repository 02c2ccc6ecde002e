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

ROOT = Path(__file__).resolve().parents[1]


def debian_binary(package: str, member: str, name: str | None = None) -> Path:
    """``member`` (e.g. ``usr/sbin/nginx``) of Debian's ``package``, as an executable in
    ``build/<package>/``; the test fails (never skips) when it cannot be fetched."""
    name = name or Path(member).name
    found = shutil.which(name)
    if found:
        return Path(found)
    binary = ROOT / "build" / package / name
    if binary.is_file():
        return binary
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
        shutil.copy2(f"{scratch}/x/{member}", binary)
    return binary
