"""Sentence embeddings: tokenizer + ONNX transformer + pooling, as sentence-transformers does.

Input ``text`` (BYTES, one string per row); outputs ``embedding`` (FP32 [rows, dimensions])
and ``token_count`` (INT64 [rows], the real number of tokens after truncation, for usage).
A batch is padded to its longest text only, so short texts stay cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import Tokenizer

from modelgate.core.serving.artifacts import artifact_path
from modelgate.core.serving.manifest import EmbeddingSpec, ModelManifest
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.runtimes.onnx import create_session

__all__ = ["TextEmbeddingPredictor", "load"]


class TextEmbeddingPredictor:
    def __init__(self, session: Any, tokenizer: Tokenizer, manifest: ModelManifest):
        if manifest.embedding is None:
            raise ModelgateError(
                ErrorKind.INVALID_ARGUMENT, f"model '{manifest.name}' needs an 'embedding' section"
            )
        self._session = session
        self._spec: EmbeddingSpec = manifest.embedding
        self._tokenizer = tokenizer
        # a counting copy, untruncated and unpadded: the request path counts with it
        # (core/serving/request_size.py) while batches run on the other, reconfigured one
        self._counter = Tokenizer.from_str(tokenizer.to_str())
        self._counter.no_truncation()
        self._counter.no_padding()
        #: tokens added to every text ([CLS] and [SEP])
        self.special_tokens = self._counter.num_special_tokens_to_add(False)
        #: token-id input must be below it (the vocabulary, added tokens included)
        self.vocab_size = self._counter.get_vocab_size(with_added_tokens=True)
        tokenizer.no_padding()
        # texts past the per-text limit were refused, unless the manifest truncates
        cut = manifest.limits.max_tokens_per_text or self._spec.max_tokens
        tokenizer.enable_truncation(max_length=min(cut, self._spec.max_tokens))
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in a batch
        self._feeds = {i.name for i in session.get_inputs()}
        self._text = manifest.inputs[0].name
        # outputs in manifest order: the embedding, then (optionally) the token count
        self._names = [s.name for s in manifest.outputs]

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        texts = [
            t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
            for t in inputs[self._text].reshape(-1)
        ]
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._feeds:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feed)[0]
        if self._spec.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if self._spec.normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        values = [pooled.astype(np.float32, copy=False), mask.sum(axis=1).astype(np.int64)]
        return dict(zip(self._names, values, strict=False))

    def count_tokens(self, texts: list[bytes]) -> list[int]:
        """Each text's tokens, special ones included, untruncated (the size check)."""
        decoded = [t.decode("utf-8", errors="replace") for t in texts]
        return [len(e.ids) for e in self._counter.encode_batch(decoded)]

    def decode_tokens(self, ids: list[list[int]]) -> list[str]:
        """Token ids back to text that tokenizes to the same ids (the WordPiece decoder
        joins ``##`` pieces; special tokens stay as their text, which maps back to them)."""
        return self._counter.decode_batch(ids, skip_special_tokens=False)

    def close(self) -> None:
        del self._session


def load(source: VersionSource) -> TextEmbeddingPredictor:
    manifest = source.manifest
    tokenizer_file = str(manifest.runtime_options.get("tokenizer", "tokenizer.json"))
    # The tokenizer may sit in the version folder or, shared by all versions, beside model.yaml.
    path = artifact_path(source, tokenizer_file, "tokenizer", shared=True)
    session = create_session(artifact_path(source, manifest.artifact), manifest)
    return TextEmbeddingPredictor(session, Tokenizer.from_file(path), manifest)
