"""Credentials become principals, or UNAUTHENTICATED; scopes and tenant models are enforced."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.authorization import can_see, require_model, require_scope
from modelgate.core.access.identity import ApiKeyRecord, Plan, Principal, Scope, Tenant
from modelgate.core.access.keys import IssuedKey, issue_key
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.identity import MemoryIdentityStore

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _store_with_key(
    scopes: tuple[str, ...] = ("infer",), **key_fields: object
) -> tuple[MemoryIdentityStore, IssuedKey]:
    store = MemoryIdentityStore()
    await store.create_plan(Plan(name="free", requests_per_second=5))
    await store.create_tenant(Tenant(id="t1", name="acme", plan="free", created_at=NOW))
    issued = issue_key()
    record = ApiKeyRecord(
        id="k1",
        tenant_id="t1",
        name="ci",
        prefix=issued.prefix,
        key_hash=issued.key_hash,
        scopes=scopes,
        created_at=NOW,
        **key_fields,
    )  # type: ignore[arg-type]
    await store.create_key(record)
    return store, issued


def _auth(store: MemoryIdentityStore, clock: Clock | None = None, **kw: object) -> Authenticator:
    return Authenticator(store, clock=clock or Clock(), now=lambda: NOW, **kw)  # type: ignore[arg-type]


async def test_a_valid_key_becomes_its_tenants_principal() -> None:
    store, issued = await _store_with_key(("infer", "models:read"))
    principal = await _auth(store).authenticate(issued.secret)
    assert principal.tenant_id == "t1" and principal.subject == "k1"
    assert principal.scopes == {"infer", "models:read"}
    assert principal.plan.requests_per_second == 5


@pytest.mark.parametrize(
    ("credential", "fragment"),
    [
        (None, "required"),
        ("", "required"),
        ("not-a-key", "malformed"),
        ("mg_live_aaaaaaaaaaaa_" + "b" * 32, "not valid"),
    ],
)
async def test_missing_malformed_and_unknown_keys_are_refused(
    credential: str | None, fragment: str
) -> None:
    store, _ = await _store_with_key()
    with pytest.raises(ModelgateError) as info:
        await _auth(store).authenticate(credential)
    assert info.value.kind is ErrorKind.UNAUTHENTICATED and fragment in info.value.message


async def test_a_key_with_the_right_prefix_but_wrong_secret_is_refused() -> None:
    store, issued = await _store_with_key()
    forged = issued.secret[:-1] + ("A" if issued.secret[-1] != "A" else "B")
    with pytest.raises(ModelgateError) as info:
        await _auth(store).authenticate(forged)
    assert info.value.kind is ErrorKind.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"revoked_at": NOW - timedelta(seconds=1)}, "revoked"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "expired"),
    ],
)
async def test_revoked_and_expired_keys_are_refused(
    fields: dict[str, object], fragment: str
) -> None:
    store, issued = await _store_with_key(**fields)
    with pytest.raises(ModelgateError) as info:
        await _auth(store).authenticate(issued.secret)
    assert info.value.kind is ErrorKind.UNAUTHENTICATED and fragment in info.value.message


async def test_revocation_takes_effect_when_the_cache_expires() -> None:
    store, issued = await _store_with_key()
    clock = Clock()
    auth = _auth(store, clock, cache_ttl_s=5.0)
    await auth.authenticate(issued.secret)
    await store.revoke_key("k1", NOW - timedelta(seconds=1))
    await auth.authenticate(issued.secret)  # still cached on this replica
    clock.t = 5.1
    with pytest.raises(ModelgateError):
        await auth.authenticate(issued.secret)


async def test_unknown_prefixes_are_cached_so_guessing_does_not_reach_the_store() -> None:
    store, _ = await _store_with_key()
    calls = 0
    find = store.find_key

    async def counting(prefix: str) -> ApiKeyRecord | None:
        nonlocal calls
        calls += 1
        return await find(prefix)

    store.find_key = counting  # type: ignore[method-assign]
    auth = _auth(store)
    for _ in range(50):
        with pytest.raises(ModelgateError):
            await auth.authenticate("mg_live_zzzzzzzzzzzz_" + "y" * 32)
    assert calls == 1


async def test_the_bootstrap_admin_key_has_every_scope() -> None:
    store, _ = await _store_with_key()
    principal = await _auth(store, admin_key="s3cret-admin").authenticate("s3cret-admin")
    assert principal.kind == "admin"
    require_scope(principal, Scope.TENANTS_ADMIN)
    require_scope(principal, Scope.AUDIT_READ)


async def test_a_disabled_tenant_is_forbidden() -> None:
    store, issued = await _store_with_key()
    store._tenants["t1"] = Tenant(id="t1", name="acme", plan="free", created_at=NOW, disabled=True)
    with pytest.raises(ModelgateError) as info:
        await _auth(store).authenticate(issued.secret)
    assert info.value.kind is ErrorKind.PERMISSION_DENIED


def _principal(
    *scopes: str, tenant: str = "t1", models: tuple[str, ...] | None = None
) -> Principal:
    return Principal(tenant, "k1", frozenset(scopes), Plan(name="p", models=models))


MANIFEST = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


@pytest.mark.parametrize(
    ("principal", "version", "allowed"),
    [
        (_principal("infer"), None, True),
        (_principal("infer:m"), None, True),
        (_principal("infer:m@2"), "2", True),
        (_principal("infer:m@2"), "1", False),
        (_principal("infer:other"), None, False),
        (_principal("models:read"), None, False),
        (_principal("infer", models=("other",)), None, False),
        (_principal("infer", models=("m",)), None, True),
    ],
)
def test_infer_scopes_and_plan_models(
    principal: Principal, version: str | None, allowed: bool
) -> None:
    manifest = parse_manifest("m", MANIFEST)
    if allowed:
        require_model(principal, manifest, version, Scope.INFER)
    else:
        with pytest.raises(ModelgateError) as info:
            require_model(principal, manifest, version, Scope.INFER)
        assert info.value.kind is ErrorKind.NOT_FOUND  # existence does not leak


def test_tenant_models_are_invisible_to_other_tenants() -> None:
    private = parse_manifest("m", {**MANIFEST, "tenants": ["t1"]})
    assert can_see(_principal("infer", tenant="t1"), private)
    assert not can_see(_principal("infer", tenant="t2"), private)
    with pytest.raises(ModelgateError) as info:
        require_model(_principal("models:read", tenant="t2"), private, None, Scope.MODELS_READ)
    assert info.value.kind is ErrorKind.NOT_FOUND


def test_missing_scope_is_permission_denied() -> None:
    with pytest.raises(ModelgateError) as info:
        require_scope(_principal("infer"), Scope.MODELS_WRITE)
    assert info.value.kind is ErrorKind.PERMISSION_DENIED


async def test_revoking_a_rotated_key_at_once_is_not_undone_by_the_overlap() -> None:
    from modelgate.core.access.tenancy import TenancyService
    from modelgate.storage.memory.audit import MemoryAuditLog

    store, issued = await _store_with_key(("infer", "keys:admin"))
    tenancy = TenancyService(store, MemoryAuditLog(), now=lambda: NOW)
    admin = await _auth(store, admin_key="a" * 20).authenticate("a" * 20)
    await tenancy.rotate_key(admin, "k1", timedelta(hours=24))
    await tenancy.revoke_key(admin, "k1")
    with pytest.raises(ModelgateError) as info:
        await _auth(store).authenticate(issued.secret)
    assert "revoked" in info.value.message
    trail = [r.action for r in await tenancy.audit.list()]
    assert trail == ["key.create", "key.rotate", "key.revoke"]


class _SlowStore(MemoryIdentityStore):
    """Counts key look-ups; each takes a few loop turns, as a database's does."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def find_key(self, prefix: str) -> ApiKeyRecord | None:
        self.lookups += 1
        for _ in range(5):
            await asyncio.sleep(0)
        return await super().find_key(prefix)


