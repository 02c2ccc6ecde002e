"""Every shell example in README.md and docs/*.md, run as written against a live server.

What runs: each fenced block tagged ``bash`` (or ``sh``, ``shell``), in the order of its
document, in one ``bash`` per document with ``set -euo pipefail``, so a failing line fails the
test. Every other block must say what it is (``text``, ``json``, ``python``, ...): an
untagged block fails here, so a shell example cannot escape by accident.

What is substituted, and how (the same a reader does on a machine of their own):

- The test is the reader's first terminal. It makes a scratch folder that looks like a
  checkout (``.venv``, ``build/models`` and ``deploy`` linked to this one) and starts
  ``modelgate serve --model-repository build/models`` there (what ``make run`` runs: its data
  directory is the default ``.modelgate``, fresh), on free ports, with a new
  ``MODELGATE_ADMIN_KEY`` and new payload keys, as the quick start exports them. The block
  that starts the server in the README is marked ``<!-- example: server -->`` and not run
  again.
- ``localhost:8000`` and ``localhost:8001`` in the examples become the test server's REST and
  gRPC addresses; the CLI finds the server through ``MODELGATE_URL``.
- ``.venv/bin`` is first on ``PATH`` (an activated virtual environment), so ``modelgate``
  and ``.venv/bin/modelgate`` are the same program.
- ``curl`` is run with ``--fail-with-body`` added: an HTTP error fails the example.
- The README runs first; the variables it leaves set (``KEY``, ``TENANT``,
  ``MODELGATE_ADMIN_KEY``, ...) are the environment every page of docs/ starts from, as for
  a reader who did the quick start. Each page then runs on the same server and database.

A block that cannot run here carries a marker on the line before it, and is skipped (and
listed): ``<!-- example: needs-cluster -->`` (Kubernetes, docker, nginx, PostgreSQL or Redis
servers, several modelgate processes), ``<!-- example: needs-config -->`` (a server started
with settings ``make run`` does not set, e.g. a JWT signing key), ``<!-- example: needs-gpu -->``,
``<!-- example: needs-data -->`` (the reader's own files), ``<!-- example: needs-tool -->`` (a
program this project does not install, e.g. grpcurl), ``<!-- example: server -->``,
``<!-- example: development -->`` (the project's own make targets, the test suite among
them).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import free_port

DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "benchmarks.md")
DOCUMENTS = [ROOT / "README.md", *DOCS]
SHELL = {"bash", "sh", "shell"}
MARKERS = {
    "needs-cluster",
    "needs-config",
    "needs-gpu",
    "needs-data",
    "needs-tool",
    "server",
    "development",
}
_MARKER = re.compile(r"^<!--\s*example:\s*([a-z-]+)\s*-->$")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([^\s`]*)")
#: a whole page's examples; the README, the longest, makes about 20 CLI calls of about a
#: second each (about 0.5 s of it importing the CLI), several times that on a loaded machine
PAGE_TIMEOUT_S = 240


@dataclass
class Block:
    path: Path
    line: int
    language: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the marker on the line before each."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        indent, ticks, language = fence.groups()
        previous = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        marker = _MARKER.match(previous)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        found.append(
            Block(path, i + 1, language, "\n".join(body), marker.group(1) if marker else None)
        )
        i = j + 1
    return found


def test_every_block_says_what_it_is_and_every_marker_is_known() -> None:
    problems = []
    for path in DOCUMENTS:
        text = path.read_text()
        for block in blocks(path):
            if not block.language:
                problems.append(f"{block.where}: untagged block (bash, text, json, ...?)")
            if block.marker is not None and block.language not in SHELL:
                problems.append(f"{block.where}: a marker before a {block.language} block")
        for marker in re.findall(r"<!--\s*example:\s*([^>]*?)\s*-->", text):
            if marker not in MARKERS:
                problems.append(f"{path.name}: unknown marker {marker!r} (known: {MARKERS})")
    assert problems == []


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    workdir: Path
    env: dict[str, str]

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")[-6000:]


@pytest.fixture(scope="module")
def server(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``make run`` in a scratch checkout: build/models, a fresh ``.modelgate``, free ports."""
    workdir = tmp_path_factory.mktemp("docs-examples")
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    (workdir / "build").mkdir()
    (workdir / "build" / "models").symlink_to(demo_models)
    (workdir / "deploy").symlink_to(ROOT / "deploy")
    http_port, grpc_port = free_port(), free_port()
    bin_dir = workdir / ".venv" / "bin"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "MODELGATE_ADMIN_KEY": "mg-admin-" + secrets.token_hex(16),
        # the quick start's payload keys (README.md)
        "MODELGATE_PAYLOAD_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
        "MODELGATE_PAYLOAD_PSEUDONYM_KEY": secrets.token_hex(16),
        "MODELGATE_URL": f"http://127.0.0.1:{http_port}",
        "PYTHONPATH": str(ROOT / "src"),  # this checkout's code, whatever the venv points at
    }
    command = [
        str(bin_dir / "modelgate"),
        "serve",
        "--model-repository",
        "build/models",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    running = Server(process, http_port, grpc_port, workdir, env)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"modelgate exited with {process.returncode}:\n{running.log()}")
        try:
            url = f"http://127.0.0.1:{http_port}/v2/health/ready"
            if httpx.get(url, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"modelgate was not ready in 60 s:\n{running.log()}")
        time.sleep(0.1)
    yield running
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Shell:
    """What a reader's shell holds: its environment and the variables set in it."""

    env: dict[str, str]
    variables: str = ""  # ``declare -p`` lines


