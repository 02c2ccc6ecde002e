"""The ``stage`` runtime: one stage of a sharded model (core/serving/stages.py).

The stage's ONNX sub-graph runs as the ``onnxruntime`` runtime runs a whole graph, fed the
inputs its session declares. A stage of a ``text-embedding`` model also does that runtime's
work at the ends of the pipeline: the first stage tokenizes the ``text`` input and answers
the ``attention_mask`` beside its graph's outputs (the last stage pools with it), and the
last stage pools and normalizes the hidden states into the model's ``embedding`` and
``token_count``, exactly as the whole model's runtime does
(:class:`~modelgate.runtimes.text_embedding.TextEmbeddingPredictor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from modelgate.core.serving.artifacts import artifact_path
from modelgate.core.serving.manifest import EmbeddingSpec, ModelManifest
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.runtimes.onnx import create_session

__all__ = ["ATTENTION_MASK", "StagePredictor", "load"]

#: the tensor a text-embedding model's first stage hands its last one for pooling
ATTENTION_MASK = "attention_mask"


class StagePredictor:
    def __init__(self, session: Any, manifest: ModelManifest, tokenizer: Tokenizer | None):
        options = manifest.runtime_options
        self._session = session
        self._feeds = [i.name for i in session.get_inputs()]
        self._graph_outputs = [o.name for o in session.get_outputs()]
        self._outputs = [s.name for s in manifest.outputs]
        self._tokenizer = tokenizer
        self._embedding: EmbeddingSpec | None = None
        number, count = int(options["stage"]), int(options["stages"])
        text = options.get("base_runtime") == "text-embedding"
        if text and number == count:
            self._embedding = EmbeddingSpec.model_validate(options["embedding"])
        self._text = manifest.inputs[0].name if text and number == 1 else None
        if self._text is not None and tokenizer is None:
            raise ModelgateError(
                ErrorKind.INVALID_ARGUMENT, f"'{manifest.name}' needs the model's tokenizer"
            )
        known = set(self._graph_outputs) | {ATTENTION_MASK, *self._pooled()}
        missing = [name for name in self._outputs if name not in known]
        if missing:
            raise ModelgateError(
                ErrorKind.INVALID_ARGUMENT,
                f"manifest of '{manifest.name}' names outputs its stage graph lacks: {missing}",
            )

    def _pooled(self) -> list[str]:
        return self._outputs if self._embedding is not None else []

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        feed = dict(inputs)
        if self._text is not None:
            assert self._tokenizer is not None
            texts = [
                t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
                for t in feed.pop(self._text).reshape(-1)
            ]
            encodings = self._tokenizer.encode_batch(texts)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            feed["input_ids"] = ids
            feed[ATTENTION_MASK] = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feed["token_type_ids"] = np.zeros_like(ids)
        results = self._session.run(self._graph_outputs, {name: feed[name] for name in self._feeds})
        answered = dict(zip(self._graph_outputs, results, strict=True))
        if self._embedding is not None:
            return self._pool(answered, feed[ATTENTION_MASK])
        if ATTENTION_MASK in self._outputs:
            answered[ATTENTION_MASK] = feed[ATTENTION_MASK]
        return {name: answered[name] for name in self._outputs}

    def _pool(
        self, answered: dict[str, np.ndarray[Any, Any]], mask: np.ndarray[Any, Any]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The text-embedding runtime's pooling of the last hidden state (its first output)."""
        spec = self._embedding
        assert spec is not None
        hidden = answered[self._graph_outputs[0]]
        if spec.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if spec.normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        values = [pooled.astype(np.float32, copy=False), mask.sum(axis=1).astype(np.int64)]
        return dict(zip(self._outputs, values, strict=False))

    def close(self) -> None:
        del self._session


def load(source: VersionSource) -> StagePredictor:
    manifest = source.manifest
    tokenizer = None
    options = manifest.runtime_options
    if options.get("base_runtime") == "text-embedding" and options.get("stage") == 1:
        name = str(options.get("tokenizer", "tokenizer.json"))
        # the stage's folder is inside the version folder: the tokenizer sits in the
        # version folder or beside model.yaml
        version = VersionSource(source.version, str(Path(source.path).parent), manifest)
        tokenizer = Tokenizer.from_file(artifact_path(version, name, "tokenizer", shared=True))
        spec = EmbeddingSpec.model_validate(options["embedding"])
        cut = int(options.get("max_tokens_per_text") or spec.max_tokens)
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=min(cut, spec.max_tokens))
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    path = artifact_path(source, Path(manifest.artifact).name)
    return StagePredictor(create_session(path, manifest), manifest, tokenizer)
