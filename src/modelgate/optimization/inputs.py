"""The reference inputs a model's candidates are measured on.

A text-embedding model gets ordinary generated sentences and the demo's reference sentences
(awkward edge cases), the texts its reference profile was made from (demo/sentences.py). A
tabular FP32 model gets rows drawn from its version's ``reference.json``
(the profile drift and anomaly checks use): each feature independently, by inverse CDF over
the recorded quantiles. Correlations between features are not kept, so agreement is measured
on plausible rows, not on the training distribution itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import invalid

__all__ = ["REFERENCE_FILE", "calibration_feeds", "reference_inputs"]

REFERENCE_FILE = "reference.json"


def reference_inputs(source: VersionSource, rows: int, seed: int = 0) -> Arrays:
    """``rows`` reference inputs for ``source`` (fewer for texts when fewer exist)."""
    manifest = source.manifest
    if len(manifest.inputs) != 1:
        raise invalid(f"model '{manifest.name}': optimize measures models with one input")
    spec = manifest.inputs[0]
    if manifest.runtime == "text-embedding":
        from modelgate.demo.sentences import REFERENCE_SENTENCES, generated_sentences

        # ordinary sentences first, so batch latency is timed on typical traffic; the edge
        # cases (empty, emoji, past the token window) count towards accuracy
        edge = list(REFERENCE_SENTENCES[:rows])
        texts = [*generated_sentences(rows - len(edge), seed=seed), *edge]
        return {spec.name: np.array([t.encode() for t in texts], dtype=object)}
    if spec.datatype != "FP32":
        raise invalid(
            f"model '{manifest.name}': optimize draws FP32 rows or texts, not {spec.datatype}"
        )
    features = _features(source)
    rng = np.random.default_rng(seed)
    columns = [_draw(features, name, rows, rng) for name in spec.feature_names or ()]
    if not columns or len(columns) != (spec.shape[-1] if spec.shape else 0):
        raise invalid(
            f"model '{manifest.name}': input '{spec.name}' needs feature_names matching its "
            f"width and a {REFERENCE_FILE} with their quantiles"
        )
    return {spec.name: np.stack(columns, axis=1).astype(np.float32)}


def _features(source: VersionSource) -> dict[str, Any]:
    path = os.path.join(source.path, REFERENCE_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            features = json.load(file)["features"]
    except (OSError, ValueError, KeyError, TypeError):
        raise invalid(
            f"model '{source.manifest.name}' version {source.version} has no readable "
            f"{REFERENCE_FILE} with feature quantiles"
        ) from None
    if not isinstance(features, dict):
        raise invalid(f"{REFERENCE_FILE}: 'features' must be a mapping")
    return features


def _draw(features: dict[str, Any], name: str, rows: int, rng: np.random.Generator) -> Any:
    try:
        quantiles = features[name]["quantiles"]
        levels = np.asarray(quantiles["levels"], dtype=np.float64)
        values = np.asarray(quantiles["values"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise invalid(f"{REFERENCE_FILE}: no quantiles for feature '{name}'") from None
    return np.interp(rng.uniform(0.0, 1.0, rows), levels, values)


def calibration_feeds(source: VersionSource, inputs: Arrays, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` raw ONNX feeds, one input each, for static quantization's calibration:
    the reference rows as they are, or the reference texts tokenized as the server does."""
    manifest = source.manifest
    values = next(iter(inputs.values()))[:count]
    if manifest.runtime != "text-embedding":
        name = manifest.inputs[0].name
        return [{name: values[i : i + 1]} for i in range(len(values))]
    from tokenizers import Tokenizer

    from modelgate.core.serving.artifacts import artifact_path

    file = str(manifest.runtime_options.get("tokenizer", "tokenizer.json"))
    tokenizer = Tokenizer.from_file(artifact_path(source, file, "tokenizer", shared=True))
    tokenizer.no_padding()
    limit = manifest.embedding.max_tokens if manifest.embedding else 512
    tokenizer.enable_truncation(max_length=limit)
    feeds = []
    for text in values:
        encoding = tokenizer.encode(text.decode())
        feeds.append(
            {
                "input_ids": np.array([encoding.ids], dtype=np.int64),
                "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
            }
        )
    return feeds
