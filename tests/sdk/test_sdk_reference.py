"""docs/sdk-reference.md is what the SDK's docstrings say now."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_the_reference_is_up_to_date() -> None:
    script = ROOT / "clients" / "python" / "scripts" / "reference.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    written = (ROOT / "docs" / "sdk-reference.md").read_text()
    assert done.stdout == written, (
        "docs/sdk-reference.md is stale: run "
        "`python clients/python/scripts/reference.py > docs/sdk-reference.md`"
    )
