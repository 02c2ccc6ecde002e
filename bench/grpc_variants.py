"""Which gRPC server carries modelgate's ``ModelInfer`` best: one alternating run against the
minimal grpc.aio server (``bench/baseline_grpc.py``), issue 11.

Servers, each pinned to the server CPU, loaded by h2load (4 connections x 16 streams) as
``make bench --only grpc`` loads them; every modelgate is the whole ``modelgate serve``
(REST beside gRPC, the request log, the demo model's anomaly and feedback sections):

- ``baseline``: ``bench.baseline_grpc``, grpc.aio on asyncio's default loop;
- ``baseline-sync``: the baseline's few lines under grpc's sync server (``grpc.server`` with
  a ``ThreadPoolExecutor``), which tells what the server model alone is worth;
- ``modelgate``: ``modelgate serve`` as a user runs it (grpc.aio on its uvloop);
- ``sync``: ``modelgate serve`` with its gRPC server swapped for grpc's sync server; the core
  is asynchronous, so each call's coroutine is handed to the event loop's thread and the pool
  thread waits for its answer (a prototype: ``ModelInfer`` only, see :class:`ThreadedGrpc`);
- ``today`` (with ``--today-src``): ``modelgate serve`` from another source tree, the code
  before a change, so a change is measured against what it replaced in the same run.

    python -m bench.grpc_variants build/models --rounds 3 --seconds 5 [--today-src DIR]

``DIR`` is a ``src`` of another commit, for example from ``git archive <commit> src | tar -x
-C /tmp/before`` (then ``--today-src /tmp/before/src``); ``--threads`` sizes the sync
servers' pools (default 8).

A smoke run on a shared machine shows the script works; only a quiet machine's numbers
compare (docs/benchmarks.md says how the project's are taken).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench import loadgen, workloads
from bench.loadgen import Load
from bench.procs import Server, free_port, http_ready, pinned
from bench.suites.context import LOAD_CPU, SERVER_CPU, Ctx
from bench.suites.measuring import (
    alternate,
    checked,
    describe,
    median,
    number_text,
    rounds_text,
    with_server_cpu,
)
from bench.suites.servers import start_grpc_baseline, start_modelgate


# -- the variant servers (run in a child process) ---------------------------------------
class _SyncContext:
    """A sync server's context as the servicer uses a grpc.aio one (``abort`` awaitable)."""

    __slots__ = ("_context",)

    def __init__(self, context: Any):
        self._context = context

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def set_trailing_metadata(self, metadata: Any) -> None:
        self._context.set_trailing_metadata(metadata)

    def peer(self) -> str:
        return str(self._context.peer())

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        if trailing_metadata:
            self._context.set_trailing_metadata(trailing_metadata)
        self._context.abort(code, details)  # raises, as grpc.aio's does


class ThreadedGrpc:
    """modelgate's servicer under grpc's sync server, shaped as ``modelgate.server`` uses a
    grpc.aio server (``add_insecure_port``, awaitable ``start`` and ``stop``).

    A pool thread per call in flight waits while the call runs on the event loop, so the
    pool bounds the calls the core sees at once (the batcher merges at most that many).
    Only ``ModelInfer`` is served: enough to measure, not a server to ship."""

    def __init__(self, settings: Any, components: Any, threads: int):
        import grpc
        from tritonclient.grpc import service_pb2

        from modelgate.api.grpc.build import GrpcConnectionLimits
        from modelgate.api.grpc.servicer import GrpcInferenceServicer

        self._servicer = GrpcInferenceServicer(
            components.service,
            max_elements=settings.max_elements,
            authenticator=components.authenticator,
            abuse=components.abuse,
            tracer=components.tracer,
            requests=components.requests,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        handler = grpc.unary_unary_rpc_method_handler(
            self._model_infer,
            request_deserializer=service_pb2.ModelInferRequest.FromString,
            response_serializer=_serialize,
        )
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=threads),
            options=[
                ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
                ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
                *GrpcConnectionLimits().options(),
            ],
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "inference.GRPCInferenceService", {"ModelInfer": handler}
                ),
            )
        )

    def _model_infer(self, request: Any, context: Any) -> Any:
        assert self._loop is not None
        call = self._servicer.ModelInfer(request, _SyncContext(context))
        answer = asyncio.run_coroutine_threadsafe(call, self._loop)
        context.add_callback(answer.cancel)  # the client went away: the call is cancelled
        return answer.result()

    def add_insecure_port(self, address: str) -> int:
        port: int = self._server.add_insecure_port(address)
        return port

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await asyncio.to_thread(self._server.stop(grace).wait)


