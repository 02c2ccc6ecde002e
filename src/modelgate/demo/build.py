"""Building the whole demo repository: each model staged, verified, then swapped in.

Order matters only for the stamp: it is removed before anything changes and written after the
last model is in place, so a stamp that matches the recipe always means a complete repository.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelgate.demo import credit_risk, minilm
from modelgate.demo.provenance import write_credit_risk_lineage, write_minilm_lineage
from modelgate.demo.recipe import STAMP_FILE, fingerprint, read_stamp, write_stamp
from modelgate.demo.staging import remove_leftovers, staged_model

Progress = Callable[[str], None]
MODEL_NAMES: tuple[str, ...] = (credit_risk.MODEL_NAME, minilm.MODEL_NAME)


@dataclass(frozen=True)
class BuildResult:
    """What a build did: whether it was skipped, and how long it took."""

    skipped: bool
    seconds: float


def is_up_to_date(repository: Path, recipe: str) -> bool:
    """True when the stamp matches `recipe` and every model folder has its manifest."""
    return read_stamp(repository) == recipe and all(
        (repository / name / "model.yaml").is_file() for name in MODEL_NAMES
    )


def build_repository(
    repository: Path, force: bool = False, progress: Progress = print
) -> BuildResult:
    """Build every demo model into `repository`, unless it is already built from this recipe."""
    started = time.perf_counter()
    recipe = fingerprint()
    if not force and is_up_to_date(repository, recipe):
        progress(f"{repository}: up to date (recipe {recipe[:12]}); use --force to rebuild")
        return BuildResult(skipped=True, seconds=time.perf_counter() - started)

    repository.mkdir(parents=True, exist_ok=True)
    remove_leftovers(repository)
    (repository / STAMP_FILE).unlink(missing_ok=True)

    progress(f"{credit_risk.MODEL_NAME}: generating data, training 2 versions, exporting to ONNX")
    with staged_model(repository, credit_risk.MODEL_NAME) as folder:
        versions = credit_risk.build(folder)
        write_credit_risk_lineage(folder, versions, recipe)
    for trained in versions:
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in trained.metrics.items())
        progress(f"{credit_risk.MODEL_NAME} v{trained.version} ({trained.algorithm}): {metrics}")

    progress(f"{minilm.MODEL_NAME}: exporting FP32, quantising INT8, checking against reference")
    with staged_model(repository, minilm.MODEL_NAME) as folder:
        checks = minilm.build(folder)
        write_minilm_lineage(folder, checks, recipe, minilm.WEIGHTS_PACKAGE)
    for check in checks:
        progress(
            f"{minilm.MODEL_NAME} v{check.version}: min cosine {check.min_cosine:.6f} "
            f"(mean {check.mean_cosine:.6f}, required {minilm.MIN_COSINE[check.version]})"
        )

    write_stamp(repository, recipe)
    seconds = time.perf_counter() - started
    progress(f"{repository}: built in {seconds:.1f} s (recipe {recipe[:12]})")
    return BuildResult(skipped=False, seconds=seconds)
