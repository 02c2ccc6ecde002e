"""The benchmarks. Everything compared in one benchmark runs in the same invocation, in
alternating rounds (A B, B A, A B, ...), and is reported as the median of its rounds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bench.suites.context import Check, Ctx, Result
from bench.suites.grpc_suite import bench_grpc
from bench.suites.memory import bench_rss
from bench.suites.minilm import bench_minilm
from bench.suites.odd_rows import bench_ood
from bench.suites.raw_onnx import bench_raw
from bench.suites.redis_row import bench_redis
from bench.suites.rest import bench_rest
from bench.suites.scale_out import bench_gateway
from bench.suites.steps import bench_steps
from bench.suites.workers import bench_workers

__all__ = [
    "DEFAULT_REDIS_URL",
    "SUITES",
    "TENANT_BY_DEFAULT",
    "Check",
    "Ctx",
    "Result",
    "suite_context",
]

SUITES: dict[str, tuple[str, Callable[[Ctx], Result]]] = {
    "raw": ("In-process ONNX Runtime ceiling", bench_raw),
    "rest": ("REST vs minimal FastAPI", bench_rest),
    "grpc": ("gRPC vs minimal grpc.aio", bench_grpc),
    "minilm": ("MiniLM single sentences vs raw batch 32", bench_minilm),
    "workers": ("--workers 2 vs 1", bench_workers),
    "steps": ("credit-risk REST in-process: µs per step", bench_steps),
    "ood": ("REST, out-of-distribution rows vs typical rows", bench_ood),
    "redis": ("REST with limits and quotas in Redis vs minimal FastAPI", bench_redis),
    "gateway": ("REST through a gateway and a node vs one all-in-one process", bench_gateway),
    "rss": ("Server RSS idle and after load, 3 runs, vs minimal FastAPI", bench_rss),
}

#: issue 11's rows are measured as its table says, with a tenant's key (rate limit and daily
#: quota on every request), unless ``--auth`` says otherwise
TENANT_BY_DEFAULT = frozenset({"ood", "redis", "gateway", "rss"})
#: the rows that need a Redis (limits in Redis; gateways find nodes there) use this one
#: when ``--redis`` names none
NEEDS_REDIS = frozenset({"redis", "gateway"})
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def suite_context(ctx: Ctx, name: str, auth: str | None) -> Ctx:
    """The context benchmark ``name`` runs in: ``auth`` (``--auth``) or its default key, and
    for the rows that need one, ``--redis`` or the local Redis, under the run's prefix."""
    chosen = auth or ("tenant" if name in TENANT_BY_DEFAULT else "admin")
    url = ctx.redis_url or (DEFAULT_REDIS_URL if name in NEEDS_REDIS else None)
    return dataclasses.replace(ctx, auth=chosen, redis_url=url)
