"""``modelgate models card MODEL [--version V]``: a version's model card from the running
server (``GET /admin/models/{model}/versions/{version}/card``), printed for a reader or as
JSON. A tenant's key reads the card without the figures computed from every tenant's
traffic (the server nulls them; ``scope: tenant``): they print as "withheld"."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["model_card", "render_card"]

#: how a figure the server nulled for a tenant's key prints
WITHHELD = "withheld"

_KEY = typer.Option(None, "--api-key", envvar="MODELGATE_API_KEY", help="API key (models:read).")
_URL = typer.Option(
    "http://127.0.0.1:8000",
    "--url",
    envvar="MODELGATE_URL",
    help="REST address of the running server.",
)


def model_card(
    model: str,
    version: Annotated[
        str | None,
        typer.Option(help="The version (default: the one the model serves by default)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
    url: str = _URL,
    api_key: str | None = _KEY,
) -> None:
    """A version's model card: lineage, artifact hash, evaluation, signature and state."""
    from modelgate.cli.root import _call, console

    path = f"/admin/models/{model}/card"
    if version is not None:
        path = f"/admin/models/{model}/versions/{version}/card"
    card = _call("GET", url, path, key=api_key)
    if as_json:  # plain stdout, for scripts
        print(json.dumps(card, indent=2))
        return
    render_card(card, console)


def render_card(card: dict[str, Any], console: Console) -> None:
    """The card for a reader: what the version is, where it came from, how it scored."""
    text = card.get("card") or {}
    deployment = card["deployment"]
    role = deployment["role"] or "none"
    if deployment["role"] not in (None, "none"):
        role += f", {deployment['percent']}% of traffic"
    console.print(f"[bold]{card['model']}[/] version {card['version']} ({card['state']}, {role})")
    if text.get("description"):
        console.print(text["description"])
    if card.get("scope") == "tenant":
        console.print(
            f"[dim]tenant view: figures computed from the model's traffic are {WITHHELD}[/]"
        )
    about = Table.grid(padding=(0, 2))
    about.add_column(style="bold")
    about.add_column()
    for key in ("intended_use", "limitations", "license", "algorithm", "precision", "source"):
        if text.get(key):
            about.add_row(key.replace("_", " "), str(text[key]))
    artifact = card["artifact"]
    if "sha256" in artifact:
        agrees = {True: " (matches lineage)", False: " [red](differs from lineage!)[/]"}
        about.add_row(
            "artifact",
            f"{artifact['file']}, {artifact['bytes']:,} bytes, sha256 {artifact['sha256']}"
            + agrees.get(artifact["matches_lineage"], ""),
        )
    else:
        about.add_row("artifact", f"{artifact['file']}: {artifact.get('problem', 'unknown')}")
    about.add_row(
        "signature",
        ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in card["inputs"])
        + " → "
        + ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in card["outputs"]),
    )
    serving = [name for name in ("batching", "anomaly", "feedback") if card.get(name)]
    about.add_row("serving", f"{card['runtime']}; " + (", ".join(serving) or "no extras"))
    _lineage_rows(about, card)
    console.print(about)
    lineage = card.get("lineage") or {}
    metrics = (lineage.get("evaluation") or {}).get("metrics")
    title = "evaluation (lineage)"
    if not metrics:
        metrics, title = text.get("validation_metrics"), "evaluation (manifest card)"
    if metrics:
        table = Table("metric", "value", title=title)
        for name, value in metrics.items():
            table.add_row(name, f"{value:.4f}" if isinstance(value, float) else _shown(value))
        console.print(table)


def _lineage_rows(about: Table, card: dict[str, Any]) -> None:
    lineage = card.get("lineage")
    if lineage is None or card["lineage_status"] != "recorded":
        about.add_row("lineage", f"[yellow]{card['lineage_status']}[/]")
        if lineage is None:
            return
    about.add_row("origin", str(lineage.get("origin")))
    parent = lineage.get("parent")
    if parent:
        about.add_row("parent", f"version {parent.get('version')} ({parent.get('relation')})")
    builder = lineage.get("builder") or {}
    about.add_row("built by", f"{builder.get('name')} {builder.get('version', '')}".strip())
    training = lineage.get("training") or {}
    for key, value in training.items():
        about.add_row(f"training {key}", _shown(value))
    dataset = lineage.get("dataset")
    if dataset:
        about.add_row(
            "dataset",
            f"{dataset.get('name', '')}: {_shown(dataset.get('rows'))} rows, "
            f"{_shown(dataset.get('bytes'))} bytes, sha256 {dataset.get('sha256')}",
        )
    else:
        about.add_row("dataset", "not recorded")
    sanitization = lineage.get("sanitization")
    if sanitization:  # the learning loop's: what no trainer saw
        about.add_row(
            "sanitization",
            f"columns removed {sanitization.get('columns_removed') or 'none'}; rows left out "
            f"{_rows_left_out(card, sanitization)}",
        )
    about.add_row("started by", f"{lineage.get('started_by')} at {lineage.get('created_at')}")


def _shown(value: Any) -> str:
    return WITHHELD if value is None else str(value)


def _rows_left_out(card: dict[str, Any], sanitization: dict[str, Any]) -> str:
    if card.get("scope") == "tenant" and sanitization.get("rows_left_out") is None:
        return WITHHELD
    return str(sanitization.get("rows_left_out") or "none")
