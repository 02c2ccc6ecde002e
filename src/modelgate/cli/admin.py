"""``modelgate tenants`` / ``plans`` / ``keys`` / ``usage`` / ``prices``: operator commands
that act on the database directly (the machine's settings say which), recorded in the audit
trail as the OS user.

They run where the server's settings are (same ``--config``, ``MODELGATE_DATA_DIR`` or
``MODELGATE_DATABASE_URL``) and need no running server.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.core.access.tenancy import DEFAULT_ROWS_PER_DAY, DEFAULT_TOKENS_PER_DAY
from modelgate.core.admission.usage import (
    GROUPS,
    UsageQuery,
    UsageRow,
    parse_group_by,
    parse_instant,
)
from modelgate.errors import ModelgateError

__all__ = [
    "audit_app",
    "keys_app",
    "payloads_app",
    "plans_app",
    "prices_app",
    "subjects_app",
    "tenants_app",
    "usage_app",
]

tenants_app = typer.Typer(no_args_is_help=True, help="Create and list tenants.")
plans_app = typer.Typer(no_args_is_help=True, help="Create and list plans (tiers).")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list, rotate and revoke API keys.")
audit_app = typer.Typer(no_args_is_help=True, help="Read and verify the audit trail.")
usage_app = typer.Typer(no_args_is_help=True, help="Usage and cost reports.")
prices_app = typer.Typer(no_args_is_help=True, help="The price table usage is charged at.")
payloads_app = typer.Typer(
    no_args_is_help=True, help="Logged payloads: consent, datasets, retention, key rotation."
)
subjects_app = typer.Typer(
    no_args_is_help=True, help="One data subject's data: export (access) and erasure."
)
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
    from modelgate.boot.state import build_state
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
    rows_per_day: Annotated[int | None, typer.Option(min=0, help="0: no quota.")] = None,
    rows_per_month: Annotated[int | None, typer.Option()] = None,
    tokens_per_day: Annotated[int | None, typer.Option(min=0, help="0: no quota.")] = None,
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
    _print_whole(table)


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
    _print_whole(table)


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
    _print_whole(table)


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
    _print_whole(table)


def _currency(config: str | None) -> str:
    from modelgate.settings import load_settings

    return load_settings(config_file=config).currency


@usage_app.command("report")
def usage_report(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (id).")] = None,
    key: Annotated[str | None, typer.Option(help="Only this key (id).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 date or datetime, inclusive (no zone: UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO 8601 date or datetime, exclusive (no zone: UTC).")
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help="Group by, comma-separated: " + ", ".join(GROUPS) + ".")
    ] = "day",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """Requests, rows, tokens, latency, compute time and cost, summed per group."""

    async def report(state: Any) -> list[UsageRow]:
        query = UsageQuery.parse(
            tenant=tenant, key=key, model=model, since=since, until=until, group_by=by
        )
        rows: list[UsageRow] = await state.usage_service.report(_operator(), query)
        return rows

    rows = _run(config, report)
    currency = _currency(config)
    if as_json:  # plain stdout, for scripts
        print(json.dumps({"currency": currency, "rows": [asdict(r) for r in rows]}, indent=2))
        return
    if not rows:
        console.print("[yellow]no usage recorded for this query[/]")
        return
    groups = [g for g in GROUPS if g in parse_group_by(by)]
    _print_whole(_usage_table(rows, groups, currency))


def _print_whole(table: Table) -> None:
    # Piped output has no width (Rich assumes 80 columns and truncates ids and amounts): print
    # whole rows there. A terminal folds the table to fit, ids wrapped rather than cut.
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    width = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(width=max(width, console.width)).print(table)


def _usage_table(rows: Sequence[UsageRow], groups: Sequence[str], currency: str) -> Table:
    fields = {"day": "day", "tenant": "tenant_id", "key": "key_id", "model": "model"}
    columns = [fields.get(g, "version") for g in groups]
    table = Table(
        *groups, "requests", "errors", "rows", "tokens", "avg ms", "max ms", "compute s",
        f"cost ({currency})",
    )  # fmt: skip
    for column in table.columns[len(groups) :]:
        column.justify = "right"

    def numbers(r: UsageRow) -> list[str]:
        return [
            f"{r.requests:,}", f"{r.errors:,}", f"{r.rows:,}", f"{r.tokens:,}",
            f"{r.latency_ms_avg:.1f}", f"{r.latency_ms_max:.1f}", f"{r.compute_seconds:.3f}",
            f"{r.cost:.4f}",
        ]  # fmt: skip

    for r in rows:
        table.add_row(*(getattr(r, c) or "-" for c in columns), *numbers(r))
    requests = sum(r.requests for r in rows)
    total = UsageRow(
        day=None, tenant_id=None, key_id=None, model=None, version=None,
        requests=requests,
        errors=sum(r.errors for r in rows),
        rows=sum(r.rows for r in rows),
        tokens=sum(r.tokens for r in rows),
        latency_ms_avg=sum(r.latency_ms_avg * r.requests for r in rows) / max(requests, 1),
        latency_ms_max=max(r.latency_ms_max for r in rows),
        compute_seconds=sum(r.compute_seconds for r in rows),
        cost=sum(r.cost for r in rows),
    )  # fmt: skip
    table.add_section()
    label = ["total"] + [""] * (len(groups) - 1) if groups else []
    table.add_row(*label, *numbers(total), style="bold")
    return table


@prices_app.command("list")
def list_prices(config: ConfigOption = None) -> None:
    """Every price; a model's price beats its hardware class's, which beats the default."""
    prices = _run(config, lambda s: s.usage_service.list_prices(_operator()))
    currency = _currency(config)
    table = Table(
        "target", f"per 1k units ({currency})", f"per compute second ({currency})", "updated"
    )
    for p in prices:
        table.add_row(
            p.target,
            f"{p.per_1k_units:g}",
            f"{p.per_compute_second:g}",
            p.updated_at.isoformat(timespec="seconds"),
        )
    _print_whole(table)


@prices_app.command("set")
def set_price(
    target: Annotated[str, typer.Argument(help="default, model:<name> or hardware:<class>.")],
    per_1k_units: Annotated[
        float, typer.Option(help="Per 1,000 units: tokens for text models, rows otherwise.")
    ] = 0.0,
    per_compute_second: Annotated[float, typer.Option(help="Per second of model compute.")] = 0.0,
    config: ConfigOption = None,
) -> None:
    """Set (or replace) a price; usage written from now on is charged at it."""
    _run(
        config,
        lambda s: s.usage_service.set_price(_operator(), target, per_1k_units, per_compute_second),
    )
    console.print(f"[green]price set[/] {target}")


@prices_app.command("delete")
def delete_price(target: str, config: ConfigOption = None) -> None:
    """Remove a price."""
    _run(config, lambda s: s.usage_service.delete_price(_operator(), target))
    console.print(f"[green]price deleted[/] {target}")


@payloads_app.command("consent")
def payloads_consent(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    enable: Annotated[bool, typer.Option("--enable/--disable", help="Opt in or out.")],
    purpose: Annotated[
        str | None, typer.Option(help="The purpose consented to (default: each model's).")
    ] = None,
    retention_days: Annotated[
        int | None, typer.Option(help="Keep rows at most this many days.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Set a tenant's consent to payload logging (replicas apply it within seconds)."""
    consent = _run(
        config,
        lambda s: s.payload_service.set_consent(
            _operator(), tenant, enabled=enable, purpose=purpose, retention_days=retention_days
        ),
    )
    state = "[green]on[/]" if consent.enabled else "[yellow]off[/]"
    console.print(f"payload logging for {tenant}: {state}")


