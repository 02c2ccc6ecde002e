"""The benchmarks. Everything compared in one benchmark runs in the same invocation, in
alternating rounds (A B, B A, A B, ...), and is reported as the median of its rounds."""

from __future__ import annotations

from collections.abc import Callable

from bench.suites.context import Check, Ctx, Result
from bench.suites.grpc_suite import bench_grpc
from bench.suites.minilm import bench_minilm
from bench.suites.raw_onnx import bench_raw
from bench.suites.rest import bench_rest
from bench.suites.steps import bench_steps
from bench.suites.workers import bench_workers

__all__ = ["SUITES", "Check", "Ctx", "Result"]

SUITES: dict[str, tuple[str, Callable[[Ctx], Result]]] = {
    "raw": ("In-process ONNX Runtime ceiling", bench_raw),
    "rest": ("REST vs minimal FastAPI", bench_rest),
    "grpc": ("gRPC vs minimal grpc.aio", bench_grpc),
    "minilm": ("MiniLM single sentences vs raw batch 32", bench_minilm),
    "workers": ("--workers 2 vs 1", bench_workers),
    "steps": ("credit-risk REST in-process: µs per step", bench_steps),
}
