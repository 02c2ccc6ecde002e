"""The payload logger and the feedback recorder are bounded in rows and bytes, not requests:
a huge request is not held in memory until the flush only to be skipped there, the bytes
waiting are capped, and every row not kept is counted by reason on /metrics."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.governance.payload_logger import PayloadLogger
from modelgate.core.governance.ports import PayloadConsent
from modelgate.core.governance.redaction import pseudonym
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.storage.crypto import AesGcmCipher
from modelgate.storage.memory.feedback import MemoryFeedbackStore
from modelgate.storage.memory.payloads import MemoryPayloadStore

MANIFEST = parse_manifest(
    "scorer",
    {
        "runtime": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 2]}],
        "feedback": {"enabled": True},
        "payload_logging": {"enabled": True, "purpose": "review", "retention_days": 7},
    },
)
WHO = Principal("ten_a", "key_1", frozenset({"infer"}), Plan("p"), "key")


def completed(rows: int, parameters: dict[str, Any] | None = None) -> CompletedInference:
    x = np.zeros((rows, 8), np.float32)  # 32 bytes a row
    request = InferenceRequest(
        "scorer", None, [Tensor("x", "FP32", x)], id=f"r{rows}", parameters=parameters or {}
    )
    p = np.tile(np.array([[0.5, 0.5]], np.float32), (rows, 1))  # 8 bytes a row
    response = InferenceResponse("scorer", "1", [Tensor("p", "FP32", p)])
    return CompletedInference(WHO, request, response, MANIFEST, {"x": x})


def logger(**limits: int) -> tuple[PayloadLogger, MemoryPayloadStore]:
    store = MemoryPayloadStore()
    cipher = AesGcmCipher({"k1": os.urandom(32)}, "k1")
    logging = PayloadLogger(store, cipher, lambda s: pseudonym(b"k" * 32, s), **limits)
    logging.apply(PayloadConsent("ten_a", True))
    return logging, store


@pytest.mark.asyncio
async def test_a_payload_over_max_bytes_is_not_even_held_until_the_flush() -> None:
    logging, _ = logger(max_bytes=1024 * 1024)
    logging.completed(completed(1_048_576))  # 40 MiB of tensors
    assert logging.pending == 0  # refused on the request path: nothing held
    assert logging.not_kept()["too_large"] == 1
    assert logging.skipped == 1
    logging.completed(completed(10))
    assert logging.pending == 1
    assert await logging.flush() == 1


@pytest.mark.asyncio
async def test_the_bytes_waiting_are_capped_and_counted() -> None:
    logging, _ = logger(max_bytes=1024 * 1024, max_pending_bytes=1024 * 1024)
    for _ in range(10):  # 400 KB each: two fit in 1 MiB
        logging.completed(completed(10_000))
    assert logging.pending == 2
    assert logging.not_kept()["backlog_full"] == 8
    assert await logging.flush() == 2
    logging.completed(completed(10_000))  # room again once written
    assert logging.pending == 1


def test_metrics_show_rows_held_and_not_kept_by_reason() -> None:
    recorder = FeedbackRecorder(MemoryFeedbackStore(), max_request_rows=100, max_pending=1000)
    recorder.completed(completed(5000))
    recorder.completed(completed(3, {"consent": False}))
    logging, _ = logger(max_bytes=1024 * 1024)
    logging.completed(completed(1_048_576))
    metrics = PrometheusMetrics()
    metrics.track(records=[("feedback", recorder), ("payloads", logging)])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert samples[("modelgate_records_pending_rows", (("recorder", "feedback"),))] == 100
    key = "modelgate_records_not_kept_rows_total"
    assert samples[(key, (("reason", "request_rows_cap"), ("recorder", "feedback")))] == 4900
    assert samples[(key, (("reason", "withheld_consent"), ("recorder", "feedback")))] == 3
    assert samples[(key, (("reason", "too_large"), ("recorder", "payloads")))] == 1
