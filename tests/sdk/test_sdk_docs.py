"""Every Python example of docs/sdk.md and of the README's SDK section runs as written
against a real server (``http://localhost:8000`` pointed at it, the key in
``MODELGATE_API_KEY``, as the docs say)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import ADMIN_KEY, RunningServer

pytestmark = pytest.mark.e2e

_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    found = []
    guide = (ROOT / "docs" / "sdk.md").read_text()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Python SDK") :]
    section = section[: section.index("\n#", 1)]
    for where, text in (("docs/sdk.md", guide), ("README.md", section)):
        found += [(f"{where}#{i}", code) for i, code in enumerate(_BLOCK.findall(text))]
    return found


EXAMPLES = _examples()


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 10
    assert all("modelgate_client" in code for _, code in EXAMPLES)


@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_the_example_runs(sdk_server: RunningServer, where: str, code: str) -> None:
    code = code.replace("http://localhost:8000", sdk_server.url)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**_python_env(), "MODELGATE_API_KEY": ADMIN_KEY},
    )
    assert done.returncode == 0, f"{where} failed:\n{code}\n{done.stdout}\n{done.stderr}"


def _python_env() -> dict[str, str]:
    """The environment without the test run's MODELGATE_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELGATE_")}
