"""``modelgate tenants`` / ``plans`` / ``keys``: operator commands that act on the database
directly (the machine's settings say which), recorded in the audit trail as the OS user.

They run where the server's settings are (same ``--config``, ``MODELGATE_DATA_DIR`` or
``MODELGATE_DATABASE_URL``) and need no running server.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from modelgate.core.authentication import ADMIN_TENANT
from modelgate.core.identity import Plan, Principal, Scope
from modelgate.errors import ModelgateError

__all__ = ["audit_app", "keys_app", "plans_app", "tenants_app"]

tenants_app = typer.Typer(no_args_is_help=True, help="Create and list tenants.")
plans_app = typer.Typer(no_args_is_help=True, help="Create and list plans (tiers).")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list, rotate and revoke API keys.")
audit_app = typer.Typer(no_args_is_help=True, help="Read and verify the audit trail.")
console = Console()
_T = TypeVar("_T")

ConfigOption = Annotated[str | None, typer.Option("--config", help="YAML settings file.")]


def _operator() -> Principal:
    return Principal(
        ADMIN_TENANT,
        f"cli:{getpass.getuser()}",
        frozenset(s.value for s in Scope),
        Plan(name="unlimited"),
        "admin",
    )


def _run(config: str | None, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Open the database named by the settings, migrate it, run ``work(state)``."""
    from modelgate.bootstrap import build_state
    from modelgate.settings import load_settings
    from modelgate.storage.sql.engine import migrate

    async def main() -> _T:
        state = build_state(load_settings(config_file=config))
        try:
            await migrate(state.url)
            return await work(state)
        finally:
            await state.engine.dispose()

    try:
        return asyncio.run(main())
    except ModelgateError as exc:
        console.print(f"[red]{exc.kind.value}:[/] {exc.message}")
        raise typer.Exit(1) from None


@plans_app.command("create")
def create_plan(
    name: str,
    rps: Annotated[float | None, typer.Option(help="Requests per second (sustained).")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests allowed at once.")] = None,
    requests_per_day: Annotated[int | None, typer.Option()] = None,
    requests_per_month: Annotated[int | None, typer.Option()] = None,
    rows_per_day: Annotated[int | None, typer.Option()] = None,
    rows_per_month: Annotated[int | None, typer.Option()] = None,
    tokens_per_day: Annotated[int | None, typer.Option()] = None,
    tokens_per_month: Annotated[int | None, typer.Option()] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Rows per request.")] = None,
    priority: Annotated[
        int, typer.Option(min=0, max=9, help="0 (shed first) to 9 (shed last).")
    ] = 0,
    model: Annotated[
        list[str] | None, typer.Option(help="A model the plan may use; repeat (default: all).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a plan."""
    plan = Plan(
        name=name,
        requests_per_second=rps,
        burst=burst,
        requests_per_day=requests_per_day,
        requests_per_month=requests_per_month,
        rows_per_day=rows_per_day,
        rows_per_month=rows_per_month,
        tokens_per_day=tokens_per_day,
        tokens_per_month=tokens_per_month,
        max_concurrency=max_concurrency,
        max_batch_size=max_batch_size,
        priority=priority,
        models=tuple(model) if model else None,
    )
    _run(config, lambda s: s.tenancy.create_plan(_operator(), plan))
    console.print(f"[green]created plan[/] {name}")


@plans_app.command("list")
def list_plans(config: ConfigOption = None) -> None:
    """Every plan and its limits."""
    plans = _run(config, lambda s: s.identity.list_plans())
    table = Table(
        "plan", "rps", "burst", "requests/day", "requests/month", "rows/day", "rows/month",
        "tokens/day", "tokens/month", "concurrency", "batch", "priority", "models",
    )  # fmt: skip
    for p in plans:
        limits = (
            p.requests_per_second, p.burst, p.requests_per_day, p.requests_per_month,
            p.rows_per_day, p.rows_per_month, p.tokens_per_day, p.tokens_per_month,
            p.max_concurrency, p.max_batch_size,
        )  # fmt: skip
        models = ", ".join(p.models) if p.models is not None else "all"
        table.add_row(
            p.name, *(f"{v:g}" if v is not None else "-" for v in limits), str(p.priority), models
        )
    console.print(table)


@tenants_app.command("create")
def create_tenant(
    name: str, plan: str = typer.Option(..., help="Plan name."), config: ConfigOption = None
) -> None:
    """Create a tenant on a plan; prints its id."""
    tenant = _run(config, lambda s: s.tenancy.create_tenant(_operator(), name, plan))
    console.print(f"[green]created tenant[/] {tenant.name}: [bold]{tenant.id}[/]")


@tenants_app.command("list")
def list_tenants(config: ConfigOption = None) -> None:
    """Every tenant."""
    tenants = _run(config, lambda s: s.tenancy.list_tenants(_operator()))
    table = Table("id", "name", "plan", "created", "disabled")
    for t in tenants:
        table.add_row(
            t.id,
            t.name,
            t.plan,
            t.created_at.isoformat(timespec="seconds"),
            "yes" if t.disabled else "",
        )
    console.print(table)


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
    created = _run(
        config,
        lambda s: s.tenancy.create_key(
            _operator(),
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
    keys = _run(config, lambda s: s.tenancy.list_keys(_operator(), tenant))
    table = Table("id", "name", "prefix", "scopes", "created", "expires", "revoked", "last used")
    for k in keys:
        when = [
            v.isoformat(timespec="seconds") if v else "-"
            for v in (k.created_at, k.expires_at, k.revoked_at, k.last_used_at)
        ]
        table.add_row(k.id, k.name, k.prefix, " ".join(k.scopes), *when)
    console.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: str, config: ConfigOption = None) -> None:
    """Revoke a key; every replica refuses it within MODELGATE_KEY_CACHE_SECONDS."""
    _run(config, lambda s: s.tenancy.revoke_key(_operator(), key_id))
    console.print(f"[green]revoked[/] {key_id}")


@keys_app.command("rotate")
def rotate_key(
    key_id: str,
    overlap_hours: Annotated[float, typer.Option(help="How long the old key keeps working.")] = 24,
    config: ConfigOption = None,
) -> None:
    """Issue a replacement key with the same scopes; the old one works for the overlap."""
    created = _run(
        config, lambda s: s.tenancy.rotate_key(_operator(), key_id, timedelta(hours=overlap_hours))
    )
    console.print(f"[green]new key[/] {created.record.id}; {key_id} stops in {overlap_hours} h")
    print(created.secret)


@audit_app.command("verify")
def verify_audit(config: ConfigOption = None) -> None:
    """Re-check the audit trail's hash chain; exit 1 if a record was edited or removed."""
    result = _run(config, lambda s: s.audit.verify())
    if result.ok:
        console.print(f"[green]audit trail intact[/]: {result.checked} records")
        return
    console.print(
        f"[red]audit trail broken at record {result.first_bad_seq}[/]: {result.reason} "
        f"({result.checked} records read)"
    )
    raise typer.Exit(1)


@audit_app.command("list")
def list_audit(
    after: Annotated[int, typer.Option(help="Only records after this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 50,
    config: ConfigOption = None,
) -> None:
    """The audit trail, oldest first."""
    records = _run(config, lambda s: s.audit.list(after, limit))
    table = Table("seq", "at", "actor", "action", "target", "from")
    for r in records:
        table.add_row(
            str(r.seq),
            r.at.isoformat(timespec="seconds"),
            r.actor,
            r.action,
            r.target,
            r.source_ip or "",
        )
    console.print(table)
