"""``modelgate optimize``: optimized candidates of a model version, measured side by side on
its reference inputs, and (only when asked) one registered as the next version with its
lineage. Runs on the model repository's files: no server. onnx and ONNX Runtime's
quantization tools load here, when the command runs, never in the server."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelgate.errors import ModelgateError

if TYPE_CHECKING:
    from modelgate.core.serving.ports import Arrays, VersionSource
    from modelgate.optimization.measurement import Row

__all__ = ["optimize"]

console = Console()

_METHODS = ("graph-extended", "dynamic-int8", "static-int8", "magnitude-prune", "distill")


def optimize(
    model: Annotated[str, typer.Argument(help="The model's name in the repository.")],
    version: Annotated[
        int | None,
        typer.Option(min=1, help="The version to optimize (default: the default one)."),
    ] = None,
    model_repository: Annotated[
        Path,
        typer.Option(envvar="MODELGATE_MODEL_REPOSITORY", help="Folder of models."),
    ] = Path("models"),
    method: Annotated[
        list[str] | None,
        typer.Option(help=f"A method to try (repeatable; default all): {', '.join(_METHODS)}."),
    ] = None,
    register: Annotated[
        str | None,
        typer.Option(help="Install this candidate as the next version, with its lineage."),
    ] = None,
    json_report: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the report's rows to this file as JSON."),
    ] = None,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the candidate files in this (new) folder.")
    ] = None,
    rows: Annotated[int, typer.Option(min=32, max=4096, help="Reference inputs used.")] = 256,
    calibration: Annotated[
        int, typer.Option(min=1, max=1024, help="Inputs static int8 calibrates on.")
    ] = 64,
    runs: Annotated[int, typer.Option(min=1, max=1000, help="Timed calls per latency.")] = 5,
    prune_fraction: Annotated[
        float,
        typer.Option(
            min=0.01, max=0.99, help="Share of each weight matrix magnitude-prune zeroes."
        ),
    ] = 0.3,
    distill_rows: Annotated[
        int,
        typer.Option(min=256, max=200_000, help="Reference rows distill trains its student on."),
    ] = 8192,
    min_agreement: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="--register refuses less label agreement.")
    ] = 0.99,
    min_cosine: Annotated[
        float,
        typer.Option(min=-1.0, max=1.0, help="--register refuses a lower worst-case cosine."),
    ] = 0.95,
) -> None:
    """Make optimized candidates of MODEL and compare them with the original."""
    from modelgate.optimization.inputs import calibration_feeds, reference_inputs
    from modelgate.optimization.material import Material
    from modelgate.optimization.measurement import measure_candidates
    from modelgate.repository.filesystem import FileModelRepository

    methods = list(dict.fromkeys(method or _METHODS))
    unknown = [m for m in methods if m not in _METHODS]
    if unknown:
        _fail(f"unknown method {unknown[0]!r}; choose from {', '.join(_METHODS)}")
    if register is not None and register not in methods:
        _fail(f"--register {register!r} must be one of the methods tried: {', '.join(methods)}")
    if keep is not None and keep.exists():
        _fail(f"--keep {keep} exists; name a new folder")
    try:
        source = _pick(FileModelRepository(str(model_repository)).versions(model), version)
        inputs = reference_inputs(source, rows)
        material = Material(
            calibration=calibration_feeds(source, inputs, calibration),
            # drawn apart (another seed) from the rows every candidate is measured on
            training=_training(source, methods, distill_rows),
            prune_fraction=prune_fraction,
        )
    except ModelgateError as exc:
        _fail(exc.message)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # errors only: its notes on pruned nodes are noise
    workdir = Path(tempfile.mkdtemp(prefix="modelgate-optimize-"))
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("starting", total=None)

            def step(name: str) -> None:
                progress.update(task, description=f"{model} v{source.version}: {name}")

            report = measure_candidates(source, methods, inputs, material, workdir, runs, step)
        console.print(_table(f"{model} version {source.version}", report, runs))
        for row in report:
            console.print(f"  [bold]{row.name}[/]: {row.note}", highlight=False)
        if json_report is not None:
            summary = {"model": model, "version": source.version, "runs": runs}
            summary["rows"] = [row.summary() for row in report]
            json_report.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        if register is not None:
            _register(model_repository, source, report, register, min_agreement, min_cosine)
        if keep is not None:
            shutil.copytree(workdir, keep)
            console.print(f"candidate files kept in {keep}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _training(source: VersionSource, methods: list[str], rows: int) -> Arrays | None:
    """Reference rows for distillation's student (None: not asked for, or a text model)."""
    from modelgate.optimization.inputs import reference_inputs

    if "distill" not in methods or source.manifest.runtime == "text-embedding":
        return None
    return reference_inputs(source, rows, seed=1)


