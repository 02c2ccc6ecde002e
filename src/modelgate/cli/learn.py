"""``modelgate learn MODEL``: a run of the model's learning loop, started on the running
server (``POST /admin/models/{model}/learn``) and followed with a progress bar until it ends;
``--runs`` lists the model's runs instead (docs/learning.md)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["learn"]

console = Console()

_POLL_S = 0.5


def learn(
    model: Annotated[str, typer.Argument(help="The model (its manifest has a learning section).")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the run until it ends.")
    ] = True,
    runs: Annotated[bool, typer.Option("--runs", help="List the model's runs instead.")] = False,
    run: Annotated[str | None, typer.Option(help="Show (or follow) this run instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    url: Annotated[
        str, typer.Option(envvar="MODELGATE_URL", help="REST address of the running server.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="MODELGATE_API_KEY", help="API key (tenants:admin)."),
    ] = None,
) -> None:
    """Retrain MODEL from its consented, labelled traffic: data set, trainer, evaluation
    against the serving version, registration and a canary. Exits 0 when a new version was
    registered (or, with --no-wait, when the run started), 1 otherwise."""
    from modelgate.cli.root import _call  # root registers this command: import when run

    base = f"/admin/models/{model}/learn"
    if runs:
        found = _call("GET", url, base, key=api_key)
        if as_json:
            console.print_json(data=found)
        else:
            console.print(_runs_table(model, found))
        return
    current = (
        _call("GET", url, f"{base}/{run}", key=api_key)
        if run is not None
        else _call("POST", url, base, key=api_key)
    )
    if wait and current["status"] == "running":
        current = _follow(url, base, current, api_key, quiet=as_json)
    if as_json:
        console.print_json(data=current)
    else:
        _show(current)
    if current["status"] not in ("running", "succeeded"):
        raise typer.Exit(1)


def _follow(url: str, base: str, current: dict[str, Any], key: str | None, quiet: bool) -> Any:
    from modelgate.cli.root import _call

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task("", total=current["progress"]["total"])
        while True:
            progress.update(
                task,
                completed=current["progress"]["completed"],
                description=f"{current['model']} {current['stage']}: {current['message']}",
            )
            if current["status"] != "running":
                return current
            time.sleep(_POLL_S)
            current = _call("GET", url, f"{base}/{current['id']}", key=key)


def _show(run: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "running": "cyan"}.get(run["status"], "red")
    console.print(f"[bold]{run['model']}[/] run {run['id']}: [{colour}]{run['status']}[/]")
    console.print(f"  {run['message']}", highlight=False)
    report = run.get("report") or {}
    dataset = report.get("dataset")
    if dataset:
        console.print(
            f"  data set: {dataset['rows']} rows ({dataset['training_rows']} to train, "
            f"{dataset['holdout_rows']} held out), sha256 {dataset['sha256'][:16]}..."
        )
    sanitization = report.get("sanitization")
    if sanitization:
        removed = {k: v for k, v in sanitization["columns_removed"].items()}
        console.print(
            f"  removed before training: columns {removed or 'none'}; left out "
            f"{sanitization['rows_left_out'] or 'no rows'}",
            highlight=False,
        )
    evaluation = report.get("evaluation")
    if evaluation:
        console.print(_metrics_table(evaluation))
        for gate in evaluation["gates"]:
            mark = "[green]pass[/]" if gate["passed"] else "[red]fail[/]"
            limit = gate["limit"]
            if isinstance(limit, dict):  # the fairness gate: the manifest's fairness.gates
                limit = ", ".join(f"{k} {v}" for k, v in limit.items() if v not in (None, False))
            console.print(f"  {mark} {gate['gate']} {escape(str(limit))}: {escape(gate['detail'])}")


def _metrics_table(evaluation: dict[str, Any]) -> Table:
    serving = evaluation.get("serving") or {"metrics": {}, "fairness": []}
    table = Table(
        "metric",
        "candidate",
        f"serving (v{evaluation['serving_version']})",
        title=f"held-out rows: {evaluation['holdout_rows']}",
    )
    for name in ("auc", "accuracy", "log_loss", "calibration_error"):
        table.add_row(
            name,
            _number(evaluation["candidate"]["metrics"].get(name)),
            _number(serving["metrics"].get(name)),
        )
    theirs = {a["attribute"]: a for a in serving["fairness"]}
    for audit in evaluation["candidate"]["fairness"]:
        other = theirs.get(audit["attribute"], {})
        for key in ("demographic_parity_difference", "equalized_odds_difference"):
            table.add_row(
                f"{audit['attribute']}: {key}",
                _number(audit.get(key)),
                _number(other.get(key)),
            )
    return table


def _runs_table(model: str, runs: list[dict[str, Any]]) -> Table:
    table = Table("run", "status", "trigger", "started by", "created", "version", "message",
                  title=f"{model}: learning runs")  # fmt: skip
    for found in runs:
        table.add_row(
            found["id"],
            found["status"],
            found["trigger"],
            found["started_by"],
            found["created_at"][:19],
            "" if found["version"] is None else str(found["version"]),
            found["message"],
        )
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
