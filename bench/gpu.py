"""``python -m bench.gpu``: credit-risk (batch 1 and 64) and MiniLM (batch 1 and 32) on ONNX
Runtime's CUDA execution provider against the CPU, in this process, printed as a table.

It needs an NVIDIA GPU and the GPU build of ONNX Runtime (``pip install 'modelgate[gpu]'``,
docs/model-repository.md, "Running on a GPU"). Without them it stops before measuring
anything, exit status 2, with "CUDA execution provider not available" and what ONNX Runtime
offers instead. Sessions are built by modelgate's own adapter
(``modelgate.runtimes.onnx.create_session``) from each model's manifest with ``hardware:
{prefer: gpu}``, as a server would build them, and each GPU session must report
``CUDAExecutionProvider`` first in ``session.get_providers()``: ONNX Runtime falls back to the
CPU on its own when CUDA or cuDNN fail to load, and a silent fallback must not be measured as
the GPU. Times include the host-device copies a served request pays.

    .venv/bin/python -m bench.gpu --models build/models [--seconds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import raw, workloads
from bench.procs import ROOT

__all__ = ["CUDA", "CudaUnavailableError", "cuda_missing", "main", "require_cuda_first"]

CUDA = "CUDAExecutionProvider"
#: (model, batch sizes) as issue 11 asks for them
CASES = ((workloads.CREDIT, (1, 64)), (workloads.MINILM, (1, 32)))


class CudaUnavailableError(RuntimeError):
    """The CUDA execution provider is missing, or a session fell back to the CPU."""


def cuda_missing(available: Sequence[str], version: str) -> str | None:
    """Why the CUDA execution provider cannot be used (None: it can), from ONNX Runtime's
    ``get_available_providers()``."""
    if CUDA in available:
        return None
    return (
        f"CUDA execution provider not available: onnxruntime {version} offers "
        f"{', '.join(available) or 'nothing'}. On a machine with an NVIDIA GPU: pip install "
        "'modelgate[gpu]', then pip uninstall -y onnxruntime onnxruntime-gpu and pip install "
        "onnxruntime-gpu (both builds install one `onnxruntime` package and the CPU build "
        'hides CUDA; docs/model-repository.md, "Running on a GPU").'
    )


def require_cuda_first(providers: Sequence[str], what: str) -> None:
    """Raise unless ``providers`` (a session's ``get_providers()``) puts CUDA first."""
    if not providers or providers[0] != CUDA:
        raise CudaUnavailableError(
            f"CUDA execution provider not active for {what}: the session runs on "
            f"{', '.join(providers) or 'nothing'} (ONNX Runtime fell back; see its log above)"
        )


def on_gpu(files: workloads.ModelFiles) -> workloads.ModelFiles:
    """The same model files with a manifest that prefers a GPU."""
    manifest = files.manifest.model_copy(
        update={"hardware": files.manifest.hardware.model_copy(update={"prefer": "gpu"})}
    )
    source = dataclasses.replace(files.source, manifest=manifest)
    return dataclasses.replace(files, manifest=manifest, source=source)


def credit_calls(files: workloads.ModelFiles, batch: int) -> dict[str, Callable[[], Any]]:
    """A CPU and a CUDA call of credit-risk on ``batch`` rows."""
    from modelgate.runtimes.onnx import create_session

    calls: dict[str, Callable[[], Any]] = {}
    feed = {"features": np.asarray([workloads.CREDIT_ROW] * batch, dtype=np.float32)}
    outputs = ["label", "probabilities"]
    for device, model in (("CPU", files), ("CUDA", on_gpu(files))):
        session = create_session(str(model.onnx), model.manifest)
        if device == "CUDA":
            require_cuda_first(session.get_providers(), f"{files.name} v{files.version}")
        calls[device] = functools.partial(session.run, outputs, feed)
    return calls


def minilm_calls(files: workloads.ModelFiles, batch: int) -> dict[str, Callable[[], Any]]:
    """A CPU and a CUDA call of MiniLM (tokenization, the transformer, pooling) on ``batch``
    16-token sentences."""
    from modelgate.runtimes.text_embedding import load

    cpu = raw.minilm_predictor(files)
    gpu = load(on_gpu(files).source)
    require_cuda_first(gpu.providers, f"{files.name} v{files.version}")
    return {"CPU": raw.minilm_call(cpu, batch), "CUDA": raw.minilm_call(gpu, batch)}


def measure(models: Path, seconds: float) -> list[list[str]]:
    """One table row per model and batch: rows/s and median call on CPU and CUDA, each pair
    measured one after the other, the order reversed every other case."""
    table: list[list[str]] = []
    flip = False
    for name, batches in CASES:
        files = workloads.model_files(models, name)
        for batch in batches:
            calls = (credit_calls if name == workloads.CREDIT else minilm_calls)(files, batch)
            order = ["CUDA", "CPU"] if flip else ["CPU", "CUDA"]
            flip = not flip
            rates = {device: raw.rate(calls[device], batch, seconds) for device in order}
            cpu, gpu = rates["CPU"], rates["CUDA"]
            table.append(
                [
                    f"{name} v{files.version}",
                    str(batch),
                    f"{cpu.rows_per_s:,.0f}",
                    f"{gpu.rows_per_s:,.0f}",
                    f"{gpu.rows_per_s / cpu.rows_per_s:.2f}x",
                    f"{cpu.median_call_ms * 1e3:,.0f} µs",
                    f"{gpu.median_call_ms * 1e3:,.0f} µs",
                ]
            )
    return table


COLUMNS = ["model", "batch", "CPU rows/s", "CUDA rows/s", "CUDA / CPU", "CPU call", "CUDA call"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "build/models")
    parser.add_argument("--seconds", type=float, default=3.0, help="per case and device")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    import onnxruntime as ort

    reason = cuda_missing(ort.get_available_providers(), ort.__version__)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    try:
        table = measure(args.models, args.seconds)
    except CudaUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"ONNX Runtime {ort.__version__}: CUDA vs CPU, in-process")
    for index, column in enumerate(COLUMNS):
        out.add_column(column, justify="left" if index == 0 else "right")
    for row in table:
        out.add_row(*row)
    Console().print(out)
    print(f"device: {ort.get_device()}; {args.seconds:g} s per case and device after a warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
