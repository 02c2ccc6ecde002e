"""``modelgate audit``: read the audit trail and verify its hash chain."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from modelgate.cli.operator import ConfigOption, console, print_whole, run_on_database

__all__ = ["audit_app"]

audit_app = typer.Typer(no_args_is_help=True, help="Read and verify the audit trail.")


@audit_app.command("verify")
def verify_audit(config: ConfigOption = None) -> None:
    """Re-check the audit trail's hash chain; exit 1 if a record was edited or removed."""
    result = run_on_database(config, lambda s: s.audit.verify())
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
    records = run_on_database(config, lambda s: s.audit.list(after, limit))
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
    print_whole(table)
