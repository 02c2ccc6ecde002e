"""``modelgate fairness MODEL``: a fairness audit of a model's labelled predictions, asked of
the running server (``GET /admin/models/{model}/fairness``) and shown as one table per
version and protected attribute (docs/fairness.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelgate.cli.operator import SinceOption, UntilOption

__all__ = ["fairness"]

console = Console()

_METRICS = (
    ("demographic_parity_difference", "demographic parity difference"),
    ("demographic_parity_ratio", "demographic parity ratio"),
    ("equalized_odds_difference", "equalized odds difference"),
    ("equal_opportunity_difference", "equal opportunity difference"),
)


def fairness(
    model: Annotated[str, typer.Argument(help="The model.")],
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    attribute: Annotated[str | None, typer.Option(help="Only this protected attribute.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (operators).")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    url: Annotated[
        str, typer.Option(envvar="MODELGATE_URL", help="REST address of the running server.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="MODELGATE_API_KEY", help="API key (models:read)."),
    ] = None,
) -> None:
    """Fairness of a model's decisions per group of each protected attribute, from its
    predictions joined with the feedback labels sent back for them."""
    params = {
        k: v
        for k, v in {
            "version": version,
            "attribute": attribute,
            "tenant": tenant,
            "since": since,
            "until": until,
        }.items()
        if v is not None
    }
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json,
    ) as progress:
        progress.add_task(f"auditing {model}", total=None)
        report = _get(url, f"/admin/models/{model}/fairness", params, api_key)
    if as_json:
        console.print_json(data=report)
        return
    _show(report)


def _get(url: str, path: str, params: dict[str, str], key: str | None) -> Any:
    from modelgate.cli.root import _call  # root registers this command: import when run

    # an audit of a large window may take a while on the server (bounded by its row cap)
    return _call("GET", url, path, key=key, params=params, timeout_s=300.0)


def _show(report: dict[str, Any]) -> None:
    window = f"since {report['since']}" + (f" until {report['until']}" if report["until"] else "")
    who = f"tenant {report['tenant_id']}" if report["tenant_id"] else "every tenant"
    console.print(
        f"[bold]{report['model']}[/]: labelled predictions {window}, {who}; groups need "
        f"{report['min_group_size']} labelled rows"
    )
    if report["truncated"]:
        console.print(f"[yellow]the newest {report['max_rows']} labelled rows only[/]")
    if not report["versions"]:
        console.print("no labelled predictions in the window")
    for version in report["versions"]:
        for audit in version["attributes"]:
            console.print(_table(version, audit))
            for key, name in _METRICS:
                value = audit[key]
                shown = "-" if value is None else f"{value:.3f}"
                console.print(f"  {name}: {shown}")
            if audit["status"] != "ok":
                console.print(f"  [yellow]{audit['status']}[/]: fewer than two groups to compare")


def _table(version: dict[str, Any], audit: dict[str, Any]) -> Table:
    skipped = f", {version['skipped_rows']} not binary" if version["skipped_rows"] else ""
    table = Table(
        "group",
        "rows",
        "positives",
        "selection rate",
        "accuracy",
        "TPR",
        "FPR",
        title=(
            f"version {version['version']} · {audit['attribute']} · {audit['rows']} rows{skipped}"
        ),
    )
    for group in audit["groups"]:
        if not group["sufficient"]:
            table.add_row(group["group"], str(group["count"]), "[yellow]too few to judge[/]")
            continue
        table.add_row(
            group["group"],
            str(group["count"]),
            str(group["positives"]),
            *(
                f"{group[k]:.3f}"
                for k in ("selection_rate", "accuracy", "true_positive_rate", "false_positive_rate")
            ),
        )
    return table