def serve_sync(argv: list[str], threads: int) -> None:
    """``modelgate serve`` with :class:`ThreadedGrpc` as its gRPC server."""
    import modelgate.server
    from modelgate.cli import main as modelgate_main

    def build(settings: Any, components: Any, *, reuse_port: bool) -> ThreadedGrpc:
        return ThreadedGrpc(settings, components, threads)

    modelgate.server.build_grpc_server = build
    sys.argv = ["modelgate", *argv]
    modelgate_main()


def _serve_baseline_sync(models: Path, port: int, threads: int) -> None:
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2

    from bench.baseline_grpc import Servicer

    files = workloads.model_files(models, workloads.CREDIT)
    session = Servicer(str(files.onnx), str(files.version)).session
    outputs = (("label", "INT64"), ("probabilities", "FP32"))

    def model_infer(request: Any, context: Any) -> Any:  # bench.baseline_grpc's, in a thread
        tensor = request.inputs[0]
        features = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(
            tuple(tensor.shape)
        )
        arrays = session.run([n for n, _ in outputs], {tensor.name: features})
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version=str(files.version), id=request.id
        )
        for (name, datatype), array in zip(outputs, arrays, strict=True):
            response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            response.raw_output_contents.append(array.tobytes())
        return response

    handler = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=service_pb2.ModelInferRequest.FromString,
        response_serializer=_serialize,
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelInfer": handler}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("variant ready", flush=True)
    server.wait_for_termination()


def _serialize(message: Any) -> bytes:
    """A message, or bytes the servicer already encoded."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


# -- the comparison (run by the user) ---------------------------------------------------
def _start_baseline_sync(ctx: Ctx, threads: int) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.grpc_variants", "baseline-sync", "--port", str(port)]
    argv += ["--models", str(ctx.models), "--threads", str(threads)]
    server = Server("baseline-sync", pinned(SERVER_CPU, argv), ctx.work)
    server.grpc_port = port
    return server.start(lambda: "variant ready" in server.log_text())


def _start_sync(ctx: Ctx, threads: int) -> Server:
    """``modelgate serve`` as :func:`start_modelgate` starts it, gRPC on :class:`ThreadedGrpc`."""
    http, grpc = free_port(), free_port()
    argv = [sys.executable, "-m", "bench.grpc_variants", "serve-sync", "--threads", str(threads)]
    argv += ["serve", "--model-repository", str(ctx.models), "--http-port", str(http)]
    argv += ["--grpc-port", str(grpc), "--data-dir", str(ctx.work / "sync-data")]
    server = Server(
        "modelgate-sync",
        pinned(SERVER_CPU, argv),
        ctx.work,
        env={"MODELGATE_ADMIN_KEY": workloads.BENCH_KEY},
    )
    server.http_port, server.grpc_port = http, grpc
    ready = http_ready(f"http://127.0.0.1:{http}/v2/health/ready")
    return server.start(lambda: "modelgate ready" in server.log_text() and ready(), timeout=180)


def _start_today(ctx: Ctx, source: Path) -> Server:
    """``modelgate serve`` imported from ``source`` (a ``src`` directory) instead."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(source.resolve())
    try:
        return start_modelgate(ctx, "modelgate-today", SERVER_CPU)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def compare(ctx: Ctx, today: Path | None, threads: int) -> dict[str, list[Load]]:
    credit = workloads.model_files(ctx.models, workloads.CREDIT)
    message = workloads.grpc_request()
    body = ctx.work / "credit.grpc"
    body.write_bytes(workloads.grpc_frame(message))
    servers: dict[str, Server] = {}
    try:
        servers["baseline"] = start_grpc_baseline(ctx, credit, SERVER_CPU)
        if today is not None:
            servers["today"] = _start_today(ctx, today)
        servers["modelgate"] = start_modelgate(ctx, "modelgate-grpc", SERVER_CPU)
        servers["sync"] = _start_sync(ctx, threads)
        servers["baseline-sync"] = _start_baseline_sync(ctx, threads)
        answers = {name: _answer(s.grpc_port, message) for name, s in servers.items()}
        probabilities = [np.frombuffer(a.raw_output_contents[1], "<f4") for a in answers.values()]
        if not all(np.allclose(probabilities[0], p, atol=1e-5) for p in probabilities):
            raise RuntimeError(f"the servers disagree: {probabilities}")
        sizes = {name: 5 + int(a.ByteSize()) for name, a in answers.items()}

        def target(name: str, seconds: float) -> Callable[[], Load]:
            url = (
                f"http://127.0.0.1:{servers[name].grpc_port}"
                "/inference.GRPCInferenceService/ModelInfer"
            )
            headers = [
                "content-type: application/grpc",
                "te: trailers",
                f"authorization: {workloads.AUTHORIZATION}",
            ]
            return lambda: checked(
                with_server_cpu(
                    servers[name],
                    lambda: loadgen.h2load(
                        url,
                        body,
                        connections=4,
                        streams=16,
                        seconds=seconds,
                        headers=headers,
                        cpus=LOAD_CPU,
                        response_bytes=sizes[name],
                    ),
                ),
                name,
            )

        for name in servers:  # warm-up
            target(name, 2)()
        return alternate(ctx, [(n, target(n, ctx.duration)) for n in servers], describe)
    finally:
        for server in servers.values():
            server.stop()


