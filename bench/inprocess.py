"""Where a credit-risk request's time goes inside modelgate, with no server or socket.

``rest``: the ASGI app called in-process, and each layer below it, sequentially (c=1) and 64
at a time. ``grpc``: modelgate's ``ModelInfer`` servicer method against the baseline's
(``bench.baseline_grpc``), called directly without grpc, and the gRPC codec.

``refusals``: the CPU of one refused request (a tenant flooding past its plan's rate limit,
429 / RESOURCE_EXHAUSTED) against one served inference of a tenant key, REST and gRPC,
with the refusal memo (core/admission/refusals.py) and without it (the full path).
``anomaly``: the credit-risk REST request with a typical applicant, one in the reference's 1%
tails (scored, not flagged) and one out of distribution (flagged: an income out of range and an
unseen category), alternating (A B C C B A, the mean of each), and the anomaly check alone for
each: a typical row is cleared by the small-request loop and must cost what it did before
issue 11; an odd row takes the vectorized plan and must cost as little as it can (issue 11).

``--auth tenant`` also measures every request with a tenant's key (``bench.tenant``: a plan
with rate limits and quotas that never refuse), each such figure measured in alternation
with its bootstrap-key twin (A B B A, the mean of each) and named with ", tenant key";
``--redis URL`` puts the rate limiter, quota counters and abuse strikes in Redis under a
unique key prefix, removed at the end.

Run in a fresh process pinned to one CPU::

    python -m bench.inprocess rest|grpc|refusals MODELS [SECONDS] [--auth admin|tenant]
        [--redis URL]
    python -m bench.inprocess rest|grpc|anomaly MODELS [SECONDS] [--auth admin|tenant] [--redis URL]

prints JSON (µs per call).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import SecretStr

from bench import redis_scratch, tenant
from bench.workloads import AUTHORIZATION, BENCH_KEY, CREDIT, CREDIT_ROW, credit_json

Call = Callable[[], Awaitable[Any]] | Callable[[], Any]


async def _per_call(call: Call, seconds: float) -> float:
    """µs per call, over ``seconds`` after a warm-up (awaits the call if it is a coroutine)."""

    async def once() -> None:
        value = call()
        if asyncio.iscoroutine(value):
            await value

    for _ in range(500):
        await once()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            await once()
        count += 200
    return (time.perf_counter() - start) / count * 1e6


async def _pair(admin: Call, tenant_call: Call, seconds: float) -> tuple[float, float]:
    """The bootstrap-key and tenant-key figures of one layer, A B B A: the mean of each, so a
    drift of the machine's speed during the four runs weighs on both alike."""
    a1 = await _per_call(admin, seconds)
    t1 = await _per_call(tenant_call, seconds)
    t2 = await _per_call(tenant_call, seconds)
    a2 = await _per_call(admin, seconds)
    return (a1 + a2) / 2, (t1 + t2) / 2


class _Figures:
    """Figures in the order measured; with a tenant key, each ``both`` adds two."""

    def __init__(self, seconds: float, tenant_key: bool):
        self.seconds = seconds
        self.tenant_key = tenant_key
        self.out: dict[str, float] = {}

    async def one(self, name: str, call: Call, share: float = 1.0, per: int = 1) -> None:
        self.out[name] = await _per_call(call, self.seconds * share) / per

    async def both(
        self, name: str, admin: Call, tenant_call: Call | None, share: float = 1.0, per: int = 1
    ) -> None:
        if not self.tenant_key or tenant_call is None:
            await self.one(name, admin, share, per)
            return
        a, t = await _pair(admin, tenant_call, self.seconds * share)
        self.out[name] = a / per
        self.out[f"{name}, tenant key"] = t / per


