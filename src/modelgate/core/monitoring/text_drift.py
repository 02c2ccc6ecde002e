"""Drift of a text model: its input lengths and its embeddings against the reference.

The profile (:class:`~modelgate.core.monitoring.drift.TextReference`) holds the reference texts'
lengths in tokens, the centroid of their unit-length embeddings and the histogram of each
embedding's cosine similarity to that centroid. A window of live traffic is compared with:

- **length drift**: PSI and KS of the live token counts on the reference histogram's edges,
  as for a numeric feature;
- **embedding drift**: PSI and KS of the live embeddings' cosines to the reference centroid
  on the reference's edges (texts unlike the reference sit farther from its centroid), and
  the cosine distance between the live mean embedding and the centroid (reported; its
  status follows PSI and KS).

Pure numpy; the monitor hands in the window's arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelgate.core.monitoring.drift import Level, TextReference, compare

__all__ = [
    "EmbeddingDrift",
    "LengthDrift",
    "TextDrift",
    "cosine_to",
    "text_drift",
]


@dataclass(frozen=True, slots=True)
class LengthDrift:
    #: what a length counts ("tokens": the model's own token counts)
    unit: str
    status: Level
    rows: int
    psi: float
    ks: float
    ks_threshold: float
    live_mean: float
    reference_mean: float


@dataclass(frozen=True, slots=True)
class EmbeddingDrift:
    output: str
    status: Level
    rows: int
    psi: float
    ks: float
    ks_threshold: float
    #: the mean cosine of the live (reference) embeddings to the reference centroid
    live_mean_cosine: float
    reference_mean_cosine: float
    #: 1 - cosine between the live mean embedding and the reference centroid
    centroid_distance: float


@dataclass(frozen=True, slots=True)
class TextDrift:
    input: str
    #: the worst of the two parts' statuses; "insufficient data" when neither has rows
    status: str
    length: LengthDrift | None = None
    embedding: EmbeddingDrift | None = None


def cosine_to(embeddings: NDArray[Any], centroid: NDArray[Any]) -> NDArray[np.float64]:
    """Each row's cosine similarity to ``centroid`` (a zero row has cosine 0)."""
    rows = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    unit = np.asarray(centroid, dtype=np.float64) / np.linalg.norm(centroid)
    norms = np.linalg.norm(rows, axis=1)
    cosines: NDArray[np.float64] = (rows @ unit) / np.maximum(norms, 1e-12)
    return cosines


def text_drift(
    reference: TextReference,
    lengths: NDArray[Any] | None,
    embeddings: NDArray[Any] | None,
    min_rows: int,
) -> TextDrift:
    """Compare a window's token counts ([N]) and embeddings ([M, D]) with the reference;
    a part with fewer than ``min_rows`` rows (or none) is left out."""
    length = None
    if reference.length is not None and lengths is not None and lengths.size >= min_rows:
        values = np.asarray(lengths, dtype=np.float64).ravel()
        psi, ks, threshold, level = compare(reference.length, values, reference.length_count)
        length = LengthDrift(
            "tokens",
            level,
            int(values.size),
            psi,
            ks,
            threshold,
            float(values.mean()),
            reference.length_mean,
        )
    embedding = None
    if (
        reference.cosine is not None
        and reference.centroid is not None
        and reference.embedding_output is not None
        and embeddings is not None
        and len(embeddings) >= min_rows
        and embeddings.reshape(len(embeddings), -1).shape[1] == reference.centroid.size
    ):
        cosines = cosine_to(embeddings, reference.centroid)
        psi, ks, threshold, level = compare(reference.cosine, cosines, reference.cosine_count)
        mean = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1).mean(axis=0)
        norm = float(np.linalg.norm(mean))
        distance = 1.0 - float(cosine_to(mean[None, :], reference.centroid)[0]) if norm else 1.0
        embedding = EmbeddingDrift(
            reference.embedding_output,
            level,
            len(embeddings),
            psi,
            ks,
            threshold,
            float(cosines.mean()),
            reference.cosine_mean,
            distance,
        )
    levels = [part.status for part in (length, embedding) if part is not None]
    status = (
        "insufficient data"
        if not levels
        else "drift"
        if "drift" in levels
        else "watch"
        if "watch" in levels
        else "ok"
    )
    return TextDrift(reference.input, status, length, embedding)
