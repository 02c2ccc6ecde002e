"""Cross-tenant access to every route that carries an id (models, tenants, keys, usage,
quotas, payload-logging consent, data subjects; REST and gRPC) answers exactly like an id
that does not exist, and no list shows another tenant's records."""

from __future__ import annotations

from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from tests.api.attacks.world import (
    ROW,
    Answer,
    V,
    World,
    assert_nothing_of_globex,
    call_grpc,
    call_rest,
    fill,
    infer_request,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: (case, the kind of id, the request); REST: (method, path, body); gRPC: ("grpc", rpc, version)
CROSS_TENANT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("oip-infer", "model", ("POST", f"/v2/models/{V}/infer", ROW)),
    ("oip-version-infer", "model", ("POST", f"/v2/models/{V}/versions/1/infer", ROW)),
    ("oip-metadata", "model", ("GET", f"/v2/models/{V}", None)),
    ("oip-version-metadata", "model", ("GET", f"/v2/models/{V}/versions/1", None)),
    ("oip-ready", "model", ("GET", f"/v2/models/{V}/ready", None)),
    ("oip-version-ready", "model", ("GET", f"/v2/models/{V}/versions/1/ready", None)),
    ("oip-config", "model", ("GET", f"/v2/models/{V}/config", None)),
    ("oip-stats", "model", ("GET", f"/v2/models/{V}/stats", None)),
    ("oip-version-stats", "model", ("GET", f"/v2/models/{V}/versions/1/stats", None)),
    ("oip-load", "model", ("POST", f"/v2/repository/models/{V}/load", None)),
    ("oip-unload", "model", ("POST", f"/v2/repository/models/{V}/unload", None)),
    ("openai-model", "model", ("GET", f"/v1/models/{V}", None)),
    ("openai-embeddings", "model", ("POST", "/v1/embeddings", {"model": V, "input": "x"})),
    ("admin-list-keys", "tenant", ("GET", f"/admin/tenants/{V}/keys", None)),
    ("admin-create-key", "tenant", ("POST", f"/admin/tenants/{V}/keys", {"name": "x"})),
    ("admin-revoke-key", "key", ("POST", f"/admin/keys/{V}/revoke", None)),
    ("admin-rotate-key", "key", ("POST", f"/admin/keys/{V}/rotate", {"overlap_hours": 1})),
    ("admin-usage-tenant", "tenant", ("GET", f"/admin/usage?tenant={V}", None)),
    ("admin-usage-key", "key", ("GET", f"/admin/usage?key={V}", None)),
    ("admin-usage-model", "model", ("GET", f"/admin/usage?model={V}&group_by=model", None)),
    ("admin-quotas", "tenant", ("GET", f"/admin/tenants/{V}/quotas", None)),
    ("admin-payload-consent", "tenant", ("GET", f"/admin/tenants/{V}/payload-logging", None)),
    (
        "admin-set-payload-consent",
        "tenant",
        ("PUT", f"/admin/tenants/{V}/payload-logging", {"enabled": False}),
    ),
    ("admin-subject-export", "tenant", ("GET", f"/admin/subjects/s-1/export?tenant={V}", None)),
    ("admin-subject-erase", "tenant", ("DELETE", f"/admin/subjects/s-1?tenant={V}", None)),
    ("grpc-metadata", "model", ("grpc", "ModelMetadata", "")),
    ("grpc-version-metadata", "model", ("grpc", "ModelMetadata", "1")),
    ("grpc-infer", "model", ("grpc", "ModelInfer", "")),
    ("grpc-version-infer", "model", ("grpc", "ModelInfer", "1")),
    ("grpc-ready", "model", ("grpc", "ModelReady", "")),
    ("grpc-config", "model", ("grpc", "ModelConfig", "")),
    ("grpc-stats", "model", ("grpc", "ModelStatistics", "")),
    ("grpc-load", "model", ("grpc", "RepositoryModelLoad", "")),
    ("grpc-unload", "model", ("grpc", "RepositoryModelUnload", "")),
]
FOREIGN = {"model": "globex-only", "tenant": "ten_globex", "key": "key_globex_ops"}
MISSING = {"model": "no-such-model", "tenant": "ten_nobody", "key": "key_nobody"}
#: routes that filter rather than address: another tenant's id finds nothing (200, no rows)
FILTERS = {"admin-usage-key", "admin-usage-model"}


