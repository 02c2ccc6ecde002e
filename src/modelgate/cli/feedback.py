"""``modelgate feedback export``: labelled predictions as a training dataset (JSON lines or
Parquet), joined with the consented payload log's inputs, on the database the settings
name (no server needed; audited as ``cli:<os user>``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from modelgate.cli.operator import (
    ConfigOption,
    SinceOption,
    UntilOption,
    console,
    operator_principal,
    run_on_database,
)
from modelgate.core.admission.usage import parse_instant
from modelgate.core.monitoring.datasets import export_training_rows

__all__ = ["feedback_app"]

feedback_app = typer.Typer(
    no_args_is_help=True, help="Feedback: labelled predictions as training datasets."
)

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class Format(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"


@feedback_app.command("export")
def feedback_export(
    model: Annotated[str, typer.Option(help="The model.")],
    out: Annotated[str, typer.Option("--out", help="File to write ('-': stdout, jsonl only).")],
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    format: Annotated[Format, typer.Option(help="jsonl or parquet.")] = Format.jsonl,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (id).")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    config: ConfigOption = None,
) -> None:
    """Write every live labelled prediction of a model, one row per labelled prediction
    row: ids, model, version, times, subject pseudonym, predicted class, score, label and
    ``inputs`` (that row of each input tensor, flat) where the consented payload log holds
    the request, else null."""
    if format is Format.parquet and out == "-":
        raise typer.BadParameter("Parquet needs a file", param_hint="--out")
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        file = None
        if format is Format.jsonl:
            file = (
                sys.stdout if out == "-" else stack.enter_context(open(out, "w", encoding="utf-8"))
            )
        progress = stack.enter_context(
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=out == "-",
            )
        )
        task = progress.add_task("0 rows", total=None)

        def write(row: dict[str, Any]) -> None:
            if file is not None:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                rows.append(row)
            count = progress.tasks[task].completed + 1
            progress.update(task, completed=count, description=f"{int(count)} rows")

        def export(state: Any) -> Any:
            return export_training_rows(
                state.feedback_service,
                state.payload_service,
                operator_principal(),
                write,
                model=model,
                version=version,
                tenant_id=tenant,
                since=parse_instant(since, "since") if since else None,
                until=parse_instant(until, "until") if until else None,
            )

        try:
            count = run_on_database(config, export)
            if format is Format.parquet:
                progress.update(task, description=f"{count} rows: writing Parquet")
                _write_parquet(rows, out)
        except BaseException:
            if out != "-":  # no half-written dataset left behind
                stack.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(out)
            raise
    if out != "-":
        console.print(f"[green]{count} rows written[/] to {out}")


def _write_parquet(rows: list[dict[str, Any]], out: str) -> None:
    import pyarrow as pa  # only here: serving never needs it
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([_arrow_row(row) for row in rows])
    pq.write_table(table, out)


def _arrow_row(row: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats are strings in JSON ("NaN"); Parquet holds them as floats."""
    inputs: dict[str, Any] | None = row.get("inputs")
    if not inputs:
        return row
    return {**row, "inputs": {name: _numbers(values) for name, values in inputs.items()}}


def _numbers(values: list[Any]) -> list[Any]:
    if all(isinstance(v, str) for v in values):  # text stays text
        return values
    return [_NONFINITE.get(v, v) if isinstance(v, str) else v for v in values]
