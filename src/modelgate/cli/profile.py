"""``modelgate profile``: write a version's reference profile (``reference.json``) from a
sample of its training data, so that drift monitoring and anomaly checks work for models
the project did not build. The version is loaded with its own runtime and run over the
sample in batches (with progress), and :func:`modelgate.core.serving.profiles.profile_of` turns
inputs and outputs into the profile. Runs on the model repository's files: no server."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from modelgate.errors import ModelgateError

if TYPE_CHECKING:  # numpy and the core load when the command runs, not with every command
    from modelgate.core.serving.manifest import ModelManifest

__all__ = ["profile"]

console = Console()

Arrays = dict[str, Any]


def profile(
    model_dir: Annotated[Path, typer.Argument(help="The model's folder in the repository.")],
    version: Annotated[int, typer.Argument(help="The version to profile.")],
    data: Annotated[
        Path,
        typer.Option(
            help="Training sample: .npz (one array per input, named like it) or .csv (a "
            "header naming the feature_names of the model's 2-D input)."
        ),
    ],
    categorical: Annotated[
        list[str] | None, typer.Option(help="A categorical feature (repeatable).")
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(help="JSON of validation figures (accuracy, auc, ...) to compare with."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per model call.")] = 256,
    force: Annotated[bool, typer.Option(help="Replace an existing reference.json.")] = False,
) -> None:
    """Write MODEL_DIR/VERSION/reference.json from a sample of the training data."""
    from modelgate.core.serving.artifacts import artifact_path
    from modelgate.core.serving.profiles import REFERENCE_FILE, profile_of
    from modelgate.repository.filesystem import FileModelRepository
    from modelgate.runtimes.catalog import loaders

    try:
        sources = FileModelRepository(str(model_dir.parent)).versions(model_dir.name)
    except ModelgateError as exc:
        _fail(exc.message)
    source = next((s for s in sources if s.version == version), None)
    if source is None:
        _fail(f"model '{model_dir.name}' has no version {version}")
    target = Path(source.path) / REFERENCE_FILE
    shown = f"{REFERENCE_FILE} of model '{model_dir.name}' version {version}"
    if target.exists() or target.is_symlink():
        try:  # a link out of the model's folder is never written through (nor read back)
            artifact_path(source, REFERENCE_FILE, "reference profile")
        except ModelgateError as exc:
            _fail(exc.message)
        if not force:
            _fail(f"{shown} exists; pass --force to replace it")
    manifest = source.manifest
    validation = _read_metrics(metrics) if metrics is not None else None
    inputs = _read_sample(manifest, data)
    loader = loaders().get(manifest.runtime)
    if loader is None:
        _fail(f"no runtime '{manifest.runtime}'")
    predictor = loader(source)
    try:
        outputs = _run(predictor, inputs, batch_size)
    except ModelgateError as exc:
        _fail(exc.message)
    finally:
        predictor.close()
    try:
        document = profile_of(
            manifest,
            inputs,
            outputs,
            categorical=categorical or (),
            validation_metrics=validation,
            source=data.name,
        )
    except ValueError as exc:
        _fail(str(exc))
    target.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    table = Table(title=shown)
    table.add_column("part")
    table.add_column("profiled")
    table.add_row("rows", str(document["n_rows"]))
    table.add_row("features", ", ".join(document["features"]) or "-")
    table.add_row("outputs", ", ".join(document["outputs"]) or "-")
    table.add_row("validation figures", ", ".join(validation or {}) or "-")
    console.print(table)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]{message}[/]")
    raise typer.Exit(2)


def _read_metrics(path: Path) -> dict[str, float]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in loaded.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        _fail(f"{path}: expected a JSON object of numbers ({exc})")


def _read_sample(manifest: ModelManifest, path: Path) -> Arrays:
    """The sample as the model's inputs, checked against its signature."""
    import numpy as np

    from modelgate.core.serving.tensors import numpy_dtype

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        elif path.suffix == ".csv":
            arrays = _read_csv(manifest, path)
        else:
            _fail(f"{path}: use a .npz or a .csv file")
    except (OSError, ValueError) as exc:
        _fail(f"{path}: {exc}")
    sample: Arrays = {}
    for spec in manifest.inputs:
        if spec.name not in arrays:
            _fail(f"{path} has no array '{spec.name}' (the model takes {spec.name})")
        array = arrays[spec.name]
        if spec.datatype != "BYTES":
            array = array.astype(numpy_dtype(spec.datatype))
        if array.ndim != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(array.shape, spec.shape, strict=True)
        ):
            _fail(
                f"'{spec.name}' has shape {list(array.shape)}, the model takes {list(spec.shape)}"
            )
        sample[spec.name] = array
    return sample


def _read_csv(manifest: ModelManifest, path: Path) -> Arrays:
    import numpy as np

    spec = next((s for s in manifest.inputs if s.feature_names and len(s.shape) == 2), None)
    if spec is None or spec.feature_names is None or len(manifest.inputs) != 1:
        raise ValueError("a .csv sample needs a model with one 2-D input with feature_names")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None) or []
        missing = [n for n in spec.feature_names if n not in header]
        if missing:
            raise ValueError(f"the header lacks the features {', '.join(missing)}")
        columns = [header.index(n) for n in spec.feature_names]
        rows = [[float(row[c]) for c in columns] for row in reader if row]
    return {spec.name: np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns))}


def _run(predictor: Any, inputs: Arrays, batch_size: int) -> Arrays:
    import numpy as np

    total = len(next(iter(inputs.values())))
    parts: dict[str, list[Any]] = {}
    with Progress(
        TextColumn("running the model over the sample"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("rows", total=total)
        for start in range(0, total, batch_size):
            batch = {name: array[start : start + batch_size] for name, array in inputs.items()}
            for name, array in predictor.predict(batch).items():
                parts.setdefault(name, []).append(np.asarray(array))
            progress.advance(task, min(batch_size, total - start))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
