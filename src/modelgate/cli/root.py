"""The ``modelgate`` command: ``serve`` runs the platform; the rest talk to a running server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from modelgate import __version__
from modelgate.cli.access import keys_app, plans_app, tenants_app
from modelgate.cli.audit import audit_app
from modelgate.cli.cards import model_card
from modelgate.cli.deployments import deployments_app
from modelgate.cli.fairness import fairness
from modelgate.cli.feedback import feedback_app
from modelgate.cli.jobs import jobs_app, worker
from modelgate.cli.learn import learn
from modelgate.cli.optimize import optimize
from modelgate.cli.privacy import payloads_app, subjects_app
from modelgate.cli.profile import profile
from modelgate.cli.shard import shard
from modelgate.cli.usage import prices_app, usage_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Serve AI models as an API.")
models_app = typer.Typer(
    no_args_is_help=True, help="List, load and unload models on a server; read their model cards."
)
app.add_typer(models_app, name="models")
models_app.command("card")(model_card)
app.add_typer(tenants_app, name="tenants")
app.add_typer(plans_app, name="plans")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(usage_app, name="usage")
app.add_typer(prices_app, name="prices")
app.add_typer(payloads_app, name="payloads")
app.add_typer(subjects_app, name="subjects")
app.add_typer(feedback_app, name="feedback")
app.add_typer(deployments_app, name="deployments")
app.add_typer(jobs_app, name="jobs")
app.command()(worker)
app.command()(profile)
app.command()(optimize)
app.command()(shard)
app.command()(fairness)
app.command()(learn)
console = Console()

_KEY = typer.Option(
    None, "--api-key", envvar="MODELGATE_API_KEY", help="API key (models:read, models:write)."
)
_URL = typer.Option(
    "http://127.0.0.1:8000",
    "--url",
    envvar="MODELGATE_URL",
    help="REST address of the running server.",
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    http_port: Annotated[int | None, typer.Option(help="REST port.")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
    model_repository: Annotated[Path | None, typer.Option(help="Folder of models.")] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes.")] = None,
    tls_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings file.")] = None,
    role: Annotated[
        str | None,
        typer.Option(help="all (default), gateway (routes to nodes) or node (hosts models)."),
    ] = None,
    nodes: Annotated[
        str | None, typer.Option(help="A gateway's static node list: host:port,...")
    ] = None,
    node_id: Annotated[str | None, typer.Option(help="A node's id in the directory.")] = None,
    node_address: Annotated[
        str | None, typer.Option(help="The gRPC address gateways reach this node at.")
    ] = None,
) -> None:
    """Run the model server (REST and gRPC) in the foreground."""
    from modelgate.server import run
    from modelgate.settings import load_settings

    flags: dict[str, Any] = {
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "data_dir": data_dir,
        "model_repository": model_repository,
        "workers": workers,
        "log_level": log_level,
        "tls_certfile": tls_certfile,
        "tls_keyfile": tls_keyfile,
        "role": role,
        "nodes": nodes,
        "node_id": node_id,
        "node_address": node_address,
    }
    try:
        settings = load_settings(flags, str(config) if config else None)
    except ValueError as exc:  # pydantic's ValidationError names each problem
        console.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from None
    if settings.role != "gateway" and not settings.model_repository.is_dir():
        console.print(f"[red]model repository not found:[/] {settings.model_repository}")
        raise typer.Exit(2)
    run(settings)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"modelgate {__version__}")


def _call(
    method: str,
    url: str,
    path: str,
    body: Any = None,
    key: str | None = None,
    params: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            json=body,
            params=params,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}:[/] {exc}")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        console.print(f"[red]{response.status_code}:[/] {message}")
        raise typer.Exit(1)
    return response.json() if response.content else None


@models_app.command("list")
def list_models(url: str = _URL, api_key: str | None = _KEY) -> None:
    """Every model in the repository with the state of its versions."""
    rows = _call("POST", url, "/v2/repository/index", {}, api_key)
    table = Table("model", "version", "state", "reason")
    for row in rows:
        table.add_row(row["name"], row.get("version", "-"), row["state"], row.get("reason", ""))
    console.print(table)


@models_app.command("load")
def load_model(
    name: str,
    url: str = _URL,
    api_key: str | None = _KEY,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="A JSON override of run-time settings for this load (batching, instances, "
            "execution, hardware, version_policy); needs an operator's models:configure.",
        ),
    ] = None,
) -> None:
    """Load (or reload) every version of a model without a restart."""
    body: dict[str, Any] = {}
    if config is not None:
        try:
            override = json.loads(config)
        except ValueError as exc:
            console.print(f"[red]--config is not JSON:[/] {exc}")
            raise typer.Exit(2) from None
        if not isinstance(override, dict):
            console.print("[red]--config must be a JSON object[/]")
            raise typer.Exit(2)
        body = {"parameters": {"config": override}}
    with console.status(f"loading {name}..."):
        _call("POST", url, f"/v2/repository/models/{name}/load", body, api_key)
    console.print(f"[green]loaded[/] {name}" + (" with its override" if config else ""))


@models_app.command("unload")
def unload_model(name: str, url: str = _URL, api_key: str | None = _KEY) -> None:
    """Unload a model once its in-flight requests have finished."""
    with console.status(f"unloading {name}..."):
        _call("POST", url, f"/v2/repository/models/{name}/unload", {}, api_key)
    console.print(f"[green]unloaded[/] {name}")


@app.command()
def monitor(
    model: str,
    version: Annotated[str | None, typer.Option(help="One version (default: all).")] = None,
    url: str = _URL,
    api_key: str | None = _KEY,
) -> None:
    """Drift and confidence of a model's recent traffic against its reference profile."""
    path = f"/admin/models/{model}/monitoring"
    if version is not None:
        path += f"?version={version}"
    report = _call("GET", url, path, key=api_key)
    for item in report["versions"]:
        _print_version_report(item)


