"""A flooding client that resends one request as fast as it is refused (issue 15): on a
kept-alive connection, a read that holds the same bytes as the last one, a whole request the
refusal memo refused in the HTTP protocol, is answered without being parsed again
(api/rest/http_protocol.py, ``_replayed``). Each such answer is still counted, metered and
given its own request id, and only while the memo refuses: once it does not, the same bytes
are read and go to the app as any request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.test_protocol_refusals import (
    World,
    _metric,
    _metrics,
    refused_connection,
    request,
    world,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

__all__ = ["world"]  # the module's server, as test_protocol_refusals.py starts it


def _metered(world: World, tenant: str) -> int:
    components = world.server.components
    assert components is not None and components.service.admission is not None
    usage: Any = components.service.admission.memo.usage  # type: ignore[union-attr]
    return sum(
        record.requests
        for record in usage._pending.values()
        if record.tenant_id == tenant and record.status == "rate_limited"
    )


async def test_a_resent_request_is_answered_counted_and_metered_each_time(world: World) -> None:
    secret = world.keys["replay"]
    connection, _ = await refused_connection(world, "replay")
    same = request(secret)
    (first,) = await connection.send(same)  # refused by the protocol, read: kept
    before = await _metrics(world)
    metered = _metered(world, "ten_replay")
    dispatched = len(world.dispatched)
    answers = [(await connection.send(same))[0] for _ in range(5)]  # one read each
    assert [a.status for a in answers] == [429] * 5
    assert len(world.dispatched) == dispatched  # the app never ran
    assert all(a.body == first.body for a in answers)
    ids = {a.headers["x-request-id"] for a in [first, *answers]}
    assert len(ids) == 6  # a new id each: none was sent
    after = await _metrics(world)
    refused = "modelgate_refused_requests_total"

    def mine(labels: dict[str, str]) -> bool:
        return labels["tenant"] == "ten_replay"

    assert _metric(after, refused, mine) - _metric(before, refused, mine) == 5
    assert _metered(world, "ten_replay") - metered == 5
    await connection.close()


async def test_the_same_bytes_go_to_the_app_once_the_memo_no_longer_refuses(
    world: World,
) -> None:
    """The memo notes a refusal for at most a second: past it the resent bytes are parsed
    and the app's full path answers (and notes the key again), then the protocol again."""
    secret = world.keys["reread"]
    connection, _ = await refused_connection(world, "reread")
    same = request(secret)
    await connection.send(same)
    dispatched = len(world.dispatched)
    (replayed,) = await connection.send(same)
    assert replayed.status == 429 and len(world.dispatched) == dispatched
    await asyncio.sleep(1.2)  # the memo's note has lapsed
    # another key refused now, so that the memo is not empty (the protocol then asks it)
    keeper, _ = await refused_connection(world, "keeper")
    await keeper.close()
    dispatched = len(world.dispatched)
    (reread,) = await connection.send(same)
    assert reread.status == 429  # the plan still refuses: the full path said so
    assert len(world.dispatched) == dispatched + 1
    (again,) = await connection.send(same)
    assert again.status == 429 and len(world.dispatched) == dispatched + 1
    # other bytes on the connection are read as any request: another route is the app's
    metadata = f"GET /v2/models/doubler HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {secret}"
    await connection.send(metadata.encode() + b"\r\n\r\n")
    assert len(world.dispatched) == dispatched + 2
    await connection.close()