def _grpc_model_request(rpc: str, name: str, version: str) -> Any:
    if rpc == "ModelInfer":
        return infer_request(name, version)
    if rpc.startswith("Repository"):
        return getattr(service_pb2, f"{rpc}Request")(model_name=name)
    return getattr(service_pb2, f"{rpc}Request")(name=name, version=version)


async def _cross(world: World, how: tuple[Any, ...], ident: str, who: str) -> Answer:
    if how[0] == "grpc":
        request = _grpc_model_request(how[1], ident, how[2])
        return await call_grpc(world, how[1], request, world.grpc_auth(who))
    method, path, body = how
    return await call_rest(world, method, fill(path, ident), world.auth(who), fill(body, ident))


@pytest.mark.parametrize(("case", "kind", "how"), CROSS_TENANT, ids=[c[0] for c in CROSS_TENANT])
async def test_another_tenants_id_answers_exactly_like_a_missing_one(
    world: World, case: str, kind: str, how: tuple[Any, ...]
) -> None:
    foreign, missing = FOREIGN[kind], MISSING[kind]

    taken = await _cross(world, how, foreign, "acme_ops")
    absent = await _cross(world, how, missing, "acme_ops")

    expected = 200 if case in FILTERS else 404
    assert (taken.status, absent.status) == (expected, expected), (taken.text, absent.text)
    assert taken.text.replace(foreign, V) == absent.text.replace(missing, V)
    assert_nothing_of_globex(world, taken.text.replace(foreign, V))
    if case in FILTERS:
        assert taken.json()["rows"] == []


# The owner's answers, as a control: the 404s above are about who asks, not about ids that
# were never there. Writes are left out (and embeddings: globex's model embeds nothing).
_WRITES = {"load", "unload", "create-key", "revoke-key", "rotate-key", "embeddings"}
_READS = [c for c in CROSS_TENANT if c[0].split("-", 1)[1] not in _WRITES]


@pytest.mark.parametrize(("case", "kind", "how"), _READS, ids=[c[0] for c in _READS])
async def test_the_foreign_ids_answer_their_owner(
    world: World, case: str, kind: str, how: tuple[Any, ...]
) -> None:
    answer = await _cross(world, how, FOREIGN[kind], "globex_ops")
    assert answer.status == 200, answer.text
    if case in FILTERS:
        assert answer.json()["rows"]


#: every route that lists things
LISTS: list[tuple[str, tuple[Any, ...]]] = [
    ("admin-tenants", ("GET", "/admin/tenants", None)),
    ("admin-own-keys", ("GET", "/admin/tenants/ten_acme/keys", None)),
    ("admin-audit", ("GET", "/admin/audit?limit=1000", None)),
    ("admin-usage", ("GET", "/admin/usage?group_by=tenant,key,model,version", None)),
    ("openai-models", ("GET", "/v1/models", None)),
    ("oip-index", ("POST", "/v2/repository/index", None)),
    ("oip-all-stats", ("GET", "/v2/models/stats", None)),
    ("grpc-index", ("grpc", "RepositoryIndex")),
    ("grpc-all-stats", ("grpc", "ModelStatistics")),
]


@pytest.mark.parametrize(("what", "how"), LISTS, ids=[w for w, _ in LISTS])
async def test_lists_show_nothing_of_another_tenant(
    world: World, what: str, how: tuple[Any, ...]
) -> None:
    if how[0] == "grpc":
        request = getattr(service_pb2, f"{how[1]}Request")()
        answer = await call_grpc(world, how[1], request, world.grpc_auth("acme_ops"))
    else:
        answer = await _cross(world, how, "", "acme_ops")
    assert answer.status == 200, answer.text
    assert "ten_acme" in answer.text or "acme-only" in answer.text  # acme's own are there
    assert_nothing_of_globex(world, answer.text)
