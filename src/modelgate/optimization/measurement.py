"""Candidates measured side by side through the server's own runtime.

Every file, the original included, is loaded by the loader the server would use for the
manifest's runtime (same threads, same tokenizer, same pooling) and run on the same reference
inputs. Accuracy is against the original's outputs: for a classifier the share of rows whose
integer outputs (the predicted label) agree and the largest absolute difference of its float
outputs (the probabilities); for an embedding model the cosine between candidate and original
embeddings per input. Latency is wall-clock time of one ``predict`` call, median of ``runs``
after one warm-up call, at batch 1 and batch 32.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelgate.core.serving.ports import Arrays, Predictor, VersionSource
from modelgate.optimization.candidates import METHODS, Material, NothingToDo
from modelgate.runtimes.catalog import loaders

__all__ = ["ORIGINAL", "Row", "measure_candidates"]

ORIGINAL = "original"
_CHUNK = 32  # rows per predict call when computing accuracy, the demo models' batch size


@dataclass
class Row:
    """One line of the report."""

    name: str
    status: str  # ok, skipped or failed
    note: str = ""
    size_bytes: int | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    batch1_ms: float | None = None
    batch32_ms: float | None = None
    folder: Path | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The row as JSON-ready numbers (for lineage and ``--json``)."""
        return {
            "candidate": self.name,
            "status": self.status,
            "note": self.note,
            "size_bytes": self.size_bytes,
            "agreement": self.agreement,
            "max_abs_diff": self.max_abs_diff,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "batch1_ms": self.batch1_ms,
            "batch32_ms": self.batch32_ms,
        }


def measure_candidates(
    source: VersionSource,
    methods: Sequence[str],
    inputs: Arrays,
    material: Material,
    workdir: Path,
    runs: int,
    step: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """The original and one row per method; candidate files are left under ``workdir``."""
    model_dir = workdir / source.manifest.name
    model_dir.mkdir(parents=True, exist_ok=True)
    # files the manifest may share across versions (a tokenizer) sit beside model.yaml
    for shared in Path(source.path).parent.iterdir():
        if shared.is_file() and shared.name != "model.yaml":
            shutil.copy2(shared, model_dir / shared.name)
    original_file = Path(source.path) / source.manifest.artifact
    step(ORIGINAL)
    baseline = _load(source)
    try:
        expected = _outputs(baseline, inputs)
        rows = [_row(ORIGINAL, source, baseline, inputs, expected, runs, "as registered")]
    finally:
        baseline.close()
    rows[0].folder = Path(source.path)
    for name in methods:
        step(name)
        folder = model_dir / name
        folder.mkdir()
        artifact = folder / source.manifest.artifact
        artifact.parent.mkdir(parents=True, exist_ok=True)
        try:
            note = METHODS[name].write(original_file, artifact, material)
        except NothingToDo as exc:
            rows.append(Row(name, "skipped", str(exc)))
            continue
        except Exception as exc:  # a quantizer's failure is this candidate's row, not the run's
            rows.append(Row(name, "failed", f"{type(exc).__name__}: {exc}"[:200]))
            continue
        candidate = VersionSource(source.version, str(folder), source.manifest)
        try:
            predictor = _load(candidate)
        except Exception as exc:  # so is a file the runtime refuses
            rows.append(Row(name, "failed", f"does not load: {exc}"[:200]))
            continue
        try:
            row = _row(name, candidate, predictor, inputs, expected, runs, note)
        finally:
            predictor.close()
        row.folder = folder
        rows.append(row)
    return rows


def _load(source: VersionSource) -> Predictor:
    return loaders()[source.manifest.runtime](source)


def _outputs(predictor: Predictor, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
    total = len(next(iter(inputs.values())))
    parts = [
        predictor.predict({k: v[start : start + _CHUNK] for k, v in inputs.items()})
        for start in range(0, total, _CHUNK)
    ]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _row(
    name: str,
    source: VersionSource,
    predictor: Predictor,
    inputs: Arrays,
    expected: dict[str, np.ndarray[Any, Any]],
    runs: int,
    note: str,
) -> Row:
    got = _outputs(predictor, inputs)
    row = Row(
        name, "ok", note, size_bytes=(Path(source.path) / source.manifest.artifact).stat().st_size
    )
    embedding = source.manifest.runtime == "text-embedding"
    for output, want in expected.items():
        have = got[output]
        if np.issubdtype(want.dtype, np.integer):
            if not embedding:
                agreement = float(np.mean(have == want))
                row.agreement = (
                    agreement if row.agreement is None else min(agreement, row.agreement)
                )
        elif embedding and want.ndim == 2:
            cosine = _cosine(have, want)
            row.cosine_mean, row.cosine_min = float(cosine.mean()), float(cosine.min())
        else:
            diff = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
            row.max_abs_diff = diff if row.max_abs_diff is None else max(diff, row.max_abs_diff)
    row.batch1_ms = _median_ms(predictor, {k: v[:1] for k, v in inputs.items()}, runs)
    row.batch32_ms = _median_ms(predictor, {k: v[:32] for k, v in inputs.items()}, runs)
    return row


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    dots = np.sum(a64 * b64, axis=1)
    # two zero vectors (an empty text may embed to zero) agree; one zero vector does not
    both_zero = norms == 0
    result: np.ndarray[Any, Any] = np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-300))
    return result


def _median_ms(predictor: Predictor, batch: Arrays, runs: int) -> float:
    predictor.predict(batch)  # warm-up: first-call allocations are not latency
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        predictor.predict(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
