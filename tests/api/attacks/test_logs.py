"""No key, token or admin key reaches the logs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from dataclasses import replace
from typing import Any

import pytest

from modelgate.core.access.keys import issue_key
from tests.api.attacks.world import (
    ADMIN,
    INFER,
    NEW_KEY,
    ROW,
    SIGNING_KEY,
    World,
    call_grpc,
    call_rest,
    credential_for,
    infer_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record_text(record: logging.LogRecord) -> str:
    """Everything a record carries that a handler could write: message, arguments, error."""
    parts = [str(record.msg), repr(record.args)]
    with contextlib.suppress(TypeError, ValueError):
        parts.append(record.getMessage())
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join([*parts, record.exc_text or ""])


@contextlib.contextmanager
def _listening(handler: logging.Handler) -> Any:
    """``handler`` on the root logger and on uvicorn's, which do not propagate to it."""
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


async def _blocking_traffic(world: World, sent: list[str]) -> None:
    """Guesses from one address and probes of one key until both are blocked (and logged),
    under thresholds lowered for the moment: only 203.0.113.x and acme_prober fail."""
    components = world.server.components
    assert components is not None and components.abuse is not None
    abuse, policy = components.abuse, components.abuse.policy
    abuse.policy = replace(
        policy, slow_after=1, block_after=3, auth_failures_per_address=3, max_delay_s=0.0
    )
    try:
        guesser = {"X-Forwarded-For": "203.0.113.77"}
        for bad in ("unknown-key", "revoked-key", "jwt-flipped-signature", "admin-key-truncated"):
            ((header, value),) = credential_for(world, bad)
            sent.append(value.removeprefix("Bearer "))
            await call_rest(world, "GET", "/v2/models/doubler", {**guesser, header: value})
        prober = {"X-Forwarded-For": "203.0.113.78", **world.auth("acme_prober")}
        for _ in range(3):
            await call_rest(world, "GET", "/v2/models/nope", prober)
    finally:
        abuse.policy = policy


async def _mixed_traffic(world: World, sent: list[str]) -> None:
    """Bad and good credentials over gRPC, REST, /admin and /oauth/token."""
    for bad in ("unknown-key", "jwt-alg-none", "jwt-expired", "admin-key-truncated"):
        credential = credential_for(world, bad)
        sent.append(credential[0][1].removeprefix("Bearer "))
        await call_grpc(world, "ModelInfer", infer_request("doubler"), tuple(credential))
        await call_rest(world, "GET", "/admin/tenants", dict(credential))
    for good in ("acme_ops", "valid-jwt", "admin"):
        await call_grpc(world, "ModelInfer", infer_request("doubler"), world.grpc_auth(good))
        await call_rest(world, "POST", INFER, world.auth(good), ROW)
        await call_rest(world, "GET", "/admin/tenants", world.auth(good))
    made = await call_rest(world, "POST", NEW_KEY, world.auth("admin"), {"name": "logged"})
    sent.append(made.json()["secret"])
    form = {"grant_type": "client_credentials", "client_id": "key_acme_ops"}
    token = await world.http.post(
        "/oauth/token", data={**form, "client_secret": world.secrets["acme_ops"]}
    )
    assert token.status_code == 200, token.text
    sent.append(token.json()["access_token"])
    bearer = {"Authorization": f"Bearer {sent[-1]}"}
    await call_rest(world, "POST", INFER, bearer, ROW)
    token_metadata = (("authorization", bearer["Authorization"]),)
    await call_grpc(world, "ModelInfer", infer_request("doubler"), token_metadata)
    sent.append(issue_key().secret)
    await world.http.post("/oauth/token", data={**form, "client_secret": sent[-1]})
    basic = base64.b64encode(f"key_acme_ops:{world.secrets['acme_revoked']}".encode()).decode()
    await world.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )


async def test_no_credential_reaches_the_logs(
    world: World, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    collect = _Collect()
    sent: list[str] = []

    with _listening(collect):
        await _blocking_traffic(world, sent)
        await _mixed_traffic(world, sent)
        await asyncio.sleep(0.1)  # the last answers' log lines

    captured = capfd.readouterr()
    texts = [_record_text(r) for r in [*collect.records, *caplog.records]]
    texts += [captured.out, captured.err]
    logged = "\n".join(texts)
    assert "ip:203.0.113.77 blocked" in logged  # the capture sees modelgate's warnings
    assert "key:ten_acme:key_acme_prober blocked" in logged
    secrets = {*world.secrets.values(), *sent, ADMIN, SIGNING_KEY}
    # alone, the part of a key after its public prefix and a token's signature are secret too
    secrets |= {s.rsplit("_", 1)[-1] for s in secrets if s.startswith("mg_")}
    secrets |= {s.rsplit(".", 1)[-1] for s in secrets if s.count(".") == 2}
    leaks = [(s[:12], t[:160]) for s in secrets if len(s) >= 16 for t in texts if s in t]
    assert not leaks, leaks
