"""A throwaway nginx for tests: Debian's binary (tests/debian_tools.py), run in the
foreground with a configuration and a prefix under the test's temporary folder, stopped
(SIGQUIT, then kill) when the test ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.debian_tools import debian_binary

__all__ = ["TEMP_PATHS", "running_nginx", "temp_paths"]

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def temp_paths(prefix: Path) -> str:
    """``*_temp_path`` directives under ``prefix`` (the compiled-in ones are system paths)."""
    return "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in TEMP_PATHS)


@contextlib.contextmanager
def running_nginx(config: str, prefix: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with ``config`` (an http-level configuration: ``pid``, ``error_log`` and, as
    root, ``user`` are given on the command line), checked with ``-t`` first, up once
    ``ready_url`` answers 200."""
    binary = debian_binary("nginx", "usr/sbin/nginx")
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    globals_ = f"pid {prefix / 'nginx.pid'}; error_log stderr;"
    if os.geteuid() == 0:
        globals_ += " user root;"
    command = [str(binary), "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    check = subprocess.run([*command, "-g", globals_, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # the configuration parses
    with open(prefix / "error.log", "wb") as errors:
        process = subprocess.Popen(
            [*command, "-g", globals_ + " daemon off;"], stdout=subprocess.DEVNULL, stderr=errors
        )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            pytest.fail((prefix / "error.log").read_text())
        yield process
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
