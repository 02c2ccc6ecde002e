"""``rest``: the ASGI app called in-process, and each layer below it, sequentially (c=1) and 64 at
a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.inprocess.asgi import post_scope
from bench.inprocess.timing import Call, Figures
from bench.workloads import AUTHORIZATION, BENCH_KEY, CREDIT, credit_json


async def measure_rest(
    components: Any,
    figures: Figures,
    secret: str | None,
    decode_infer_request: Callable[..., Any],
    encode_infer_response: Callable[..., Any],
) -> None:
    app, service = components.rest_app, components.service
    body = credit_json()
    path = f"/v2/models/{CREDIT}/infer"
    admin_scope = post_scope(path, body, AUTHORIZATION)
    tenant_scope = post_scope(path, body, f"Bearer {secret}") if secret else None

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
