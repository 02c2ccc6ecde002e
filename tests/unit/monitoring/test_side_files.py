"""A version's side files (its ``reference.json``) are found the way its artifact is: a
profile that resolves outside the model's folder is not read by the monitor, the anomaly
detector or the concept monitor, and no warning on these paths names a host path."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.monitor import Monitor
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.demo import credit_risk
from modelgate.repository.filesystem import FileModelRepository

MODEL = "credit-risk"
SECRET = "s3cr3t-host-content"


@dataclass(eq=False)  # hashed by identity, like LoadedVersion
class Version:
    name: str
    version: int
    manifest: ModelManifest
    path: str


class Registry:
    def __init__(self, versions: list[Version]):
        self._versions = versions

    def versions(self, name: str) -> list[Version]:
        return [v for v in self._versions if v.name == name]


def repository(demo: Path, root: Path, versions: tuple[str, ...] = ("1", "2")) -> Path:
    """A copy of the demo credit-risk model's manifest (without its card, so the concept
    monitor reads validation figures from reference.json) with empty version folders."""
    manifest = yaml.safe_load((demo / MODEL / "model.yaml").read_text())
    manifest.pop("card", None)
    folder = root / MODEL
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest))
    for number in versions:
        (folder / number).mkdir()
    return folder


def outside_profile(demo: Path, where: Path) -> Path:
    """A valid profile (with validation figures) outside the model's folder, marked."""
    document = json.loads((demo / MODEL / "2" / "reference.json").read_text())
    document["source"] = SECRET
    document["validation_metrics"]["accuracy"] = 0.123456
    where.mkdir(parents=True, exist_ok=True)
    path = where / "reference.json"
    path.write_text(json.dumps(document))
    return path


def versions_of(root: Path) -> list[Version]:
    sources = FileModelRepository(str(root)).versions(MODEL)
    return [Version(MODEL, s.version, s.manifest, s.path) for s in sources]


def completed(manifest: ModelManifest, version: str, rows: int = 50) -> CompletedInference:
    features = credit_risk.generate(rows, seed=1).features
    probabilities = np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (rows, 1))
    response = InferenceResponse(
        manifest.name,
        version,
        [
            Tensor("label", "INT64", np.zeros(rows, dtype=np.int64)),
            Tensor("probabilities", "FP32", probabilities),
        ],
    )
    request = InferenceRequest(manifest.name, version, [Tensor("features", "FP32", features)])
    return CompletedInference(None, request, response, manifest, {"features": features})


async def readers(versions: list[Version]) -> dict[str, Any]:
    """What each reader made of each version's profile."""
    registry = Registry(versions)
    detector = AnomalyDetector()
    monitor = Monitor(registry, min_rows=1)  # type: ignore[arg-type]
    concept = ConceptMonitor(None, registry)  # type: ignore[arg-type]
    for v in versions:
        detector.prepare(v)  # type: ignore[arg-type]
        monitor.completed(completed(v.manifest, str(v.version)))
    reports = {r.version: r for r in await monitor.report(MODEL)}
    return {
        str(v.version): (
            detector.checks(v),  # type: ignore[arg-type]
            reports[str(v.version)].status,
            await concept.validation(MODEL, str(v.version)),
        )
        for v in versions
    }


def assert_no_host_path(caplog: pytest.LogCaptureFixture, *roots: Path) -> None:
    text = caplog.text
    for root in roots:
        assert str(root) not in text
        assert str(root.resolve()) not in text
    assert SECRET not in text


async def test_a_profile_linked_out_of_the_model_folder_is_not_read(
    demo_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "repo"
    folder = repository(demo_models, root)
    outside = outside_profile(demo_models, tmp_path / "elsewhere")
    os.symlink(outside, folder / "1" / "reference.json")
    own = (demo_models / MODEL / "2" / "reference.json").read_text()
    (folder / "2" / "reference.json").write_text(own)
    caplog.set_level(logging.INFO)

    seen = await readers(versions_of(root))

    checked, status, validation = seen["1"]
    assert (checked, status, validation) == (False, "no reference", None)
    checked, status, validation = seen["2"]  # the sibling with its own profile is read
    assert checked and status != "no reference"
    assert validation is not None and validation["accuracy"] == pytest.approx(0.87025)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3  # the detector, the monitor and the concept monitor
    for message in warnings:
        assert "'reference.json'" in message
        assert f"model '{MODEL}' version 1" in message
        assert "outside the model's folder" in message
    assert_no_host_path(caplog, tmp_path)


async def test_a_dangling_link_out_and_a_link_loop_are_refused_without_host_paths(
    demo_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "repo"
    folder = repository(demo_models, root)
    os.symlink(tmp_path / "gone" / "reference.json", folder / "1" / "reference.json")
    os.symlink(folder / "2" / "reference.json", folder / "2" / "reference.json")  # a loop
    caplog.set_level(logging.INFO)

    seen = await readers(versions_of(root))

    assert seen == {"1": (False, "no reference", None), "2": (False, "no reference", None)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings and all("'reference.json'" in m for m in warnings)
    assert_no_host_path(caplog, tmp_path)


async def test_links_inside_the_model_folder_are_read(
    demo_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A version folder that is a link placed elsewhere (as tests/api/test_anomaly.py lays
    out its repository) and a profile shared with a sibling through a link are read."""
    root = tmp_path / "repo"
    folder = repository(demo_models, root, versions=("2",))
    os.symlink(demo_models / MODEL / "1", folder / "1")  # the version folder is a link
    os.symlink(Path("..") / "shared.json", folder / "2" / "reference.json")
    (folder / "shared.json").write_text((demo_models / MODEL / "2" / "reference.json").read_text())
    caplog.set_level(logging.WARNING)

    seen = await readers(versions_of(root))

    for number in ("1", "2"):
        checked, status, validation = seen[number]
        assert checked and status != "no reference" and validation is not None
    assert not caplog.records


async def test_a_malformed_profile_is_ignored_and_its_warning_names_no_host_path(
    demo_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "repo"
    folder = repository(demo_models, root)
    (folder / "1" / "reference.json").write_text("{not json")
    (folder / "2" / "reference.json").mkdir()  # not a file
    caplog.set_level(logging.INFO)

    seen = await readers(versions_of(root))

    assert seen == {"1": (False, "no reference", None), "2": (False, "no reference", None)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 6
    for message in warnings:
        assert "'reference.json'" in message and f"model '{MODEL}' version" in message
    assert_no_host_path(caplog, tmp_path)


@example(content=b"null")  # a monitor report used to raise AttributeError
@example(content=b"[1]")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.binary(max_size=200)
    | st.builds(
        json.dumps,
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=5),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "features",
                            "outputs",
                            "text",
                            "validation_metrics",
                            "annual_income",
                            "histogram",
                            "min",
                        ]
                    ),
                    children,
                    max_size=3,
                )
            ),
            max_leaves=10,
        ),
    ).map(str.encode)
)
async def test_any_profile_content_is_read_or_ignored_never_raised_nor_logged_with_a_path(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    root = tmp_path_factory.mktemp("repo")
    folder = repository(demo_models, root, versions=("1",))
    (folder / "1" / "reference.json").write_bytes(content)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        await readers(versions_of(root))
    finally:
        logging.getLogger().removeHandler(handler)
    for record in records:
        assert str(root) not in record.getMessage()
