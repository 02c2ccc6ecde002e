"""``modelgate payloads`` / ``subjects``: logged payloads (consent, datasets, retention, key
rotation) and one data subject's data (export and erasure)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from modelgate.cli.operator import (
    ConfigOption,
    SinceOption,
    UntilOption,
    console,
    operator_principal,
    run_on_database,
)
from modelgate.core.admission.usage import parse_instant

__all__ = ["payloads_app", "subjects_app"]

payloads_app = typer.Typer(
    no_args_is_help=True, help="Logged payloads: consent, datasets, retention, key rotation."
)
subjects_app = typer.Typer(
    no_args_is_help=True, help="One data subject's data: export (access) and erasure."
)


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
    consent = run_on_database(
        config,
        lambda s: s.payload_service.set_consent(
            operator_principal(),
            tenant,
            enabled=enable,
            purpose=purpose,
            retention_days=retention_days,
        ),
    )
    state = "[green]on[/]" if consent.enabled else "[yellow]off[/]"
    console.print(f"payload logging for {tenant}: {state}")


@payloads_app.command("export")
def payloads_export(
    out: Annotated[str, typer.Option("--out", help="JSONL file to write ('-': stdout).")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (id).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    config: ConfigOption = None,
) -> None:
    """Write consented, unexpired payload logs as a training dataset, one JSON per line
    (redacted, decrypted; subjects as pseudonyms)."""

    async def export(state: Any, write: Callable[[dict[str, Any]], None]) -> int:
        count: int = await state.payload_service.export_dataset(
            operator_principal(),
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
            count = run_on_database(config, lambda s: export(s, write))
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
    count = run_on_database(config, lambda s: s.payload_service.purge(operator_principal()))
    console.print(f"[green]{count} expired rows deleted[/]")


@payloads_app.command("rekey")
def payloads_rekey(config: ConfigOption = None) -> None:
    """Re-seal rows sealed with an older key with the active key (then the old key can be
    removed from MODELGATE_PAYLOAD_KEYS)."""
    count = run_on_database(config, lambda s: s.payload_service.rekey(operator_principal()))
    console.print(f"[green]{count} rows re-sealed[/]")


@subjects_app.command("export")
def subjects_export(
    subject: Annotated[str, typer.Argument(help="The data subject's id, as requests sent it.")],
    tenant: Annotated[str | None, typer.Option(help="Only in this tenant (id).")] = None,
    out: Annotated[str, typer.Option("--out", help="JSON file to write ('-': stdout).")] = "-",
    config: ConfigOption = None,
) -> None:
    """Everything kept about one data subject, decrypted, as JSON (an access request)."""
    document = run_on_database(
        config, lambda s: s.payload_service.export_subject(operator_principal(), subject, tenant)
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
    erased = run_on_database(
        config, lambda s: s.payload_service.erase_subject(operator_principal(), subject, tenant)
    )
    summary = ", ".join(f"{name}: {count}" for name, count in erased.items())
    console.print(f"[green]erased[/] {summary}")