_STATUS_STYLE = {"ok": "green", "watch": "yellow", "drift": "bold red"}


def _status(status: str) -> str:
    style = _STATUS_STYLE.get(status, "dim")
    return f"[{style}]{status}[/]"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_version_report(item: dict[str, Any]) -> None:
    volume = (  # null for a tenant's key: the model-wide window's figures are the operator's
        "the model's verdicts only"
        if item["rows"] is None
        else f"{item['rows']} rows in {item['requests']} requests"
    )
    console.print(
        f"[bold]{item['model']}[/] v{item['version']}: {_status(item['status'])}, {volume} "
        f"(window: last {item['window_rows']} rows, {item['window_seconds']:g} s)"
    )
    if item["features"]:
        table = Table("feature", "kind", "PSI", "KS", "KS limit", "chi-square", "p", "status")
        for f in item["features"]:
            table.add_row(
                f["name"],
                f["kind"],
                _number(f["psi"]),
                _number(f["ks"]),
                _number(f["ks_threshold"]),
                _number(f["chi_square"], 1),
                _number(f["p_value"]),
                _status(f["status"]),
            )
        console.print(table)
    if item["predictions"]:
        table = Table("output", "class", "live mean", "PSI", "KS", "KS limit", "status")
        for p in item["predictions"]:
            table.add_row(
                p["output"],
                p["class_name"] or "-",
                _number(p["live_mean"]),
                _number(p["psi"]),
                _number(p["ks"]),
                _number(p["ks_threshold"]),
                _status(p["status"]),
            )
        console.print(table)
    for output, c in item["confidence"].items():
        console.print(
            f"confidence of {output}: mean top probability {c['mean_top_probability']:.3f}, "
            f"mean entropy {c['mean_entropy']:.3f}, "
            f"low-confidence share {c['low_confidence_share']:.1%}"
        )
    concept = item.get("concept")
    if concept is not None:  # accuracy against the ground truth sent back
        table = Table("labelled", "accuracy", "AUC", "Brier", "ECE", "accuracy drop", "status")
        table.add_row(
            str(concept["labelled"]),
            _number(concept["accuracy"]),
            _number(concept["auc"]),
            _number(concept["brier"]),
            _number(concept["ece"]),
            _number(concept["accuracy_drop"]),
            _status(concept["status"]),
        )
        console.print(table)
    if item.get("text"):
        _print_text_drift(item["text"])
    anomalies = item.get("anomalies")
    if anomalies:
        share = "-" if anomalies["share"] is None else f"{anomalies['share']:.1%}"
        console.print(
            f"anomalous inputs ({anomalies['action']} above {anomalies['threshold']:g}): "
            f"{share} of {anomalies['requests']} requests "
            f"({anomalies['flagged']} flagged, {anomalies['rejected']} rejected)"
        )


def _print_text_drift(text: dict[str, Any]) -> None:
    table = Table("text", "measure", "rows", "live", "reference", "PSI", "KS", "KS limit", "status")
    length, embedding = text.get("length"), text.get("embedding")
    if length:
        table.add_row(
            text["input"],
            f"length ({length['unit']})",
            str(length["rows"]),
            _number(length["live_mean"], 1),
            _number(length["reference_mean"], 1),
            _number(length["psi"]),
            _number(length["ks"]),
            _number(length["ks_threshold"]),
            _status(length["status"]),
        )
    if embedding:
        table.add_row(
            embedding["output"],
            "cosine to centroid",
            str(embedding["rows"]),
            _number(embedding["live_mean_cosine"]),
            _number(embedding["reference_mean_cosine"]),
            _number(embedding["psi"]),
            _number(embedding["ks"]),
            _number(embedding["ks_threshold"]),
            _status(embedding["status"]),
        )
    console.print(table)
    if embedding:
        console.print(
            f"live mean embedding: cosine distance {embedding['centroid_distance']:.3f} "
            "to the reference centroid"
        )


def main() -> None:
    app()