async def test_an_expired_key_is_looked_up_once_however_many_requests_wait_for_it() -> None:
    """When a busy key's cache entry expires, the requests in flight wait for one look-up
    instead of each querying the store (a 100 ms stall of a busy replica, every TTL)."""
    store = _SlowStore()
    await store.create_plan(Plan(name="free"))
    await store.create_tenant(Tenant(id="t1", name="acme", plan="free", created_at=NOW))
    issued = issue_key()
    record = ApiKeyRecord(
        id="k1", tenant_id="t1", name="ci", prefix=issued.prefix,
        key_hash=issued.key_hash, scopes=("infer",), created_at=NOW,
    )  # fmt: skip
    await store.create_key(record)
    clock = Clock()
    auth = _auth(store, clock, cache_ttl_s=5.0)
    first = await asyncio.gather(*(auth.authenticate(issued.secret) for _ in range(64)))
    assert store.lookups == 1 and {p.subject for p in first} == {"k1"}
    clock.t = 6.0  # the entry expired
    # one waiter goes away: the look-up the others wait for goes on
    gone = asyncio.ensure_future(auth.authenticate(issued.secret))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(auth.authenticate(issued.secret)) for _ in range(63)]
    gone.cancel()
    again = await asyncio.gather(*waiting)
    assert store.lookups == 2 and {p.subject for p in again} == {"k1"}
    assert gone.cancelled()


