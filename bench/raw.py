"""In-process ONNX Runtime: the ceiling no server can beat.

credit-risk runs through modelgate's own ``create_session`` (the manifest's threads: intra 1,
inter 1); MiniLM through modelgate's ``TextEmbeddingPredictor`` (tokenization, the ONNX
transformer with intra_op_threads 2, mean pooling and normalisation, as the server runs it).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.workloads import CREDIT_ROW, SENTENCE_TOKENS, SENTENCES, ModelFiles

__all__ = ["Rate", "credit_call", "minilm_call", "rate"]


@dataclass
class Rate:
    rows_per_s: float
    calls: int
    median_call_ms: float
    p99_call_ms: float
    background: float = 0.0  # cores other processes used meanwhile (set by bench.suites)


def rate(call: Callable[[], Any], rows: int, seconds: float, max_calls: int = 5_000_000) -> Rate:
    """Call ``call`` for ``seconds`` (and at most ``max_calls`` times) after a short warm-up."""
    warm_until = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm_until:
        call()
    latencies: list[float] = []
    start = now = time.perf_counter()
    end = start + seconds
    while len(latencies) < max_calls and now < end:
        call()
        after = time.perf_counter()
        latencies.append(after - now)
        now = after
    elapsed = now - start
    latencies.sort()
    return Rate(
        rows_per_s=rows * len(latencies) / elapsed,
        calls=len(latencies),
        median_call_ms=statistics.median(latencies) * 1e3,
        p99_call_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
    )


def credit_call(files: ModelFiles, rows: int) -> Callable[[], Any]:
    from modelgate.runtimes.onnx import create_session

    session = create_session(str(files.onnx), files.manifest)
    feed = {"features": np.asarray([CREDIT_ROW] * rows, dtype=np.float32)}
    outputs = ["label", "probabilities"]
    return lambda: session.run(outputs, feed)


def minilm_predictor(files: ModelFiles) -> Any:
    from modelgate.runtimes.text_embedding import load

    predictor = load(files.source)
    tokenizer = predictor._tokenizer
    for sentence in SENTENCES:
        count = len(tokenizer.encode(sentence).ids)
        if count != SENTENCE_TOKENS:
            raise RuntimeError(f"{sentence!r} is {count} tokens, not {SENTENCE_TOKENS}")
    return predictor


def minilm_call(predictor: Any, rows: int) -> Callable[[], Any]:
    texts = np.empty(rows, dtype=object)
    texts[:] = [SENTENCES[i % len(SENTENCES)].encode() for i in range(rows)]
    feed = {"text": texts}
    return lambda: predictor.predict(feed)