@payloads_app.command("export")
def payloads_export(
    out: Annotated[str, typer.Option("--out", help="JSONL file to write ('-': stdout).")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (id).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 date or datetime, inclusive (no zone: UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO 8601 date or datetime, exclusive (no zone: UTC).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write consented, unexpired payload logs as a training dataset, one JSON per line
    (redacted, decrypted; subjects as pseudonyms)."""

    async def export(state: Any, write: Callable[[dict[str, Any]], None]) -> int:
        count: int = await state.payload_service.export_dataset(
            _operator(),
            write,
            tenant_id=tenant,
            model=model,
            since=parse_instant(since, "since") if since else None,
            until=parse_instant(until, "until") if until else None,
        )
        return count

    with contextlib.ExitStack() as stack:
        file = sys.stdout if out == "-" else stack.enter_context(open(out, "w", encoding="utf-8"))

        def write(row: dict[str, Any]) -> None:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")

        try:
            count = _run(config, lambda s: export(s, write))
        except BaseException:
            if out != "-":  # no half-written dataset left behind
                stack.close()
                os.unlink(out)
            raise
    if out != "-":
        console.print(f"[green]{count} rows written[/] to {out}")


@payloads_app.command("purge")
def payloads_purge(config: ConfigOption = None) -> None:
    """Delete the rows past their retention now (servers also do it every hour)."""
    count = _run(config, lambda s: s.payload_service.purge(_operator()))
    console.print(f"[green]{count} expired rows deleted[/]")


@payloads_app.command("rekey")
def payloads_rekey(config: ConfigOption = None) -> None:
    """Re-seal rows sealed with an older key with the active key (then the old key can be
    removed from MODELGATE_PAYLOAD_KEYS)."""
    count = _run(config, lambda s: s.payload_service.rekey(_operator()))
    console.print(f"[green]{count} rows re-sealed[/]")


@subjects_app.command("export")
def subjects_export(
    subject: Annotated[str, typer.Argument(help="The data subject's id, as requests sent it.")],
    tenant: Annotated[str | None, typer.Option(help="Only in this tenant (id).")] = None,
    out: Annotated[str, typer.Option("--out", help="JSON file to write ('-': stdout).")] = "-",
    config: ConfigOption = None,
) -> None:
    """Everything kept about one data subject, decrypted, as JSON (an access request)."""
    document = _run(
        config, lambda s: s.payload_service.export_subject(_operator(), subject, tenant)
    )
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if out == "-":
        print(text)
        return
    with open(out, "w") as file:
        file.write(text + "\n")
    console.print(f"[green]written[/] {out}")


@subjects_app.command("erase")
def subjects_erase(
    subject: Annotated[str, typer.Argument(help="The data subject's id, as requests sent it.")],
    tenant: Annotated[str | None, typer.Option(help="Only in this tenant (id).")] = None,
    config: ConfigOption = None,
) -> None:
    """Erase everything tied to one data subject (recorded in the audit trail)."""
    erased = _run(config, lambda s: s.payload_service.erase_subject(_operator(), subject, tenant))
    summary = ", ".join(f"{name}: {count}" for name, count in erased.items())
    console.print(f"[green]erased[/] {summary}")