async def _asgi_post(app: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to ``app`` in-process with the bootstrap key; the JSON answer."""
    data = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"authorization", AUTHORIZATION.encode()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status >= 300:
        raise RuntimeError(f"POST {path}: {status} {answer[:500]!r}")
    result: dict[str, Any] = json.loads(answer)
    return result


async def measure(
    which: str,
    models: Path,
    seconds: float,
    auth: str = "admin",
    redis_url: str | None = None,
    redis_prefix: str | None = None,
) -> dict[str, float]:
    from modelgate.api.oip_codec import decode_infer_request, encode_infer_response
    from modelgate.boot.serving import build_components
    from modelgate.core.serving.signature import validate_inputs as _validate
    from modelgate.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        (repo / CREDIT).symlink_to((models / CREDIT).resolve())
        shared: dict[str, Any] = {}
        if redis_url is not None:
            shared = {"redis_url": SecretStr(redis_url), "redis_key_prefix": redis_prefix}
        components = build_components(
            Settings(
                model_repository=repo,
                data_dir=Path(tmp) / "d",
                log_level="warning",
                admin_key=SecretStr(BENCH_KEY),
                **shared,
            )
        )
        await components.open()  # migrations: the tenant, its plan and key live in SQLite
        await components.registry.start()
        secret = None
        if auth == "tenant" or which == "refusals":
            secret = await tenant.create_key(
                lambda path, body: _asgi_post(components.rest_app, path, body)
            )
        # as the server does after start-up: the long-lived objects leave the collector's
        # generations, so full collections do not walk them (docs/benchmarks.md)
        gc.collect()
        gc.freeze()
        figures = _Figures(seconds, secret is not None)
        try:
            if which == "refusals":
                assert secret is not None
                await _refusals(components, figures, secret)
                return figures.out
            if which == "grpc":
                await _grpc(components, models, figures, secret)
                return figures.out
            if which == "anomaly":
                await _anomaly(components, figures)
                return figures.out
            await _rest(components, figures, secret, decode_infer_request, encode_infer_response)
            loaded = components.registry.get(CREDIT, None)
            assert loaded is not None
            request = decode_infer_request(CREDIT, None, credit_json(), None, 1 << 24)
            response = await components.service.infer(request)
            inputs = {"features": np.asarray(request.inputs[0].data)}
            runtime: Any = loaded.runtime
            predictor = getattr(getattr(runtime, "inner", runtime), "predictor", None)
            await figures.one("_validate", lambda: _validate(loaded.manifest, request.inputs), 0.5)
            await figures.one(
                f"{type(runtime).__name__}.infer", lambda: runtime.infer(inputs, None)
            )
            await figures.one(
                "encode_infer_response", lambda: encode_infer_response(response, {}), 0.5
            )
            if predictor is not None:
                await figures.one(
                    "predictor.predict (ONNX Runtime)", lambda: predictor.predict(inputs), 0.5
                )
            return figures.out
        finally:
            await components.registry.close()
            components.executor.shutdown(wait=False)
            if redis_url is not None and redis_prefix is not None:
                redis_scratch.remove_prefix(redis_url, redis_prefix)


def _scope(path: str, body: bytes, authorization: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", authorization.encode()),
        ],
    }


async def _rest(
    components: Any,
    figures: _Figures,
    secret: str | None,
    decode_infer_request: Callable[..., Any],
    encode_infer_response: Callable[..., Any],
) -> None:
    app, service = components.rest_app, components.service
    body = credit_json()
    path = f"/v2/models/{CREDIT}/infer"
    admin_scope = _scope(path, body, AUTHORIZATION)
    tenant_scope = _scope(path, body, f"Bearer {secret}") if secret else None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_message: Any) -> None:
        return None

    def sequential(scope: dict[str, Any]) -> Call:
        return lambda: app(scope, receive, send)

    def sixty_four(scope: dict[str, Any]) -> Call:
        async def run() -> None:
            await asyncio.gather(*(app(scope, receive, send) for _ in range(64)))

        return run

    request = decode_infer_request(CREDIT, None, body, None, 1 << 24)
    await figures.both(
        "RestApp, sequential",
        sequential(admin_scope),
        sequential(tenant_scope) if tenant_scope else None,
    )
    await figures.both(
        "RestApp, 64 at a time",
        sixty_four(admin_scope),
        sixty_four(tenant_scope) if tenant_scope else None,
        per=64,
    )
    await figures.one(
        "decode_infer_request",
        lambda: decode_infer_request(CREDIT, None, body, None, 1 << 24),
        0.5,
    )
    await figures.one("InferenceService.infer", lambda: service.infer(request))
    authenticator = components.authenticator
    if secret is not None and authenticator is not None:
        admin = await authenticator.authenticate(BENCH_KEY)
        principal = await authenticator.authenticate(secret)
        await figures.both(
            "InferenceService.infer with its principal",
            lambda: service.infer(request, admin),
            lambda: service.infer(request, principal),
        )
        await figures.both(
            "Authenticator.authenticate",
            lambda: authenticator.authenticate(BENCH_KEY),
            lambda: authenticator.authenticate(secret),
            0.5,
        )
        admission = service.admission
        manifest = components.registry.get(CREDIT, None).manifest

        async def admit(who: Any) -> None:
            await admission.admit(who, manifest, 1)
            admission.release(who)

        if admission is not None:
            await figures.both(
                "Admission.admit + release",
                lambda: admit(admin),
                lambda: admit(principal),
                0.5,
            )
            # its parts for the tenant: one GCRA step (of two) and the quota call
            await figures.one(
                "RateLimiter.hit (one of the tenant key's two)",
                lambda: admission.limiter.hit("bench:gcra", 1_000_000, 1.0),
                0.5,
            )
            if admission.quotas is not None:
                quotas = admission.quotas
                await figures.one("Quotas.admit", lambda: quotas.admit(principal, 1), 0.5)


async def _grpc(components: Any, models: Path, figures: _Figures, secret: str | None) -> None:
    from bench.baseline_grpc import Servicer
    from bench.workloads import grpc_request, model_files
    from modelgate.api.grpc.codec import decode_infer_request, encode_infer_response
    from modelgate.api.grpc.servicer import GrpcInferenceServicer

    files = model_files(models, CREDIT)
    ours = GrpcInferenceServicer(components.service, authenticator=components.authenticator)

    class Context:  # what the servicer uses of a grpc.aio context
        def __init__(self, authorization: str):
            self.metadata = (("authorization", authorization),)

        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return self.metadata

        def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
            return None

        def peer(self) -> str:
            return "ipv4:127.0.0.1:50000"

        def time_remaining(self) -> float | None:
            return None

        async def abort(self, code: Any, details: str) -> None:
            raise RuntimeError(f"aborted: {code} {details}")

    context = Context(AUTHORIZATION)
    tenant_context = Context(f"Bearer {secret}") if secret else None
    theirs = Servicer(str(files.onnx), str(files.version))
    message = grpc_request()
    decoded = decode_infer_request(message, 1 << 24)
    response = await components.service.infer(decoded)

    def ours_with(ctx: Context) -> Call:
        return lambda: ours.ModelInfer(message, ctx)

    def gather(servicer: Any, ctx: Context) -> Call:
        async def run() -> None:
            await asyncio.gather(*(servicer.ModelInfer(message, ctx) for _ in range(64)))

        return run

    await figures.both(
        "modelgate ModelInfer, sequential",
        ours_with(context),
        ours_with(tenant_context) if tenant_context else None,
    )
    await figures.one(
        "baseline ModelInfer, sequential", lambda: theirs.ModelInfer(message, context)
    )
    await figures.both(
        "modelgate ModelInfer, 64 at a time",
        gather(ours, context),
        gather(ours, tenant_context) if tenant_context else None,
        per=64,
    )
    await figures.one("baseline ModelInfer, 64 at a time", gather(theirs, context), per=64)
    await figures.one(
        "grpc decode_infer_request", lambda: decode_infer_request(message, 1 << 24), 0.5
    )
    await figures.one("grpc encode_infer_response", lambda: encode_infer_response(response), 0.5)


# -- refusals (issue 15): the CPU of a refused request against a served one --------------

#: a plan that admits one request in 1000 s: every request of a run after the first is refused
REFUSING_PLAN: dict[str, Any] = {"name": "bench-refused", "requests_per_second": 0.001, "burst": 1}


async def _cpu_per_call(call: Call, seconds: float) -> tuple[float, float]:
    """(CPU µs, wall µs) per call over ``seconds`` after a warm-up: the process's CPU time,
    every thread's (the model's intra-op threads included)."""

    async def once() -> None:
        value = call()
        if asyncio.iscoroutine(value):
            await value

    for _ in range(500):
        await once()
    count, cpu, start = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            await once()
        count += 200
    return (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - start) / count * 1e6,
    )


class _Aborted(Exception):  # noqa: N818 (grpc.aio's context.abort raises; this stands for it)
    pass


class _RefusalContext:
    """What ``ModelInfer`` uses of a grpc.aio context, with an ``abort`` that raises."""

    def __init__(self, authorization: str):
        self.metadata = (("authorization", authorization),)
        self.codes: dict[str, int] = {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        return None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: Any, details: str, metadata: Any = ()) -> None:
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        raise _Aborted


async def _refusals(components: Any, figures: _Figures, served_secret: str) -> None:
    """Served (a tenant key within its plan) and refused (a tenant past its rate limit),
    CPU and wall µs per request, REST (the ASGI app) and gRPC (``ModelInfer``), the refusal
    memo on, then off; and the ratios refused / served."""
    from bench.workloads import grpc_request
    from modelgate.api.grpc.servicer import GrpcInferenceServicer

    def post(path: str, body: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        return _asgi_post(components.rest_app, path, body)

    await post("/admin/plans", REFUSING_PLAN)
    flooder = await post("/admin/tenants", {"name": "flooder", "plan": REFUSING_PLAN["name"]})
    created = await post(f"/admin/tenants/{flooder['id']}/keys", {"name": "flood"})
    flood_secret = str(created["secret"])
    app, service = components.rest_app, components.service
    body = credit_json()
    path = f"/v2/models/{CREDIT}/infer"
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    def rest(secret: str) -> Call:
        scope = _scope(path, body, f"Bearer {secret}")
        return lambda: app(scope, receive, send)

    servicer = GrpcInferenceServicer(service, authenticator=components.authenticator)
    message = grpc_request()
    served_context = _RefusalContext(f"Bearer {served_secret}")
    flood_context = _RefusalContext(f"Bearer {flood_secret}")

    async def grpc_call(context: _RefusalContext) -> None:
        with contextlib.suppress(_Aborted):
            await servicer.ModelInfer(message, context)

    admission = service.admission
    memo = admission.memo
    out = figures.out
    for protocol, served, refused in (
        ("REST", rest(served_secret), rest(flood_secret)),
        ("gRPC", lambda: grpc_call(served_context), lambda: grpc_call(flood_context)),
    ):
        cpu, wall = await _cpu_per_call(served, figures.seconds)
        out[f"{protocol} served, tenant key: CPU µs"] = cpu
        out[f"{protocol} served, tenant key: wall µs"] = wall
        for label, with_memo in (("memo", memo), ("full path", None)):
            admission.memo = app.refusals = servicer.refusals = with_memo
            cpu_r, wall_r = await _cpu_per_call(refused, figures.seconds)
            out[f"{protocol} refused, {label}: CPU µs"] = cpu_r
            out[f"{protocol} refused, {label}: wall µs"] = wall_r
            out[f"{protocol} refused / served CPU, {label}"] = cpu_r / cpu
        admission.memo = app.refusals = servicer.refusals = memo
    assert set(statuses) == {200, 429}, statuses  # the flooder was refused, the other served
    assert set(flood_context.codes) == {"RESOURCE_EXHAUSTED"}, flood_context.codes
    assert not served_context.codes, served_context.codes


#: credit-risk applicants the anomaly check scores 0 (``CREDIT_ROW``), about 0.29 (an income in
#: the reference's top 1%, below its maximum) and 1 (an income out of range, an unseen
#: home_ownership): what drifting traffic and garbage look like
ANOMALY_ROWS = {
    "typical row": CREDIT_ROW,
    "row in the 1% tails": [*CREDIT_ROW[:1], 300000.0, *CREDIT_ROW[2:]],
    "out-of-distribution row": [*CREDIT_ROW[:1], 9e9, *CREDIT_ROW[2:11], 7.0],
}


async def _anomaly(components: Any, figures: _Figures) -> None:
    """The REST request and the anomaly check alone, for each of :data:`ANOMALY_ROWS`,
    measured in alternation so that a drift of the machine weighs on every row alike."""
    app, detector = components.rest_app, components.service.anomalies
    loaded = components.registry.get(CREDIT, None)
    path = f"/v2/models/{CREDIT}/infer"
    requests: dict[str, Call] = {}
    screens: dict[str, Call] = {}
    for name, row in ANOMALY_ROWS.items():
        body = orjson.dumps(
            {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": row}]}
        )
        answer = await _asgi_post(app, path, orjson.loads(body))  # a flag answers 200
        requests[name] = _rest_call(app, _scope(path, body, AUTHORIZATION), body)
        inputs = {"features": np.asarray([row], dtype=np.float32)}
        screens[name] = functools.partial(detector.screen, loaded, inputs)
        print(f"{name}: {answer.get('parameters')}", file=sys.stderr)
    for label, calls, share in (
        ("RestApp", requests, 1.0),
        ("AnomalyDetector.screen", screens, 0.5),
    ):
        order = [*calls, *reversed(calls)]
        runs: dict[str, list[float]] = {name: [] for name in calls}
        for name in order:
            runs[name].append(await _per_call(calls[name], figures.seconds * share))
        for name, values in runs.items():
            figures.out[f"{label}, {name}"] = sum(values) / len(values)
            print(label, name, [round(v, 1) for v in values], file=sys.stderr)


def _rest_call(app: Any, scope: dict[str, Any], body: bytes) -> Call:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(_message: Any) -> None:
        return None

    return lambda: app(scope, receive, send)


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("which", choices=["rest", "grpc", "refusals", "anomaly"])
    parser.add_argument("models", type=Path)
    parser.add_argument("seconds", type=float, nargs="?", default=2.0)
    parser.add_argument("--auth", choices=tenant.AUTH_MODES, default="admin")
    parser.add_argument("--redis", metavar="URL", help="limits, quotas and strikes in Redis")
    args = parser.parse_args()
    os.environ.setdefault("MODELGATE_LOG_LEVEL", "warning")
    prefix = redis_scratch.unique_prefix() if args.redis else None
    print(
        json.dumps(
            uvloop.run(
                measure(args.which, args.models, args.seconds, args.auth, args.redis, prefix)
            )
        )
    )


if __name__ == "__main__":
    main()
