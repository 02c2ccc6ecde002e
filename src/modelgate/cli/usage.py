"""``modelgate usage`` / ``prices``: what tenants used, and the price table it is charged at."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from modelgate.cli.operator import (
    ConfigOption,
    SinceOption,
    UntilOption,
    console,
    operator_principal,
    print_whole,
    run_on_database,
)
from modelgate.core.admission.usage import GROUPS, UsageQuery, UsageRow, parse_group_by

__all__ = ["prices_app", "usage_app"]

usage_app = typer.Typer(no_args_is_help=True, help="Usage and cost reports.")
prices_app = typer.Typer(no_args_is_help=True, help="The price table usage is charged at.")


def _currency(config: str | None) -> str:
    from modelgate.settings import load_settings

    return load_settings(config_file=config).currency


@usage_app.command("report")
def usage_report(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (id).")] = None,
    key: Annotated[str | None, typer.Option(help="Only this key (id).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    by: Annotated[
        str, typer.Option("--by", help="Group by, comma-separated: " + ", ".join(GROUPS) + ".")
    ] = "day",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """Requests, rows, tokens, rows explained, latency, compute time and cost, summed per
    group (compute: each request's share of the batches it ran in, and the explanations';
    --by tenant,key shows each caller's)."""

    async def report(state: Any) -> list[UsageRow]:
        query = UsageQuery.parse(
            tenant=tenant, key=key, model=model, since=since, until=until, group_by=by
        )
        rows: list[UsageRow] = await state.usage_service.report(operator_principal(), query)
        return rows

    rows = run_on_database(config, report)
    currency = _currency(config)
    if as_json:  # plain stdout, for scripts
        print(json.dumps({"currency": currency, "rows": [asdict(r) for r in rows]}, indent=2))
        return
    if not rows:
        console.print("[yellow]no usage recorded for this query[/]")
        return
    groups = [g for g in GROUPS if g in parse_group_by(by)]
    print_whole(_usage_table(rows, groups, currency))


def _usage_table(rows: Sequence[UsageRow], groups: Sequence[str], currency: str) -> Table:
    fields = {"day": "day", "tenant": "tenant_id", "key": "key_id", "model": "model"}
    columns = [fields.get(g, "version") for g in groups]
    table = Table(
        *groups, "requests", "errors", "rows", "tokens", "explained", "avg ms", "max ms",
        "compute s", f"cost ({currency})",
    )  # fmt: skip
    for column in table.columns[len(groups) :]:
        column.justify = "right"

    def numbers(r: UsageRow) -> list[str]:
        return [
            f"{r.requests:,}", f"{r.errors:,}", f"{r.rows:,}", f"{r.tokens:,}",
            f"{r.explanations:,}", f"{r.latency_ms_avg:.1f}", f"{r.latency_ms_max:.1f}",
            f"{r.compute_seconds:.3f}", f"{r.cost:.4f}",
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
        explanations=sum(r.explanations for r in rows),
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
    prices = run_on_database(config, lambda s: s.usage_service.list_prices(operator_principal()))
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
    print_whole(table)


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
    run_on_database(
        config,
        lambda s: s.usage_service.set_price(
            operator_principal(), target, per_1k_units, per_compute_second
        ),
    )
    console.print(f"[green]price set[/] {target}")


@prices_app.command("delete")
def delete_price(target: str, config: ConfigOption = None) -> None:
    """Remove a price."""
    run_on_database(config, lambda s: s.usage_service.delete_price(operator_principal(), target))
    console.print(f"[green]price deleted[/] {target}")
