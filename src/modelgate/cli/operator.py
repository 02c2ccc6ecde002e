"""What every operator command shares: the database the machine's settings name, the operator
principal its changes are recorded under (the OS user, in the audit trail), and the console.

Operator commands (``modelgate tenants``, ``plans``, ``keys``, ``audit``, ``usage``,
``prices``, ``payloads``, ``subjects``, ``deployments``, ``feedback``) act on the database
directly. They run where the server's settings are (same ``--config``, ``MODELGATE_DATA_DIR``
or ``MODELGATE_DATABASE_URL``) and need no running server.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Plan, Principal, Scope
from modelgate.errors import ModelgateError

__all__ = ["ConfigOption", "console", "operator_principal", "print_whole", "run_on_database"]

console = Console()
_T = TypeVar("_T")

ConfigOption = Annotated[str | None, typer.Option("--config", help="YAML settings file.")]
#: the start of a report's or an export's period (``--since``)
SinceOption = Annotated[
    str | None, typer.Option(help="ISO 8601 date or datetime, inclusive (no zone: UTC).")
]
#: its end (``--until``)
UntilOption = Annotated[
    str | None, typer.Option(help="ISO 8601 date or datetime, exclusive (no zone: UTC).")
]


def operator_principal() -> Principal:
    return Principal(
        ADMIN_TENANT,
        f"cli:{getpass.getuser()}",
        frozenset(s.value for s in Scope),
        Plan(name="unlimited"),
        "admin",
    )


def run_on_database(config: str | None, work: Callable[[Any], Awaitable[_T]]) -> _T:
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


def print_whole(table: Table) -> None:
    # Piped output has no width (Rich assumes 80 columns and truncates ids and amounts): print
    # whole rows there. A terminal folds the table to fit, ids wrapped rather than cut.
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    width = console.measure(table, options=console.options.update_width(10_000)).maximum
    Console(width=max(width, console.width)).print(table)
