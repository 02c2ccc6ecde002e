"""The tenant a gateway names to its node (issue 15): what the gateway sends with each
attempt, how a node checks it, and what a node's fair shedding and admission make of a
gateway's call for a tenant (the gRPC reading, admin key only, is in
tests/api/test_gateway_tenant.py)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from modelgate.api.grpc.on_behalf import gateway_principal
from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import OnBehalf, Plan, Principal
from modelgate.core.admission.admission import Admission
from modelgate.core.gateway.cluster import Cluster
from modelgate.core.gateway.nodes import NodeAnswer, NodeInfo
from modelgate.core.gateway.tenant_metadata import (
    MAX_WEIGHT,
    PRIORITY_KEY,
    TENANT_KEY,
    WEIGHT_KEY,
    on_behalf,
    tenant_metadata,
)
from modelgate.core.serving.ports import Timing
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.testing import ManualClock, StaticDirectory
from tests.unit.admission.test_fair_shedding import shedding
from tests.unit.gateway.test_cluster import INPUTS, MANIFEST

ADMIN = Principal(ADMIN_TENANT, "bootstrap-admin", frozenset({"infer"}), Plan("unlimited"), "admin")


def _for(name: str, weight: float = 50.0, priority: int = 0) -> Principal:
    """The node's view of its gateway's call for tenant ``name``."""
    return Principal(
        ADMIN.tenant_id, ADMIN.subject, ADMIN.scopes, ADMIN.plan, "admin",
        on_behalf=OnBehalf(name, weight, priority),
    )  # fmt: skip


class Client:
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def infer(
        self,
        node: NodeInfo,
        model: str,
        version: int,
        inputs: Mapping[str, Any],
        *,
        timeout_s: float,
        headers: Mapping[str, str],
    ) -> NodeAnswer:
        self.headers.append(dict(headers))
        return NodeAnswer({"y": np.asarray(inputs["x"])}, {})

    async def close(self) -> None:
        return None


async def test_each_attempt_names_the_callers_tenant_weight_and_priority() -> None:
    client = Client()
    node = NodeInfo("a", "a:1", "cpu", models={"m": {1: MANIFEST}})
    cluster = Cluster(
        StaticDirectory([node]), client, rng=random.Random(1), headers=lambda: {"traceparent": "t"}
    )
    await cluster.refresh()
    await cluster.forward("m", 1, INPUTS, Timing(tenant="acme", weight=50.0, priority=3))
    await cluster.forward("m", 1, INPUTS, Timing())  # no tenant (authentication off)
    await cluster.forward("m", 1, INPUTS, Timing(tenant=ADMIN_TENANT))  # the admin key
    assert client.headers == [
        {"traceparent": "t", TENANT_KEY: "acme", WEIGHT_KEY: "50.0", PRIORITY_KEY: "3"},
        {"traceparent": "t"},
        {"traceparent": "t"},
    ]


def test_a_weight_beyond_the_bounds_is_sent_at_the_bound() -> None:
    assert tenant_metadata(Timing(tenant="t", weight=1e12))[WEIGHT_KEY] == repr(MAX_WEIGHT)
    assert float(tenant_metadata(Timing(tenant="t", weight=0.0))[WEIGHT_KEY]) > 0
    sent = tenant_metadata(Timing(tenant="t", weight=2.5, priority=9))
    assert on_behalf(sent[TENANT_KEY], sent[WEIGHT_KEY], sent[PRIORITY_KEY]) == OnBehalf(
        "t", 2.5, 9
    )


def test_missing_weight_and_priority_default() -> None:
    assert on_behalf("t", None, None) == OnBehalf("t", 1.0, 0)


@pytest.mark.parametrize(
    ("tenant_id", "weight", "priority", "entry"),
    [
        ("", "1", "0", TENANT_KEY),
        ("x" * 129, "1", "0", TENANT_KEY),
        ("bad\ttenant", "1", "0", TENANT_KEY),
        (ADMIN_TENANT, "1", "0", TENANT_KEY),
        ("t", "nan", "0", WEIGHT_KEY),
        ("t", "inf", "0", WEIGHT_KEY),
        ("t", "0", "0", WEIGHT_KEY),
        ("t", "-5", "0", WEIGHT_KEY),
        ("t", "1e7", "0", WEIGHT_KEY),
        ("t", "heavy", "0", WEIGHT_KEY),
        ("t", "1", "10", PRIORITY_KEY),
        ("t", "1", "-1", PRIORITY_KEY),
        ("t", "1", "²", PRIORITY_KEY),
        ("t", "1", "", PRIORITY_KEY),
    ],
)
def test_malformed_metadata_is_invalid_argument_naming_the_entry(
    tenant_id: str, weight: str, priority: str, entry: str
) -> None:
    with pytest.raises(ModelgateError) as caught:
        on_behalf(tenant_id, weight, priority)
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert entry in caught.value.message


def test_a_node_sheds_a_gateways_call_as_the_tenant_it_is_for() -> None:
    """Before: every call through the gateway was the admin key's, never shed and one
    share. Now the flooder's calls are shed and the light tenant's served."""
    clock = ManualClock(100.0)
    shed: list[str] = []
    delays = shedding(clock, count_tenant=shed.append)
    for _ in range(100):
        delays.admitted(_for("heavy"))
    for _ in range(5):
        delays.admitted(_for("light"))
    assert ADMIN_TENANT not in delays.shares.shares()
    assert delays.refuses(_for("heavy"))
    assert not delays.refuses(_for("light"))
    assert not delays.refuses(_for("heavy", priority=9))  # the top tier is not shed
    assert not delays.refuses(ADMIN)  # the admin key's own calls as before
    assert shed == ["heavy"]
    # the weight decides the share: heavy at 100x light's weight is within its share
    assert not delays.refuses(_for("heavy", weight=1000.0))


async def test_the_node_charges_no_rate_limit_for_a_gateways_call_and_sheds_by_its_tier() -> None:
    """The gateway charged the tenant's limits; the node's in-flight cap sheds the call by
    the tenant's priority (a low tier at half the cap), not as the admin key's."""
    admission = Admission(MemoryRateLimiter(), max_inflight=4)
    low = _for("t", weight=1.0, priority=0)
    for _ in range(2):
        assert await admission.admit(low, MANIFEST) is None  # no rate limit applied
    with pytest.raises(ModelgateError) as caught:
        await admission.admit(low, MANIFEST)
    assert caught.value.kind is ErrorKind.OVERLOADED
    await admission.admit(_for("top", priority=9), MANIFEST)  # the top tier: all of it
    await admission.admit(ADMIN, MANIFEST)  # the admin key's own calls too
    assert admission.inflight == 4


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def test_the_gateways_principal_keeps_every_field_but_the_tenant_it_is_for() -> None:
    """gateway_principal builds the principal field by field (for speed): a field added to
    Principal and not copied there fails here."""
    admin = Principal(
        ADMIN_TENANT, "bootstrap-admin", frozenset({"infer", "x"}), Plan("unlimited", priority=3),
        "admin", {"k": "v"}, (5.0, 2),
    )  # fmt: skip
    for each in dataclasses.fields(Principal):
        if each.name == "on_behalf":
            continue
        assert getattr(admin, each.name) != each.default, f"give {each.name} a value here"
    metadata = ((TENANT_KEY, "acme"), (WEIGHT_KEY, "2"), ("x-request-id", "r"))
    made = gateway_principal(admin, Context(metadata))
    assert made == dataclasses.replace(admin, on_behalf=OnBehalf("acme", 2.0, 0))
    assert gateway_principal(admin, Context(metadata)) == made  # checked once, then kept
    assert gateway_principal(admin, Context((("x-request-id", "r"),))) is admin
    tenant_key = dataclasses.replace(admin, tenant_id="t1", kind="key", on_behalf=None)
    assert gateway_principal(tenant_key, Context(metadata)) is tenant_key
