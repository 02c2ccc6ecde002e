"""A refusal the HTTP protocol answers itself (api/rest/early_refusals.py): a connection's
known caller, refused from the refusal memo, its request's bytes fed to the protocol as one
read, with the answer written to a transport that keeps nothing. What is left out is the
kernel's part (the read and the write, about as much again on the VMs measured): the
``refusal-cost`` row of ``python -m bench.flood`` measures it end to end."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from bench.inprocess.timing import Call


class _Transport:
    """What the protocol uses of an asyncio transport; writes are dropped."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, data: Any) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("a refused connection was closed")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def available() -> bool:
    """Whether this tree answers refusals in the protocol (not before issue 15's change)."""
    return importlib.util.find_spec("modelgate.api.rest.early_refusals") is not None


async def protocol_refusal(
    components: Any, secret: str, path: str, body: bytes
) -> tuple[Call, list[int]]:
    """One refused request through the protocol of a kept-alive connection whose previous
    request the app authenticated as ``secret``'s caller; and how many were answered by the
    protocol and by the app, as the calls go."""
    import uvicorn
    from uvicorn.server import ServerState

    from modelgate.api.credentials import PRINCIPAL, credential_from
    from modelgate.api.rest.early_refusals import EarlyRefusals
    from modelgate.api.rest.http_protocol import limited_protocol

    admission = components.service.admission
    refusals = EarlyRefusals(
        admission.memo,
        answers=components.metrics.http_answers("oip", 429),
        abuse=components.abuse,
        overload=admission.overload,
        requests=components.requests,
    )
    protocol_class = limited_protocol(
        max_header_bytes=16384, header_timeout_s=10, max_connections=4096, refusals=refusals
    )
    config = uvicorn.Config(
        components.rest_app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
    )
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    authorization = f"Bearer {secret}".encode()
    credential = credential_from(authorization.decode(), None)
    principal = await components.authenticator.authenticate(credential)
    protocol._previous = {  # what the app leaves of the connection's previous request
        PRINCIPAL: principal,
        "headers": [(b"authorization", authorization)],
        "client": ("127.0.0.1", 50000),
    }
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n".encode()
        + b"authorization: "
        + authorization
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    async def call() -> None:
        before = transport.written
        protocol.data_received(request)
        if transport.written > before:
            counts[0] += 1
            return
        # the app's: about once a second, when the memo's note or the abuse guard's trust
        # of the key runs out (the app refreshes both), as in a server
        counts[1] += 1
        for _ in range(100):
            await asyncio.sleep(0)
            if transport.written > before:
                return
        raise AssertionError("the refused request got no answer")

    counts = [0, 0]  # answered by the protocol, by the app
    return call, counts
