"""``modelgate deployments show|set|promote|rollback``: a model's deployment, on the database
the settings name (no server needed; every replica follows within
``MODELGATE_DEPLOYMENT_REFRESH_SECONDS``; audited as ``cli:<os user>``). Versions are
checked against the model repository of the same settings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from modelgate.cli.operator import ConfigOption, console, operator_principal, run_on_database
from modelgate.core.traffic.deployments import Canary, CanaryGate, Deployment, Shadow, Variant
from modelgate.core.traffic.rollout import DeploymentService
from modelgate.core.traffic.routing import DeploymentRouter
from modelgate.errors import ModelgateError, invalid

__all__ = ["deployments_app"]

deployments_app = typer.Typer(
    no_args_is_help=True,
    help="Deployments: pinned versions, A/B splits, canary rollouts and shadow traffic.",
)
_T = TypeVar("_T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _with_service(config: str | None, work: Callable[[DeploymentService], Awaitable[_T]]) -> _T:
    from modelgate.repository.filesystem import FileModelRepository
    from modelgate.settings import load_settings
    from modelgate.storage.sql.deployments import SqlDeploymentStore

    repository = FileModelRepository(str(load_settings(config_file=config).model_repository))

    async def versions(model: str) -> set[int]:
        return {s.version for s in await asyncio.to_thread(repository.versions, model)}

    async def run(state: Any) -> _T:
        service = DeploymentService(
            SqlDeploymentStore(state.engine), state.audit, DeploymentRouter(), versions
        )
        return await work(service)

    return run_on_database(config, run)


def _show(deployment: Deployment, as_json: bool) -> None:
    from modelgate.api.admin.deployments import deployment_view

    view = deployment_view(deployment)
    if as_json:  # plain stdout, for scripts
        print(json.dumps(view, indent=2))
        return
    console.print(
        f"[bold]{deployment.model}[/] revision {deployment.revision}, stage "
        f"[cyan]{deployment.stage}[/], default version {deployment.default_version}"
    )
    table = Table("version", "traffic %", "role")
    for version, percent, role in deployment.weights():
        table.add_row(str(version), str(percent), role)
    if deployment.shadow is not None:
        table.add_row(
            str(deployment.shadow.version), f"copy of {deployment.shadow.percent}", "shadow"
        )
    console.print(table)
    canary = deployment.canary
    if canary is not None:
        steps = " → ".join(
            f"[bold]{s}%[/]" if i == canary.step else f"{s}%" for i, s in enumerate(canary.steps)
        )
        console.print(f"canary version {canary.version}: {steps}, every {canary.step_seconds:g} s")
    if deployment.note:
        console.print(f"last change: {deployment.note} ({deployment.updated_by})")


@deployments_app.command("show")
def show(model: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The model's deployment."""
    found = _with_service(config, lambda s: s.get(operator_principal(), model))
    if found is None:
        console.print(f"model '{model}' has no deployment: its manifest's default version serves")
        raise typer.Exit(1)
    _show(found, as_json)


def _split(values: list[str]) -> tuple[Variant, ...]:
    variants = []
    for value in values:
        version, sep, weight = value.partition("=")
        if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
            raise invalid(f"--split takes VERSION=PERCENT, e.g. 2=10 (got {value!r})")
        variants.append(Variant(int(version), int(weight)))
    return tuple(variants)


@deployments_app.command("set")
def set_deployment(
    model: str,
    default_version: Annotated[int, typer.Option(help="The pinned version (the baseline).")],
    split: Annotated[
        list[str] | None, typer.Option(help="VERSION=PERCENT; repeat, summing to 100.")
    ] = None,
    canary: Annotated[int | None, typer.Option(help="A candidate version to roll out.")] = None,
    steps: Annotated[str, typer.Option(help="Canary percent per step.")] = "5,25,50,100",
    step_seconds: Annotated[float, typer.Option(help="How long each canary step lasts.")] = 300,
    min_requests: Annotated[int, typer.Option(help="Per version and step.")] = 50,
    max_error_rate_increase: Annotated[float, typer.Option()] = 0.02,
    max_p95_ratio: Annotated[float, typer.Option()] = 1.5,
    p95_slack_ms: Annotated[float, typer.Option()] = 5.0,
    shadow: Annotated[int | None, typer.Option(help="A version that gets copies.")] = None,
    shadow_percent: Annotated[int, typer.Option(help="Share of requests copied.")] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Replace the model's deployment (a canary starts at its first step now)."""
    try:
        numbers = tuple(int(s) for s in steps.split(",") if s.strip())
    except ValueError:
        console.print("[red]invalid_argument:[/] --steps takes percents, e.g. 5,25,50,100")
        raise typer.Exit(1) from None
    try:
        spec = Deployment(
            model=model,
            default_version=default_version,
            split=_split(split or []),
            canary=None
            if canary is None
            else Canary(
                version=canary,
                steps=numbers,
                step_seconds=step_seconds,
                gate=CanaryGate(min_requests, max_error_rate_increase, max_p95_ratio, p95_slack_ms),
            ),
            shadow=None if shadow is None else Shadow(shadow, shadow_percent),
        )
    except ModelgateError as exc:
        console.print(f"[red]{exc.kind.value}:[/] {exc.message}")
        raise typer.Exit(1) from None
    _show(_with_service(config, lambda s: s.put(operator_principal(), spec)), as_json)


@deployments_app.command("promote")
def promote(
    model: str,
    version: Annotated[
        int | None, typer.Option(help="The version to make the default (unset: the canary).")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Make the canary (or --version) the default; ends any split or canary."""
    _show(_with_service(config, lambda s: s.promote(operator_principal(), model, version)), as_json)


@deployments_app.command("rollback")
def rollback(model: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """End the split or canary: the default version takes all traffic again."""
    _show(_with_service(config, lambda s: s.rollback(operator_principal(), model)), as_json)
