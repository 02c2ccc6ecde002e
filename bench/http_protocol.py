"""What modelgate's limited httptools protocol (api/rest/http_protocol.py) costs a request,
against uvicorn's plain one with and without its X-Forwarded-For middleware (the old
default), with no socket: uvicorn's protocol is fed a credit-risk request per iteration on
one kept-alive connection and a trivial ASGI app answers it (and, as modelgate's app does,
notes the caller it authenticated in the scope). With issue 15's refusals answered by the
protocol (api/rest/early_refusals.py), also what they cost a served request: with the memo
empty (nobody refused) and with another caller in it.

    taskset -c 1 .venv/bin/python -m bench.http_protocol

Prints µs of process CPU time per request (CPU time, not wall time, so that other processes
on a shared machine count less), the median of alternating rounds and the median of their
paired differences.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.workloads import AUTHORIZATION, credit_json
from modelgate.api.credentials import PRINCIPAL
from modelgate.api.rest.http_protocol import limited_protocol
from modelgate.core.access.identity import Plan, Principal

BODY = credit_json(1)
REQUEST = (
    b"POST /v2/models/credit-risk/infer HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n"
    b"authorization: " + AUTHORIZATION.encode() + b"\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


_CALLER = Principal("tenant", "key", frozenset({"infer"}), Plan(name="bench"))


async def _app(scope: Any, receive: Any, send: Any) -> None:
    scope[PRINCIPAL] = _CALLER  # whom modelgate's app found: the protocol remembers it
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


class _Transport:
    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: Any) -> None:  # a head and its body (api/rest/response_writes.py)
        pass

    def close(self) -> None:
        self.closing = True

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _per_request(protocol_class: type[Any], requests: int, proxy_headers: bool) -> float:
    config = uvicorn.Config(
        _app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=proxy_headers,
        forwarded_allow_ips="127.0.0.1",
    )
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(_Transport())

    async def one() -> None:
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs
        await asyncio.sleep(0)  # and its answer completes

    for _ in range(200):
        await one()
    start = time.process_time()
    for _ in range(requests):
        await one()
    return (time.process_time() - start) / requests * 1e6


async def main(rounds: int = 41, requests: int = 10_000) -> None:
    limited = limited_protocol(max_header_bytes=16384, header_timeout_s=10, max_connections=4096)
    variants = {
        "old default: httptools + X-Forwarded-For middleware": (HttpToolsProtocol, True),
        "httptools": (HttpToolsProtocol, False),
        "limited (new default)": (limited, False),
        **_refusal_variants(),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            protocol_class, proxy = variants[name]
            results[name].append(await _per_request(protocol_class, requests, proxy))
    for name, values in results.items():
        print(f"{name}: {statistics.median(values):.2f} µs (min {min(values):.2f})")
    new = results["limited (new default)"]
    for other in names[:2]:
        paired = statistics.median(a - b for a, b in zip(new, results[other], strict=True))
        print(f"limited - {other}: {paired:+.2f} µs (median of paired rounds)")
    for name in names[3:]:
        paired = statistics.median(a - b for a, b in zip(results[name], new, strict=True))
        print(f"{name} - limited: {paired:+.2f} µs (median of paired rounds)")


def _refusal_variants() -> dict[str, tuple[type[Any], bool]]:
    """The limited protocol answering refusal-memo refusals itself, the memo empty and with
    another caller noted (none before issue 15's change)."""
    try:
        from modelgate.api.rest.early_refusals import EarlyRefusals
    except ImportError:
        return {}
    from modelgate.core.admission.refusals import RefusalMemo
    from modelgate.errors import ErrorKind, ModelgateError

    busy = RefusalMemo(max_ttl_s=3600)
    other = Principal("other", "key", frozenset({"infer"}), Plan(name="bench"))
    refused = ModelgateError(ErrorKind.RATE_LIMITED, "rate limit exceeded", retry_after=3600)
    busy.remember(
        other, refused, "rate_limit", asked_at=time.monotonic(), certain_s=3600, reset_s=3600
    )
    return {
        f"limited + memo refusals ({label})": (
            limited_protocol(
                max_header_bytes=16384,
                header_timeout_s=10,
                max_connections=4096,
                refusals=EarlyRefusals(memo),
            ),
            False,
        )
        for label, memo in (("nobody refused", RefusalMemo()), ("another caller refused", busy))
    }


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
