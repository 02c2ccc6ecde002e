"""3. credit-risk over gRPC: modelgate against a minimal grpc.aio server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import loadgen, workloads
from bench.loadgen import Load
from bench.procs import Server
from bench.suites.context import LOAD_CPU, SERVER_CPU, Check, Ctx, Result
from bench.suites.measuring import (
    alternate,
    authorization,
    background_text,
    checked,
    describe,
    inprocess_layers,
    median,
    ms_text,
    number_text,
    rounds_text,
    with_server_cpu,
)
from bench.suites.servers import start_grpc_baseline, start_modelgate


def grpc_call(port: int, message: Any, auth: str) -> Any:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(message, timeout=30, metadata=(("authorization", auth),))


def bench_grpc(ctx: Ctx) -> Result:
    import numpy as np

    credit = workloads.model_files(ctx.models, workloads.CREDIT)
    result = Result(
        "grpc",
        "credit-risk over gRPC: modelgate vs a minimal grpc.aio server",
        [
            "server",
            "concurrency",
            "req/s (median)",
            "mean latency",
            "server CPU/req",
            "others' cores",
            "rounds req/s",
        ],
    )
    message = workloads.grpc_request()
    body = ctx.work / "credit.grpc"
    body.write_bytes(workloads.grpc_frame(message))
    layers = inprocess_layers(ctx, "grpc")
    headers = ["content-type: application/grpc", "te: trailers"]
    connections, streams = 4, 16
    servers: dict[str, Server] = {}
    try:
        servers["modelgate"] = start_modelgate(ctx, "modelgate-grpc", SERVER_CPU)
        servers["grpc.aio"] = start_grpc_baseline(ctx, credit, SERVER_CPU)
        servers["grpc.aio on uvloop"] = start_grpc_baseline(ctx, credit, SERVER_CPU, True)
        answers = {n: grpc_call(s.grpc_port, message, authorization(s)) for n, s in servers.items()}
        probs = [np.frombuffer(a.raw_output_contents[1], "<f4") for a in answers.values()]
        if not all(np.allclose(probs[0], p, atol=1e-5) for p in probs):
            raise RuntimeError(f"the servers disagree: {probs}")
        sizes = {n: 5 + a.ByteSize() for n, a in answers.items()}

        def target(name: str, seconds: float) -> Callable[[], Load]:
            url = (
                f"http://127.0.0.1:{servers[name].grpc_port}"
                "/inference.GRPCInferenceService/ModelInfer"
            )
            return lambda: checked(
                with_server_cpu(
                    servers[name],
                    lambda: loadgen.h2load(
                        url,
                        body,
                        connections=connections,
                        streams=streams,
                        seconds=seconds,
                        headers=[*headers, f"authorization: {authorization(servers[name])}"],
                        cpus=LOAD_CPU,
                        response_bytes=sizes[name],
                    ),
                ),
                name,
            )

        for name in servers:
            target(name, 2)()
        runs = alternate(ctx, [(n, target(n, ctx.duration)) for n in servers], describe)
    finally:
        for server in servers.values():
            server.stop()
    med = {}
    for name, loads in runs.items():
        med[name] = median([x.rps for x in loads])
        result.rows.append(
            [
                name,
                f"{connections}x{streams}",
                number_text(med[name]),
                ms_text(median([x.mean_ms or 0 for x in loads])),
                f"{median([x.extra['server_us_per_req'] for x in loads]):.0f} µs",
                background_text(loads),
                rounds_text([x.rps for x in loads]),
            ]
        )
    ratio = med["modelgate"] / med["grpc.aio"]
    result.checks += [
        Check(
            "gRPC c=64 throughput, modelgate / grpc.aio", f"{ratio:.2f}x", ">= 1.0", ratio >= 1.0
        ),
        Check(
            "gRPC c=64 throughput, modelgate / grpc.aio on uvloop",
            f"{med['modelgate'] / med['grpc.aio on uvloop']:.2f}x",
            "(info)",
            None,
        ),
    ]
    result.notes += [
        f"Load generator: h2load (nghttp2) pinned to CPU {LOAD_CPU}, {connections} connections x "
        f"{streams} concurrent streams = 64 calls in flight, replaying one pre-encoded gRPC "
        "message (`ModelInferRequest`, FP32 [1,12] in raw_input_contents) with "
        "`content-type: application/grpc` and `te: trailers`; every answer is checked to carry "
        "the full response message (h2load cannot see grpc-status, a failed call has no body). "
        "Chosen over a grpcio-based Python load generator (not measured): grpc in Python costs "
        "as much CPU per call in a client as in these servers, so one client vCPU would cap "
        "near the servers' own rate.",
        f"Servers pinned to CPU {SERVER_CPU}; {ctx.rounds} alternating rounds of "
        f"{ctx.duration:g} s after 2 s warm-up each. Baseline: `bench/baseline_grpc.py` "
        "(grpc.aio, the same stubs and ONNX file, inline), on asyncio's default loop as a "
        "minimal server would run, and on uvloop (`--uvloop`), the loop modelgate runs gRPC on.",
        "The servicer methods called directly, no grpc (`python -m bench.inprocess grpc`, CPU "
        f"{SERVER_CPU}, µs per call): "
        + (", ".join(f"{name} {micros:.1f}" for name, micros in layers.items()) or "n/a")
        + ".",
    ]
    return result
