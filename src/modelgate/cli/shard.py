"""``modelgate shard``: split one ONNX model version into consecutive stage graphs at named
tensors, checked against the whole model on its reference inputs and installed as the next
version (``stages`` in its manifest, with its lineage), for nodes too small to hold the
whole model (docs/scale-out.md, "Models larger than one node: sharding"). Runs on the
model repository's files: no server. onnx loads here, when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from modelgate.errors import ModelgateError

__all__ = ["shard"]

console = Console()


def shard(
    model: Annotated[str, typer.Argument(help="The model's name in the repository.")],
    at: Annotated[
        str,
        typer.Option(
            help="Tensors to cut at, in graph order, comma-separated (N cuts: N+1 stages)."
        ),
    ],
    version: Annotated[
        int | None,
        typer.Option(min=1, help="The version to split (default: the default one)."),
    ] = None,
    model_repository: Annotated[
        Path,
        typer.Option(envvar="MODELGATE_MODEL_REPOSITORY", help="Folder of models."),
    ] = Path("models"),
    rows: Annotated[
        int, typer.Option(min=1, max=4096, help="Reference inputs the stages are checked on.")
    ] = 32,
    min_cosine: Annotated[
        float,
        typer.Option(min=-1.0, max=1.0, help="Refuse stages whose outputs' worst cosine is lower."),
    ] = 0.9999,
) -> None:
    """Split MODEL into stages at the tensors named by --at; install them as a new version."""
    from modelgate.optimization.inputs import reference_inputs
    from modelgate.optimization.sharding import shard_version
    from modelgate.repository.filesystem import FileModelRepository

    cuts = [name.strip() for name in at.split(",") if name.strip()]
    try:
        sources = FileModelRepository(str(model_repository)).versions(model)
        if not sources:
            _fail("the model has no versions")
        wanted = version or sources[0].manifest.default_version or sources[-1].version
        source = next((s for s in sources if s.version == wanted), None)
        if source is None:
            _fail(f"no version {wanted}; versions: {', '.join(str(s.version) for s in sources)}")
        number, stages = shard_version(
            model_repository,
            source,
            cuts,
            reference_inputs(source, rows),
            min_cosine=min_cosine,
        )
    except ModelgateError as exc:
        _fail(f"not sharded: {exc.message}; the repository is unchanged")
    except (ValueError, OSError, RuntimeError) as exc:
        _fail(f"not sharded: {exc}; the repository is unchanged")
    console.print(
        f"[green]sharded[/] {model} version {source.version} into version {number}: "
        f"{len(stages)} stages"
    )
    for index, stage in enumerate(stages, 1):
        names = ", ".join(t["name"] for t in stage["inputs"])
        console.print(
            f"  stage {index}: {stage['artifact']} ({stage['size_bytes'] / 1e6:.1f} MB), "
            f"reads {names}",
            highlight=False,
        )


def _fail(message: str) -> NoReturn:
    console.print(f"[red]{message}[/]")
    raise typer.Exit(1)
