"""``modelgate plans`` / ``tenants`` / ``keys``: who may call, on what plan, with which keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from modelgate.cli.operator import (
    ConfigOption,
    console,
    operator_principal,
    print_whole,
    run_on_database,
)
from modelgate.core.access.identity import Plan
from modelgate.core.access.tenancy import DEFAULT_ROWS_PER_DAY, DEFAULT_TOKENS_PER_DAY

__all__ = ["keys_app", "plans_app", "tenants_app"]

tenants_app = typer.Typer(no_args_is_help=True, help="Create and list tenants.")
plans_app = typer.Typer(no_args_is_help=True, help="Create and list plans (tiers).")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list, rotate and revoke API keys.")


@plans_app.command("create")
def create_plan(
    name: str,
    rps: Annotated[float | None, typer.Option(help="Requests per second (sustained).")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests allowed at once.")] = None,
    requests_per_day: Annotated[int | None, typer.Option()] = None,
    requests_per_month: Annotated[int | None, typer.Option()] = None,
    rows_per_day: Annotated[int | None, typer.Option(min=0, help="0: no quota.")] = None,
    rows_per_month: Annotated[int | None, typer.Option()] = None,
    tokens_per_day: Annotated[int | None, typer.Option(min=0, help="0: no quota.")] = None,
    tokens_per_month: Annotated[int | None, typer.Option()] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Rows per request.")] = None,
    explanations_per_minute: Annotated[
        int | None, typer.Option(min=1, help="Rows explained per minute (parameters.explain).")
    ] = None,
    priority: Annotated[
        int, typer.Option(min=0, max=9, help="0 (shed first) to 9 (shed last).")
    ] = 0,
    model: Annotated[
        list[str] | None, typer.Option(help="A model the plan may use; repeat (default: all).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a plan. A plan given no quota at all gets the default rows and tokens per
    day (1,000,000 and 10,000,000), so a tenant's work is bounded; 0 sets none."""
    quotas = (
        requests_per_day, requests_per_month, rows_per_day, rows_per_month, tokens_per_day,
        tokens_per_month,
    )  # fmt: skip
    if all(q is None for q in quotas):
        rows_per_day, tokens_per_day = DEFAULT_ROWS_PER_DAY, DEFAULT_TOKENS_PER_DAY
    plan = Plan(
        name=name,
        requests_per_second=rps,
        burst=burst,
        requests_per_day=requests_per_day,
        requests_per_month=requests_per_month,
        rows_per_day=rows_per_day or None,
        rows_per_month=rows_per_month,
        tokens_per_day=tokens_per_day or None,
        tokens_per_month=tokens_per_month,
        max_concurrency=max_concurrency,
        max_batch_size=max_batch_size,
        explanations_per_minute=explanations_per_minute,
        priority=priority,
        models=tuple(model) if model else None,
    )
    run_on_database(config, lambda s: s.tenancy.create_plan(operator_principal(), plan))
    console.print(f"[green]created plan[/] {name}")


@plans_app.command("list")
def list_plans(config: ConfigOption = None) -> None:
    """Every plan and its limits."""
    plans = run_on_database(config, lambda s: s.identity.list_plans())
    table = Table(
        "plan", "rps", "burst", "requests/day", "requests/month", "rows/day", "rows/month",
        "tokens/day", "tokens/month", "concurrency", "batch", "explained/min", "priority",
        "models",
    )  # fmt: skip
    for p in plans:
        limits = (
            p.requests_per_second, p.burst, p.requests_per_day, p.requests_per_month,
            p.rows_per_day, p.rows_per_month, p.tokens_per_day, p.tokens_per_month,
            p.max_concurrency, p.max_batch_size, p.explanations_per_minute,
        )  # fmt: skip
        models = ", ".join(p.models) if p.models is not None else "all"
        table.add_row(
            p.name, *(f"{v:g}" if v is not None else "-" for v in limits), str(p.priority), models
        )
    print_whole(table)


@tenants_app.command("create")
def create_tenant(
    name: str, plan: str = typer.Option(..., help="Plan name."), config: ConfigOption = None
) -> None:
    """Create a tenant on a plan; prints its id."""
    tenant = run_on_database(
        config, lambda s: s.tenancy.create_tenant(operator_principal(), name, plan)
    )
    console.print(f"[green]created tenant[/] {tenant.name}: [bold]{tenant.id}[/]")


@tenants_app.command("list")
def list_tenants(config: ConfigOption = None) -> None:
    """Every tenant."""
    tenants = run_on_database(config, lambda s: s.tenancy.list_tenants(operator_principal()))
    table = Table("id", "name", "plan", "created", "disabled")
    for t in tenants:
        table.add_row(
            t.id,
            t.name,
            t.plan,
            t.created_at.isoformat(timespec="seconds"),
            "yes" if t.disabled else "",
        )
    print_whole(table)


@keys_app.command("create")
def create_key(
    tenant: str = typer.Option(..., help="Tenant id."),
    name: str = typer.Option("default", help="A name to recognise the key by."),
    scope: Annotated[
        list[str] | None, typer.Option(help="Repeat for several (default: infer).")
    ] = None,
    rps: Annotated[
        float | None, typer.Option("--rps", help="The key's own requests per second.")
    ] = None,
    burst: Annotated[int | None, typer.Option(help="Burst for --rps.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key; the key itself is printed once, here, and never again."""
    created = run_on_database(
        config,
        lambda s: s.tenancy.create_key(
            operator_principal(),
            tenant,
            name,
            scope or ["infer"],
            requests_per_second=rps,
            burst=burst,
        ),
    )
    console.print(f"[green]created key[/] {created.record.id} ({created.record.prefix}...)")
    console.print("The key (shown only now):")
    print(created.secret)  # plain stdout, so it can be piped; never logged


@keys_app.command("list")
def list_keys(
    tenant: str = typer.Option(..., help="Tenant id."), config: ConfigOption = None
) -> None:
    """A tenant's keys (prefixes only)."""
    keys = run_on_database(config, lambda s: s.tenancy.list_keys(operator_principal(), tenant))
    table = Table("id", "name", "prefix", "scopes", "created", "expires", "revoked", "last used")
    for k in keys:
        when = [
            v.isoformat(timespec="seconds") if v else "-"
            for v in (k.created_at, k.expires_at, k.revoked_at, k.last_used_at)
        ]
        table.add_row(k.id, k.name, k.prefix, " ".join(k.scopes), *when)
    print_whole(table)


@keys_app.command("revoke")
def revoke_key(key_id: str, config: ConfigOption = None) -> None:
    """Revoke a key; every replica refuses it within MODELGATE_KEY_CACHE_SECONDS."""
    run_on_database(config, lambda s: s.tenancy.revoke_key(operator_principal(), key_id))
    console.print(f"[green]revoked[/] {key_id}")


@keys_app.command("rotate")
def rotate_key(
    key_id: str,
    overlap_hours: Annotated[float, typer.Option(help="How long the old key keeps working.")] = 24,
    config: ConfigOption = None,
) -> None:
    """Issue a replacement key with the same scopes; the old one works for the overlap."""
    created = run_on_database(
        config,
        lambda s: s.tenancy.rotate_key(
            operator_principal(), key_id, timedelta(hours=overlap_hours)
        ),
    )
    console.print(f"[green]new key[/] {created.record.id}; {key_id} stops in {overlap_hours} h")
    print(created.secret)
