"""Text drift: cosines to the reference centroid, length and embedding drift against a
synthetic text profile, and the monitor's bounded embedding window."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from modelgate.core.monitoring.drift import ReferenceProfile
from modelgate.core.monitoring.monitor import MAX_EMBEDDING_VALUES, Monitor
from modelgate.core.monitoring.text_drift import cosine_to, text_drift
from modelgate.core.serving import profiles as reference
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor

DIMENSIONS = 16
RNG = np.random.default_rng(3)
TOPIC = RNG.normal(size=DIMENSIONS)


def embeddings(rows: int, topic: Any, spread: float = 1.0) -> np.ndarray[Any, Any]:
    """Unit vectors scattered around ``topic``."""
    raw = topic + spread * RNG.normal(size=(rows, DIMENSIONS))
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)  # type: ignore[no-any-return]


def profile_document(lengths: Any, vectors: Any) -> dict[str, Any]:
    centroid = vectors.mean(axis=0)
    return {
        "text": {
            "input": "text",
            "length": {
                "unit": "tokens",
                "output": "token_count",
                **reference.column_statistics(lengths),
            },
            "embedding": {
                "output": "embedding",
                "centroid": centroid.tolist(),
                "cosine_to_centroid": reference.column_statistics(cosine_to(vectors, centroid)),
            },
        }
    }


REFERENCE_LENGTHS = RNG.poisson(14, 2000).astype(np.float64)
REFERENCE_VECTORS = embeddings(2000, TOPIC)
PROFILE = ReferenceProfile.parse(profile_document(REFERENCE_LENGTHS, REFERENCE_VECTORS))


@given(arrays(np.float64, (5, 4), elements=st.floats(-1e6, 1e6)))
def test_a_cosine_is_between_minus_1_and_1(rows: np.ndarray[Any, Any]) -> None:
    cosines = cosine_to(rows, np.array([1.0, -2.0, 0.5, 3.0]))
    assert np.all(np.abs(cosines) <= 1.0 + 1e-9)
    assert np.all(cosines[(rows == 0).all(axis=1)] == 0.0)


def test_the_profile_has_a_text_section_and_is_not_empty() -> None:
    text = PROFILE.text
    assert text is not None and not PROFILE.empty
    assert (text.input, text.length_output, text.embedding_output) == (
        "text",
        "token_count",
        "embedding",
    )
    assert text.centroid is not None and text.centroid.shape == (DIMENSIONS,)


def test_a_length_unit_other_than_tokens_is_refused() -> None:
    document = profile_document(REFERENCE_LENGTHS, REFERENCE_VECTORS)
    document["text"]["length"]["unit"] = "characters"
    with pytest.raises(ValueError, match="characters"):
        ReferenceProfile.parse(document)


def test_traffic_like_the_reference_does_not_drift() -> None:
    assert PROFILE.text is not None
    drift = text_drift(PROFILE.text, RNG.poisson(14, 500), embeddings(500, TOPIC), min_rows=100)
    assert drift.status == "ok"
    assert drift.length is not None and drift.length.psi < 0.1
    assert drift.embedding is not None and drift.embedding.psi < 0.1
    assert drift.embedding.centroid_distance < 0.01


def test_longer_texts_on_another_topic_drift() -> None:
    assert PROFILE.text is not None
    other = RNG.normal(size=DIMENSIONS)
    drift = text_drift(PROFILE.text, RNG.poisson(60, 500), embeddings(500, other), min_rows=100)
    assert drift.status == "drift"
    assert drift.length is not None and drift.length.status == "drift"
    assert drift.embedding is not None and drift.embedding.status == "drift"
    assert drift.embedding.live_mean_cosine < drift.embedding.reference_mean_cosine
    assert drift.embedding.centroid_distance > 0.3


def test_too_few_rows_are_insufficient_data() -> None:
    assert PROFILE.text is not None
    drift = text_drift(PROFILE.text, RNG.poisson(14, 50), embeddings(50, TOPIC), min_rows=100)
    assert (drift.status, drift.length, drift.embedding) == ("insufficient data", None, None)


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


def text_manifest(dimensions: int) -> ModelManifest:
    return parse_manifest(
        "embedder",
        {
            "runtime": "text-embedding",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "embedding", "datatype": "FP32", "shape": [-1, dimensions]},
                {"name": "token_count", "datatype": "INT64", "shape": [-1]},
            ],
            "embedding": {"dimensions": dimensions},
        },
    )


def completed(manifest: ModelManifest, vectors: Any, lengths: Any) -> CompletedInference:
    texts = np.array([b"x"] * len(vectors), dtype=object)
    response = InferenceResponse(
        manifest.name,
        "1",
        [
            Tensor("embedding", "FP32", vectors.astype(np.float32)),
            Tensor("token_count", "INT64", lengths.astype(np.int64)),
        ],
    )
    request = InferenceRequest(manifest.name, "1", [Tensor("text", "BYTES", texts)])
    return CompletedInference(None, request, response, manifest, {"text": texts})


async def test_the_monitor_reports_text_drift(tmp_path: Path) -> None:
    (tmp_path / "reference.json").write_text(
        json.dumps(profile_document(REFERENCE_LENGTHS, REFERENCE_VECTORS))
    )
    manifest = text_manifest(DIMENSIONS)
    monitor = Monitor(Registry([Version("embedder", 1, manifest, str(tmp_path))]), min_rows=50)  # type: ignore[arg-type]
    for _ in range(20):
        monitor.completed(completed(manifest, embeddings(10, TOPIC), RNG.poisson(14, 10)))
    (report,) = await monitor.report("embedder")
    assert report.rows == 200 and report.features == []
    assert report.text is not None and report.text.status != "drift" and not report.drift
    assert report.text.embedding is not None and report.text.embedding.rows == 200
    other = RNG.normal(size=DIMENSIONS)
    for _ in range(30):
        monitor.completed(completed(manifest, embeddings(10, other), RNG.poisson(14, 10)))
    (report,) = await monitor.report("embedder")
    assert report.text is not None and report.text.embedding is not None
    assert report.text.embedding.status == "drift" and report.drift is True
    assert report.text.length is not None and report.text.length.status == "ok"


async def test_wide_embeddings_keep_fewer_rows(tmp_path: Path) -> None:
    dimensions = 4096
    manifest = text_manifest(dimensions)
    monitor = Monitor(Registry([Version("embedder", 1, manifest, str(tmp_path))]))  # type: ignore[arg-type]
    for _ in range(40):
        vectors = RNG.normal(size=(32, dimensions))
        monitor.completed(completed(manifest, vectors, np.full(32, 5)))
    await monitor.report("embedder")
    (ring,) = monitor._embeddings.values()
    assert ring.capacity == MAX_EMBEDDING_VALUES // dimensions == 256
    assert ring.rings["embedding"].nbytes <= MAX_EMBEDDING_VALUES * 8