def _answer(port: int, message: Any) -> Any:
    """The server's answer (h2load checks every answer carries as many bytes)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(
            message, timeout=30, metadata=(("authorization", workloads.AUTHORIZATION),)
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_variants")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="the comparison (the default)")
    run.add_argument("models", type=Path)
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--seconds", type=float, default=5.0)
    run.add_argument("--threads", type=int, default=8, help="the sync server's pool")
    run.add_argument("--today-src", type=Path, help="a src/ of modelgate to compare against")
    sync = sub.add_parser("serve-sync", help="modelgate's CLI, gRPC on the sync server")
    sync.add_argument("--threads", type=int, default=8)
    sync.add_argument("modelgate", nargs=argparse.REMAINDER, help="modelgate's arguments")
    base = sub.add_parser("baseline-sync", help="the baseline on the sync server")
    base.add_argument("--port", type=int, required=True)
    base.add_argument("--models", type=Path, required=True)
    base.add_argument("--threads", type=int, default=8)
    argv = sys.argv[1:]
    if argv and argv[0] not in ("run", "serve-sync", "baseline-sync", "-h", "--help"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command == "serve-sync":
        serve_sync(args.modelgate, args.threads)
        return
    if args.command == "baseline-sync":
        _serve_baseline_sync(args.models, args.port, args.threads)
        return
    with tempfile.TemporaryDirectory() as work:
        ctx = Ctx(args.models, args.seconds, args.rounds, Path(work), Console())
        runs = compare(ctx, args.today_src, args.threads)
    base = median([x.rps for x in runs["baseline"]])
    print(f"{'server':<13} {'req/s':>8} {'x baseline':>10} {'CPU/req':>9}  rounds")
    for name, loads in runs.items():
        rps = median([x.rps for x in loads])
        cpu = median([x.extra["server_us_per_req"] for x in loads])
        rounds = rounds_text([x.rps for x in loads])
        print(f"{name:<13} {number_text(rps):>8} {rps / base:>9.2f}x {cpu:>6.0f} µs  {rounds}")


if __name__ == "__main__":
    main()
