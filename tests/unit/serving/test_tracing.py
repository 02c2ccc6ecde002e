"""The core's spans through its tracing port, W3C trace ids, and tracing off at no cost."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelgate.core.admission.admission import Admission
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.observability.tracing import trace_id_of
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.testing import MemoryRepository, RecordingPredictor
from tests.conftest import FIXTURE_MODELS


class FakeSpan:
    def __init__(self, name: str, start_ns: int):
        self.name = name
        self.start_ns = start_ns
        self.end_ns: int | None = None
        self.attributes: dict[str, Any] = {}
        self.failed: str | None = None

    def set(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def fail(self, kind: str) -> None:
        self.failed = kind

    def end(self, at_ns: int | None = None) -> None:
        assert self.end_ns is None, "a span ends once"
        self.end_ns = at_ns if at_ns is not None else time.perf_counter_ns()


class FakeTracer:
    """The core's Tracer port, recording the spans it starts."""

    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []

    def start(self, name: str, at_ns: int | None = None) -> FakeSpan:
        span = FakeSpan(name, at_ns if at_ns is not None else time.perf_counter_ns())
        self.spans.append(span)
        return span

    def named(self) -> dict[str, FakeSpan]:
        return {span.name: span for span in self.spans}


def _service(
    tracer: FakeTracer, *, batched: bool = True, max_inflight: int | None = None, **options: Any
) -> InferenceService:
    manifest: dict[str, Any] = {"runtime_options": options}
    if batched:
        manifest["batching"] = {"max_batch_size": 8, "max_queue_size": 1}

    def load(source: VersionSource) -> RecordingPredictor:
        return RecordingPredictor(fail_on=source.manifest.runtime_options.get("fail_on"))

    registry = ModelRegistry(MemoryRepository({"m": {1: manifest}}), {"python": load})
    admission = Admission(MemoryRateLimiter(), max_inflight=max_inflight)
    return InferenceService(registry, admission=admission, tracer=tracer)


def _request(value: float = 1.0, rows: int = 1) -> InferenceRequest:
    x = np.full((rows, 2), value, np.float32)
    return InferenceRequest("m", None, [Tensor("x", "FP32", x)])


async def test_admission_queue_and_runtime_are_spans_in_order() -> None:
    tracer = FakeTracer()
    await _service(tracer).infer(_request())
    spans = tracer.named()
    assert [s.name for s in tracer.spans] == ["admission", "queue", "runtime"]
    admission, queue, runtime = spans["admission"], spans["queue"], spans["runtime"]
    assert all(s.end_ns is not None and s.failed is None for s in tracer.spans)
    assert admission.end_ns is not None and admission.end_ns <= queue.start_ns
    assert queue.end_ns == runtime.start_ns  # the batch ran when the wait ended
    assert runtime.attributes == {
        "modelgate.model": "m",
        "modelgate.model_version": 1,
        "modelgate.batch_size": 1,
        "modelgate.hardware": "cpu",
    }


async def test_an_unbatched_model_has_no_queue_span() -> None:
    tracer = FakeTracer()
    await _service(tracer, batched=False).infer(_request())
    assert [s.name for s in tracer.spans] == ["admission", "runtime"]


async def test_a_failed_runtime_call_fails_its_span() -> None:
    tracer = FakeTracer()
    service = _service(tracer, fail_on=7.0)
    with pytest.raises(ModelgateError) as caught:
        await service.infer(_request(7.0))
    assert caught.value.kind is ErrorKind.INTERNAL
    runtime = tracer.named()["runtime"]
    assert runtime.failed == "internal" and runtime.end_ns is not None


async def test_a_refused_request_fails_the_admission_span_and_runs_nothing() -> None:
    tracer = FakeTracer()
    service = _service(tracer, max_inflight=0)
    with pytest.raises(ModelgateError) as caught:
        await service.infer(_request())
    assert [(s.name, s.failed) for s in tracer.spans] == [("admission", caught.value.kind.value)]


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0af7651916cd43dd8448eb211c80319c",
        ),
        (
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "0af7651916cd43dd8448eb211c80319c",
        ),
        # a later version may append fields; version 00 may not
        (
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever",
            "0af7651916cd43dd8448eb211c80319c",
        ),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", None),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),  # upper case
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01", None),
        ("garbage\n", None),
        ("", None),
        (None, None),
    ],
)
def test_trace_ids_are_read_from_valid_traceparents_only(
    traceparent: str | bytes | None, trace_id: str | None
) -> None:
    assert trace_id_of(traceparent) == trace_id


def test_without_an_endpoint_the_sdk_is_never_imported(tmp_path: Path) -> None:
    """Tracing off: no tracer anywhere, and not even the tracing SDK in memory."""
    script = f"""
import sys
from pathlib import Path
from modelgate.boot.serving import build_components
from modelgate.settings import Settings

components = build_components(
    Settings(model_repository=Path({str(FIXTURE_MODELS)!r}), data_dir=Path({str(tmp_path)!r}))
)
assert components.tracer is None and components.service.tracer is None
assert components.rest_app.tracer is None
# (redis imports opentelemetry.sdk.metrics whenever it is installed, and leaves it idle)
tracing = ("opentelemetry.sdk.trace", "opentelemetry.exporter")
loaded = sorted(m for m in sys.modules if m.startswith(tracing))
assert not loaded, loaded
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
