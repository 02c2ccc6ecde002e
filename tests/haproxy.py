"""A throwaway HAProxy for tests: Debian's ``haproxy`` (2.6), run in the foreground with a
configuration under the test's temporary folder, stopped (SIGUSR1, soft stop, then kill)
when the test ends.

Where no ``haproxy`` is installed, the binary comes from Debian's package as nginx's does
(tests/debian_tools.py), and the shared libraries it needs that a plain Debian system
lacks (Lua 5.3, the OpenTracing wrapper) from theirs, into ``build/haproxy/lib``: nothing
is installed or started by the package manager."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.debian_tools import ROOT, debian_binary

__all__ = ["running_haproxy"]

#: Debian packages of the libraries Debian's haproxy links and a base system lacks
LIBRARIES = ("liblua5.3-0", "libopentracing-c-wrapper0", "libopentracing1")
LIB = ROOT / "build" / "haproxy" / "lib"


def _libraries() -> None:
    """The libraries' files in ``build/haproxy/lib`` (fetched once)."""
    if (LIB / ".fetched").is_file():
        return
    with tempfile.TemporaryDirectory() as scratch:
        fetched = subprocess.run(
            ["apt-get", "download", *LIBRARIES],
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        if fetched.returncode != 0:
            pytest.fail(f"haproxy needs {', '.join(LIBRARIES)}: {fetched.stderr}")
        LIB.mkdir(parents=True, exist_ok=True)
        for package in Path(scratch).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(package), f"{scratch}/x"], check=True)
        for found in Path(scratch, "x").rglob("*.so*"):
            shutil.copy2(found, LIB / found.name, follow_symlinks=True)
    (LIB / ".fetched").write_text("")


def haproxy_command() -> tuple[list[str], dict[str, str]]:
    """The binary to run, and its environment."""
    installed = shutil.which("haproxy")
    if installed:
        return [installed], dict(os.environ)
    binary = debian_binary("haproxy", "usr/sbin/haproxy")
    _libraries()
    return [str(binary)], {**os.environ, "LD_LIBRARY_PATH": str(LIB)}


@contextlib.contextmanager
def running_haproxy(config: str, folder: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy with ``config``, checked with ``-c`` first, up once ``ready_url`` answers
    200 (its health checks have found a replica)."""
    command, env = haproxy_command()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run(
        [*command, "-c", "-f", str(path)], capture_output=True, text=True, env=env
    )
    assert check.returncode == 0, check.stdout + check.stderr  # the configuration parses
    with open(folder / "haproxy.log", "wb") as log:
        process = subprocess.Popen(
            [*command, "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail((folder / "haproxy.log").read_text())
            try:
                if httpx.get(ready_url, timeout=1, verify=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail((folder / "haproxy.log").read_text())
        yield process
    finally:
        process.send_signal(signal.SIGUSR1)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
