"""``modelgate deployments``: set, show, promote and rollback on a SQLite database, with the
same checks as the admin API and the changes in the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelgate.cli import app
from tests.conftest import FIXTURE_MODELS


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("MODELGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MODELGATE_MODEL_REPOSITORY", str(FIXTURE_MODELS))
    return CliRunner()


def test_set_show_promote_and_rollback(cli: CliRunner) -> None:
    canary = ["--default-version", "1", "--canary", "2", "--steps", "10,50,100"]
    result = cli.invoke(app, ["deployments", "set", "doubler", *canary, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["stage"], shown["revision"]) == ("canary-1of2", 1)
    assert shown["weights"][1] == {"version": 2, "percent": 10, "role": "canary"}

    result = cli.invoke(app, ["deployments", "show", "doubler"])
    assert result.exit_code == 0
    assert "canary-1of2" in result.output and "canary version 2" in result.output

    result = cli.invoke(app, ["deployments", "rollback", "doubler", "--json"])
    assert json.loads(result.output)["canary"] is None
    result = cli.invoke(app, ["deployments", "promote", "doubler", "--version", "2", "--json"])
    assert json.loads(result.output)["default_version"] == 2

    result = cli.invoke(app, ["audit", "list"])
    for action in ("deployment.set", "deployment.rollback", "deployment.promote"):
        assert action in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--default-version", "1", "--split", "1=50", "--split", "2=40"], "sum to 100"),
        (["--default-version", "5"], "default_version 5 is not a version"),
        (["--default-version", "1", "--split", "1"], "--split takes VERSION=PERCENT"),
    ],
)
def test_bad_deployments_are_refused(cli: CliRunner, args: list[str], message: str) -> None:
    result = cli.invoke(app, ["deployments", "set", "doubler", *args])
    assert result.exit_code == 1
    assert message in result.output.replace("\n", " ")
    assert cli.invoke(app, ["deployments", "show", "doubler"]).exit_code == 1