async def test_a_failed_look_up_fails_every_waiter_and_the_next_request_tries_again() -> None:
    store, issued = await _store_with_key()
    calls = 0
    find_key = store.find_key

    async def failing(prefix: str) -> ApiKeyRecord | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the database is away")
        return await find_key(prefix)

    store.find_key = failing  # type: ignore[method-assign]
    auth = _auth(store)
    results = await asyncio.gather(
        *(auth.authenticate(issued.secret) for _ in range(8)), return_exceptions=True
    )
    assert all(isinstance(r, ModelgateError) and r.kind is ErrorKind.UNAVAILABLE for r in results)
    assert calls == 1
    assert (await auth.authenticate(issued.secret)).subject == "k1"
    assert calls == 2


async def test_a_key_is_refused_the_moment_its_expiry_passes_even_from_a_fresh_entry() -> None:
    """The entry answers for ``cache_ttl_s``, but expiry and revocation times are checked
    at use time: no request runs with a key past them, cached or not."""
    store, issued = await _store_with_key(expires_at=NOW + timedelta(seconds=1))
    wall = [NOW]
    auth = Authenticator(store, clock=Clock(), now=lambda: wall[0])
    assert (await auth.authenticate(issued.secret)).subject == "k1"
    wall[0] = NOW + timedelta(seconds=1)
    with pytest.raises(ModelgateError, match="expired"):
        await auth.authenticate(issued.secret)


async def test_a_key_revoked_ahead_of_time_stops_when_that_time_comes() -> None:
    store, issued = await _store_with_key(revoked_at=NOW + timedelta(minutes=5))
    wall = [NOW]
    auth = Authenticator(store, clock=Clock(), now=lambda: wall[0])
    await auth.authenticate(issued.secret)
    wall[0] = NOW + timedelta(minutes=5)
    with pytest.raises(ModelgateError, match="revoked"):
        await auth.authenticate(issued.secret)


@pytest.mark.parametrize("stored", ["upper", "short", "not hex"])
async def test_a_stored_hash_that_is_not_a_lowercase_sha256_never_matches(stored: str) -> None:
    """As when the hex strings were compared: only the exact stored form matches."""
    store, issued = await _store_with_key()
    key_hash = {
        "upper": issued.key_hash.upper(),
        "short": issued.key_hash[:-2],
        "not hex": "zz" * 32,
    }[stored]
    store._keys["k1"] = replace(store._keys["k1"], key_hash=key_hash)
    with pytest.raises(ModelgateError, match="not valid"):
        await _auth(store).authenticate(issued.secret)


async def test_a_tenant_disabled_after_the_entry_was_made_is_seen_when_it_is_refreshed() -> None:
    store, issued = await _store_with_key()
    clock = Clock()
    auth = _auth(store, clock, cache_ttl_s=5.0)
    first = await auth.authenticate(issued.secret)
    assert await auth.authenticate(issued.secret) is first  # made once per look-up
    store._tenants["t1"] = Tenant(id="t1", name="acme", plan="free", created_at=NOW, disabled=True)
    clock.t = 10.0  # past the TTL: the store is asked again
    with pytest.raises(ModelgateError) as info:
        await auth.authenticate(issued.secret)
    assert info.value.kind is ErrorKind.PERMISSION_DENIED