def script(server: Server, examples: list[Block], shell: Shell) -> str:
    """One bash script of a page's runnable blocks, addresses substituted."""
    parts = [
        shell.variables,
        "__before=\" $(compgen -v | tr '\\n' ' ') \"",
        "set -euo pipefail",
        # an HTTP error fails the example, its body shown
        'curl() { command curl --fail-with-body "$@"; }',
    ]
    for block in examples:
        text = block.text.replace("localhost:8000", f"127.0.0.1:{server.http_port}")
        text = text.replace("localhost:8001", f"127.0.0.1:{server.grpc_port}")
        parts += [f"echo '>>> {block.where}' >&2", "set -x", text, "set +x"]
    parts += [
        'env -0 > "$EXAMPLES_ENV"',
        # the variables the page set (exported or not), for the pages that follow
        'for v in $(compgen -v); do [[ $v == _* || $__before == *" $v "* ]] || declare -p "$v"; '
        'done > "$EXAMPLES_VARS"',
    ]
    return "\n".join(parts) + "\n"


def run_page(server: Server, path: Path, shell: Shell) -> Shell:
    """Run a page's examples; the shell they leave behind."""
    out = server.workdir / f"{path.stem}.env"
    variables = server.workdir / f"{path.stem}.vars"
    done = subprocess.run(
        ["bash", "-c", script(server, runnable(path), shell)],
        cwd=server.workdir,
        env={**shell.env, "EXAMPLES_ENV": str(out), "EXAMPLES_VARS": str(variables)},
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"an example in {path.name} failed (exit {done.returncode}); the last one run is the "
        f"last '>>>' line below\n--- output\n{done.stdout[-4000:]}\n--- trace\n"
        f"{done.stderr[-6000:]}\n--- server log\n{server.log()}"
    )
    env = {}
    for item in out.read_bytes().split(b"\0"):
        name, _, value = item.decode(errors="replace").partition("=")
        if name and not name.startswith(("BASH_FUNC_", "EXAMPLES_")):
            env[name] = value
    return Shell(env, variables.read_text())


@pytest.fixture(scope="module")
def quick_start(server: Server) -> Shell:
    """The README's examples, run: what a reader's shell holds after the quick start."""
    return run_page(server, ROOT / "README.md", Shell(server.env))


def test_the_readme_runs_as_written(quick_start: Shell) -> None:
    assert quick_start.env["KEY"].startswith("mg_live_")  # the quick start made its key
    assert "TENANT=" in quick_start.variables


def runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language in SHELL and b.marker is None]


@pytest.mark.parametrize("path", [p for p in DOCS if runnable(p)], ids=lambda p: p.name)
def test_the_docs_run_as_written(server: Server, quick_start: Shell, path: Path) -> None:
    run_page(server, path, quick_start)


def test_skipped_examples_are_few_and_named() -> None:
    """What is not run, listed, so a marker is a visible decision and not a habit.

    ``server`` (the block that starts what the test starts) and ``development`` (installing
    or testing this checkout) are not examples of using modelgate; the rest are examples a
    reader could not run on one machine, and they stay a small minority."""
    skipped = [
        f"{b.where} ({b.marker})"
        for p in DOCUMENTS
        for b in blocks(p)
        if b.marker is not None and b.marker not in {"server", "development"}
    ]
    ran = [b for p in DOCUMENTS for b in runnable(p)]
    assert len(ran) > 2 * len(skipped), skipped
