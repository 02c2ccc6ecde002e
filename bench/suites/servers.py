"""The servers the benchmarks compare: modelgate, the minimal FastAPI and grpc.aio baselines, and
the floors (a bare ASGI app, a canned answer).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench import tenant, workloads
from bench.procs import Server, free_port, http_ready, pinned
from bench.suites.context import Ctx


def start_modelgate(
    ctx: Ctx,
    tag: str,
    cpus: str | None,
    workers: int = 1,
    *,
    probe: bool = False,
    freeze: bool = False,
    env: dict[str, str] | None = None,
) -> Server:
    """modelgate on free ports; ``probe`` runs it under :mod:`bench.gc_probe` (GC pauses
    recorded), ``freeze`` also calls ``gc.freeze()`` once it is ready. With ``ctx.auth``
    "tenant", a tenant key is created through its admin API (``server.authorization``);
    with ``ctx.redis_url``, it keeps limits, quotas and strikes in Redis; ``env`` adds to
    (or overrides) its environment (settings a benchmark varies)."""
    http, grpc = free_port(), free_port()
    entry = (
        ["-m", "bench.gc_probe", *(["--freeze"] if freeze else [])]
        if probe or freeze
        else ["-m", "modelgate"]
    )
    argv = pinned(
        cpus,
        [
            sys.executable,
            *entry,
            "serve",
            "--model-repository",
            str(ctx.models),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--workers",
            str(workers),
            "--data-dir",
            str(ctx.work / f"{tag}-data"),
        ],
    )
    env = {"MODELGATE_ADMIN_KEY": workloads.BENCH_KEY, **(env or {})}
    if ctx.redis_url is not None and ctx.redis_prefix is not None:
        env |= {
            "MODELGATE_REDIS_URL": ctx.redis_url,
            "MODELGATE_REDIS_KEY_PREFIX": ctx.redis_prefix,
        }
    if probe or freeze:
        gc_file = ctx.work / f"{tag}.gc"
        env["BENCH_GC_FILE"] = str(gc_file)
    server = Server(tag, argv, ctx.work, env=env)
    if probe or freeze:
        server.gc_file = gc_file
    server.http_port, server.grpc_port = http, grpc
    ready = http_ready(f"http://127.0.0.1:{http}/v2/health/ready")
    server.start(
        lambda: server.log_text().count("modelgate ready") >= workers and ready(), timeout=180
    )
    if freeze:
        deadline = time.monotonic() + 30
        while "gc_probe: froze" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    if ctx.auth == "tenant":
        secret = tenant.create_key_over_http(f"http://127.0.0.1:{http}")
        server.authorization = f"Bearer {secret}"
    return server


def uvicorn_argv(app: str, port: int) -> list[str]:
    """uvicorn as modelgate runs it: httptools, uvloop, one worker, no access log, no
    server or date header."""
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--http", "httptools", "--loop", "uvloop", "--workers", "1", "--no-access-log",
        "--no-server-header", "--no-date-header", "--log-level", "warning",
    ]  # fmt: skip


def start_fastapi(ctx: Ctx, files: workloads.ModelFiles, cpus: str | None) -> Server:
    http = free_port()
    argv = pinned(
        cpus,
        uvicorn_argv("bench.baseline_fastapi:app", http),
    )
    server = Server(
        "baseline-fastapi",
        argv,
        ctx.work,
        env={"BENCH_ONNX_MODEL": str(files.onnx), "BENCH_MODEL_VERSION": str(files.version)},
    )
    server.http_port = http
    return server.start(http_ready(f"http://127.0.0.1:{http}/v2/health/ready"))


def start_grpc_baseline(
    ctx: Ctx, files: workloads.ModelFiles, cpus: str | None, use_uvloop: bool = False
) -> Server:
    port = free_port()
    argv = pinned(
        cpus,
        [
            sys.executable,
            "-m",
            "bench.baseline_grpc",
            "--port",
            str(port),
            "--model",
            str(files.onnx),
            "--version",
            str(files.version),
        ],
    )
    if use_uvloop:
        argv.append("--uvloop")
    server = Server(f"baseline-grpc{'-uvloop' if use_uvloop else ''}", argv, ctx.work)
    server.grpc_port = port
    return server.start(lambda: "baseline gRPC ready" in server.log_text())


def same_credit_answer(a: Any, b: Any) -> None:
    def probabilities(doc: Any) -> list[float]:
        return next(o["data"] for o in doc["outputs"] if o["name"] == "probabilities")

    pa, pb = probabilities(a), probabilities(b)
    if len(pa) != len(pb) or any(abs(x - y) > 1e-5 for x, y in zip(pa, pb, strict=True)):
        raise RuntimeError(f"the servers disagree: {pa} vs {pb}")


def start_floor(ctx: Ctx, cpus: str | None) -> Server:
    http = free_port()
    server = Server(
        "floor-http",
        pinned(cpus, [sys.executable, "-m", "bench.floor_http", "--port", str(http)]),
        ctx.work,
    )
    server.http_port = http
    return server.start(lambda: "floor HTTP ready" in server.log_text())


def start_uvicorn_floor(ctx: Ctx, cpus: str | None) -> Server:
    http = free_port()
    argv = pinned(
        cpus,
        [*uvicorn_argv("bench.floor_http:app", http), "--lifespan", "off"],
    )
    server = Server("floor-uvicorn", argv, ctx.work)
    server.http_port = http
    return server.start(http_ready(f"http://127.0.0.1:{http}/v2/health/ready"))