def _pick(sources: list[VersionSource], version: int | None) -> VersionSource:
    if not sources:
        _fail("the model has no versions")
    wanted = version or sources[0].manifest.default_version or sources[-1].version
    for source in sources:
        if source.version == wanted:
            if source.manifest.runtime not in ("onnxruntime", "text-embedding"):
                _fail(f"optimize works on ONNX models, not runtime {source.manifest.runtime!r}")
            return source
    _fail(f"no version {wanted}; versions: {', '.join(str(s.version) for s in sources)}")


def _register(
    repository: Path,
    source: VersionSource,
    report: list[Row],
    name: str,
    min_agreement: float,
    min_cosine: float,
) -> None:
    from modelgate.optimization.candidates import METHODS
    from modelgate.optimization.registration import lineage_record, register_candidate

    row = next(r for r in report if r.name == name)
    problem = _refusal(row, min_agreement, min_cosine)
    if problem:
        _fail(f"not registered: {name} {problem}; the repository is unchanged")
    assert row.folder is not None  # an ok row has its files
    algorithm = row.note if METHODS[name].replaces_algorithm else None
    lineage = lineage_record(source, name, row.summary(), algorithm=algorithm)
    try:
        number = register_candidate(
            repository, source, row.folder / source.manifest.artifact, lineage, _check_staged
        )
    except (ModelgateError, ValueError, OSError, RuntimeError) as exc:
        message = exc.message if isinstance(exc, ModelgateError) else str(exc)
        _fail(f"not registered: {message}; the repository is unchanged")
    console.print(
        f"[green]registered[/] {source.manifest.name} version {number} ({name} of version "
        f"{source.version}); a running server serves it after "
        f"`modelgate models load {source.manifest.name}`"
    )


def _refusal(row: Row, min_agreement: float, min_cosine: float) -> str | None:
    if row.status != "ok":
        return f"was {row.status}: {row.note}"
    if row.agreement is not None and row.agreement < min_agreement:
        return f"agrees on {row.agreement:.2%} of rows, below --min-agreement {min_agreement}"
    if row.cosine_min is not None and row.cosine_min < min_cosine:
        return f"has a worst cosine of {row.cosine_min:.4f}, below --min-cosine {min_cosine}"
    return None


def _check_staged(staged: VersionSource) -> None:
    """The staged folder loads through the server's runtime and answers every output."""
    from modelgate.optimization.inputs import reference_inputs
    from modelgate.runtimes.catalog import loaders

    predictor = loaders()[staged.manifest.runtime](staged)
    try:
        outputs = predictor.predict(reference_inputs(staged, 32))
    finally:
        predictor.close()
    missing = [o.name for o in staged.manifest.outputs if len(outputs.get(o.name, ())) != 32]
    if missing:
        raise ValueError(f"the staged version does not answer {', '.join(missing)}")


def _table(title: str, report: list[Row], runs: int) -> Table:
    table = Table(
        "candidate",
        "status",
        "agreement",
        "max |Δ|",
        "cosine mean",
        "cosine min",
        "batch 1 ms",
        "batch 32 ms",
        "size",
        title=title,
        caption=f"latency: wall clock of one predict call, median of {runs} after a warm-up",
    )
    for row in report:
        table.add_row(
            row.name,
            {"ok": "[green]ok[/]", "skipped": "[yellow]skipped[/]"}.get(
                row.status, "[red]failed[/]"
            ),
            _number(row.agreement, "{:.2%}"),
            _number(row.max_abs_diff, "{:.2g}"),
            _number(row.cosine_mean, "{:.4f}"),
            _number(row.cosine_min, "{:.4f}"),
            _number(row.batch1_ms, "{:.2f}"),
            _number(row.batch32_ms, "{:.2f}"),
            _size(row.size_bytes),
        )
    return table


def _number(value: float | None, form: str) -> str:
    return "" if value is None else form.format(value)


def _size(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _fail(message: str) -> NoReturn:
    console.print(f"[red]{message}[/]")
    raise typer.Exit(1)
