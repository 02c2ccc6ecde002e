"""``refusals``: the CPU of one refused request (a tenant flooding past its plan's rate limit, 429
/ RESOURCE_EXHAUSTED) against one served inference of a tenant key, REST and gRPC, with the
refusal memo (core/admission/refusals.py) and without it (the full path), and what holding a
memo refusal adds (core/admission/backpressure.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Awaitable
from typing import Any

from bench.inprocess import protocol_refusal
from bench.inprocess.asgi import Counted, asgi_post, post_scope
from bench.inprocess.timing import Call, Figures, cpu_per_call
from bench.workloads import CREDIT, credit_json

#: a plan that admits one request in 1000 s: every request of a run after the first is refused
REFUSING_PLAN: dict[str, Any] = {"name": "bench-refused", "requests_per_second": 0.001, "burst": 1}


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

    def set_code(self, code: Any) -> None:  # a refusal set on the context, not raised
        self.codes[code.name] = self.codes.get(code.name, 0) + 1

    def set_details(self, details: str) -> None:
        return None


async def measure_refusals(components: Any, figures: Figures, served_secret: str) -> None:
    """Served (a tenant key within its plan) and refused (a tenant past its rate limit),
    CPU and wall µs per request, REST (the ASGI app) and gRPC (``ModelInfer``), the refusal
    memo on, then off; and the ratios refused / served."""
    from bench.workloads import grpc_request
    from modelgate.api.grpc.servicer import GrpcInferenceServicer
    from modelgate.core.admission.backpressure import RefusalBackpressure

    def post(path: str, body: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        return asgi_post(components.rest_app, path, body)

    await post("/admin/plans", REFUSING_PLAN)
    flooder = await post("/admin/tenants", {"name": "flooder", "plan": REFUSING_PLAN["name"]})
    created = await post(f"/admin/tenants/{flooder['id']}/keys", {"name": "flood"})
    flood_secret = str(created["secret"])
    app, service = components.rest_app, components.service
    body = credit_json()
    path = f"/v2/models/{CREDIT}/infer"
    channel = Counted(body)
    receive, send, statuses = channel.receive, channel.send, channel.statuses

    def rest(secret: str) -> Call:
        scope = post_scope(path, body, f"Bearer {secret}")
        return lambda: app(scope, receive, send)

    servicer = GrpcInferenceServicer(service, authenticator=components.authenticator)
    message: Any = grpc_request()
    if importlib.util.find_spec("modelgate.api.grpc.raw_request") is not None:
        message = message.SerializeToString()  # as the server hands ModelInfer its message
    served_context = _RefusalContext(f"Bearer {served_secret}")
    flood_context = _RefusalContext(f"Bearer {flood_secret}")

    async def grpc_call(context: _RefusalContext) -> None:
        with contextlib.suppress(_Aborted):
            await servicer.ModelInfer(message, context)

    admission = service.admission
    memo = admission.memo
    out = figures.out
    # The flood comes on one connection: back-pressure would hold its refusals past the
    # burst for a second each. Off for the refusal's own cost; a hold's is measured apart,
    # with a timer of ~0 s (what a hold adds: one timer, one wake-up of the loop).
    backpressure, app.backpressure = app.backpressure, None
    for protocol, served, refused in (
        ("REST", rest(served_secret), rest(flood_secret)),
        ("gRPC", lambda: grpc_call(served_context), lambda: grpc_call(flood_context)),
    ):
        cpu, wall = await cpu_per_call(served, figures.seconds)
        out[f"{protocol} served, tenant key: CPU µs"] = cpu
        out[f"{protocol} served, tenant key: wall µs"] = wall
        for label, with_memo in (("memo", memo), ("full path", None)):
            admission.memo = app.refusals = servicer.refusals = with_memo
            cpu_r, wall_r = await cpu_per_call(refused, figures.seconds)
            out[f"{protocol} refused, {label}: CPU µs"] = cpu_r
            out[f"{protocol} refused, {label}: wall µs"] = wall_r
            out[f"{protocol} refused / served CPU, {label}"] = cpu_r / cpu
        admission.memo = app.refusals = servicer.refusals = memo
        app.backpressure = servicer.backpressure = RefusalBackpressure(burst=1, max_hold_s=1e-6)
        cpu_h, wall_h = await cpu_per_call(refused, figures.seconds)
        out[f"{protocol} refused, memo, held (~0 s): CPU µs"] = cpu_h
        out[f"{protocol} refused, memo, held (~0 s): wall µs"] = wall_h
        app.backpressure = servicer.backpressure = None
    app.backpressure = backpressure
    if protocol_refusal.available():  # the HTTP protocol's own refusal (this tree has one)
        early, counts = await protocol_refusal.protocol_refusal(
            components, flood_secret, path, body
        )
        cpu_p, wall_p = await cpu_per_call(early, figures.seconds)
        out["REST refused, HTTP protocol: share answered by the app"] = counts[1] / sum(counts)
        out["REST refused, HTTP protocol (no kernel): CPU µs"] = cpu_p
        out["REST refused, HTTP protocol (no kernel): wall µs"] = wall_p
        out["REST refused / served CPU, HTTP protocol (no kernel)"] = (
            cpu_p / out["REST served, tenant key: CPU µs"]
        )
    assert set(statuses) == {200, 429}, statuses  # the flooder was refused, the other served
    assert set(flood_context.codes) == {"RESOURCE_EXHAUSTED"}, flood_context.codes
    assert not served_context.codes, served_context.codes
