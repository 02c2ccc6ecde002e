"""The IdentityStore contract, on every backend (memory, SQLite, PostgreSQL), then what the
SQL backends promise beyond it (see ``SqlIdentityStore``'s docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.core.access.ports import IdentityStore
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.identity import MemoryIdentityStore
from modelgate.storage.sql.identity import SqlIdentityStore

from .conftest import WITH_MEMORY, store_factory

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
SQL = pytest.mark.parametrize("backend", ["sqlite", "postgres"])


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_store(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[IdentityStore]]:
    """A factory of empty stores (one per Hypothesis example); SQL ones share one database."""
    return store_factory(backend, request, MemoryIdentityStore, SqlIdentityStore)


@pytest.fixture
async def store(fresh_store: Callable[[], Awaitable[IdentityStore]]) -> IdentityStore:
    return await fresh_store()


def tenant(
    id: str = "t1",
    name: str = "Acme",
    plan: str = "free",
    created_at: datetime = T0,
    disabled: bool = False,
) -> Tenant:
    return Tenant(id=id, name=name, plan=plan, created_at=created_at, disabled=disabled)


def key(
    id: str = "k1", tenant_id: str = "t1", prefix: str = "mg_live_aaaaaaaaaaaa"
) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=id,
        tenant_id=tenant_id,
        name=f"key {id}",
        prefix=prefix,
        key_hash="ab" * 32,
        scopes=("infer", "models:read"),
        created_at=T0,
    )


async def with_tenant(store: IdentityStore, *tenants: Tenant) -> None:
    await store.create_plan(Plan(name="free"))
    for each in tenants or (tenant(),):
        await store.create_tenant(each)


def refused(kind: ErrorKind) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, ModelgateError) and exc.kind is kind


# -- the port's contract ------------------------------------------------------------------


async def test_plans_round_trip_with_every_field(store: IdentityStore) -> None:
    full = Plan(
        name="pro",
        requests_per_second=12.5,
        burst=40,
        requests_per_day=100_000,
        requests_per_month=3_000_000_000,
        rows_per_day=1_000_000,
        rows_per_month=30_000_000,
        tokens_per_day=5_000_000,
        tokens_per_month=150_000_000,
        max_concurrency=8,
        max_batch_size=64,
        priority=10,
        models=("credit-risk", "all-MiniLM-L6-v2"),
    )
    bare = Plan(name="free")
    await store.create_plan(full)
    await store.create_plan(bare)

    assert await store.get_plan("pro") == full
    assert await store.get_plan("free") == bare
    assert list(await store.list_plans()) == [bare, full]


async def test_a_plan_with_an_empty_model_list_allows_no_model(store: IdentityStore) -> None:
    await store.create_plan(Plan(name="closed", models=()))
    found = await store.get_plan("closed")
    assert found is not None and found.models == ()


async def test_missing_records_are_none_and_no_ops(store: IdentityStore) -> None:
    assert await store.get_plan("nope") is None
    assert await store.get_tenant("nope") is None
    assert await store.find_key("mg_live_nope") is None
    assert list(await store.list_keys("nope")) == []
    assert await store.revoke_key("nope", T0) is False
    assert await store.touch_key("nope", T0) is False
    assert list(await store.list_plans()) == []
    assert list(await store.list_tenants()) == []


async def test_a_duplicate_plan_is_refused(store: IdentityStore) -> None:
    await store.create_plan(Plan(name="free", priority=1))
    with pytest.raises(ModelgateError) as caught:
        await store.create_plan(Plan(name="free", priority=2))
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert await store.get_plan("free") == Plan(name="free", priority=1)


async def test_tenants_round_trip_and_list_in_creation_order(store: IdentityStore) -> None:
    later = tenant("t2", "Globex", created_at=T0 + timedelta(seconds=1), disabled=True)
    earlier = tenant("t1", "Acme")
    await with_tenant(store, later, earlier)

    assert await store.get_tenant("t2") == later
    assert list(await store.list_tenants()) == [earlier, later]


@pytest.mark.parametrize(
    "duplicate", [tenant("t1", "Other"), tenant("t9", "Acme")], ids=["same-id", "same-name"]
)
async def test_a_duplicate_tenant_id_or_name_is_refused(
    store: IdentityStore, duplicate: Tenant
) -> None:
    await with_tenant(store, tenant("t1", "Acme"))
    with pytest.raises(ModelgateError) as caught:
        await store.create_tenant(duplicate)
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert list(await store.list_tenants()) == [tenant("t1", "Acme")]


async def test_racing_creations_of_one_tenant_name_admit_exactly_one(store: IdentityStore) -> None:
    await store.create_plan(Plan(name="free"))
    results = await asyncio.gather(
        *(store.create_tenant(tenant(f"t{i}", "Same name")) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(result is None for result in results) == 1
    assert all(r is None or refused(ErrorKind.FAILED_PRECONDITION)(r) for r in results)
    assert len(await store.list_tenants()) == 1


async def test_keys_are_found_by_prefix_and_listed_per_tenant(store: IdentityStore) -> None:
    await with_tenant(store, tenant("t1", "Acme"), tenant("t2", "Globex"))
    first = key("k1", "t1", "mg_live_aaaaaaaaaaaa")
    second = ApiKeyRecord(
        id="k2",
        tenant_id="t1",
        name="batch jobs",
        prefix="mg_live_bbbbbbbbbbbb",
        key_hash="cd" * 32,
        scopes=("infer:credit-risk@2",),
        created_at=T0 + timedelta(minutes=1),
        expires_at=T0 + timedelta(days=90),
    )
    other = key("k3", "t2", "mg_live_cccccccccccc")
    for each in (second, first, other):
        await store.create_key(each)

    assert await store.find_key("mg_live_bbbbbbbbbbbb") == second
    assert list(await store.list_keys("t1")) == [first, second]
    assert list(await store.list_keys("t2")) == [other]


async def test_a_prefix_is_matched_exactly_never_as_a_pattern(store: IdentityStore) -> None:
    await with_tenant(store)
    await store.create_key(key())
    for pattern in ("mg_live_%", "mg_live____________", "MG_LIVE_AAAAAAAAAAAA", "mg_live_aaa"):
        assert await store.find_key(pattern) is None


@pytest.mark.parametrize(
    "duplicate",
    [key("k1", prefix="mg_live_zzzzzzzzzzzz"), key("k2", prefix="mg_live_aaaaaaaaaaaa")],
    ids=["same-id", "same-prefix"],
)
async def test_a_duplicate_key_id_or_prefix_is_refused(
    store: IdentityStore, duplicate: ApiKeyRecord
) -> None:
    await with_tenant(store)
    await store.create_key(key("k1", prefix="mg_live_aaaaaaaaaaaa"))
    with pytest.raises(ModelgateError) as caught:
        await store.create_key(duplicate)
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert list(await store.list_keys("t1")) == [key("k1", prefix="mg_live_aaaaaaaaaaaa")]


async def test_revoke_and_touch_change_only_their_own_key(store: IdentityStore) -> None:
    await with_tenant(store)
    await store.create_key(key("k1", prefix="mg_live_aaaaaaaaaaaa"))
    await store.create_key(key("k2", prefix="mg_live_bbbbbbbbbbbb"))

    assert await store.revoke_key("k1", T0 + timedelta(hours=1)) is True
    assert await store.touch_key("k2", T0 + timedelta(hours=2)) is True

    revoked = await store.find_key("mg_live_aaaaaaaaaaaa")
    touched = await store.find_key("mg_live_bbbbbbbbbbbb")
    assert revoked is not None and touched is not None
    assert (revoked.revoked_at, revoked.last_used_at) == (T0 + timedelta(hours=1), None)
    assert (touched.revoked_at, touched.last_used_at) == (None, T0 + timedelta(hours=2))


# Text that has broken stores before: quotes, SQL, LIKE wildcards, backslashes, control and
# bidi characters, astral-plane emoji, combining marks, surrounding spaces, the empty string.
NASTY = [
    "'; DROP TABLE tenants; --",
    'Robert"); DROP TABLE plans;--',
    "' OR '1'='1",
    "%",
    "_",
    "\\",
    "\\x00",
    "$$; SELECT pg_sleep(10); $$",
    "\u202etxt.exe",
    "\U0001f600\u200d\U0001f4bb",
    "e\u0301",
    "\t tab and spaces ",
    "line\nbreak\r\n",
    "",
]
# Every character except NUL (refused by the SQL backends) and lone surrogates (which have no
# UTF-8 form: the utf-8 codec leaves them out).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan_name=st.one_of(st.sampled_from(NASTY), TEXT),
    tenant_name=st.one_of(st.sampled_from(NASTY), TEXT),
    key_name=st.one_of(st.sampled_from(NASTY), TEXT),
    scope=st.one_of(st.sampled_from(NASTY), TEXT),
)
async def test_any_text_round_trips_exactly(
    fresh_store: Callable[[], Awaitable[IdentityStore]],
    plan_name: str,
    tenant_name: str,
    key_name: str,
    scope: str,
) -> None:
    store = await fresh_store()
    plan = Plan(name=plan_name, models=(scope, plan_name))
    stored_tenant = Tenant(id=tenant_name, name=tenant_name, plan=plan_name, created_at=T0)
    stored_key = ApiKeyRecord(
        id=key_name,
        tenant_id=tenant_name,
        name=key_name,
        prefix=key_name,
        key_hash=scope,
        scopes=(scope, key_name),
        created_at=T0,
    )
    await store.create_plan(plan)
    await store.create_tenant(stored_tenant)
    await store.create_key(stored_key)

    assert await store.get_plan(plan_name) == plan
    assert await store.get_tenant(tenant_name) == stored_tenant
    assert await store.find_key(key_name) == stored_key
    assert list(await store.list_plans()) == [plan]
    assert list(await store.list_tenants()) == [stored_tenant]
    assert list(await store.list_keys(tenant_name)) == [stored_key]


# -- what the SQL backends promise beyond the port -----------------------------------------


@SQL
async def test_a_tenant_needs_an_existing_plan(store: IdentityStore) -> None:
    with pytest.raises(ModelgateError) as caught:
        await store.create_tenant(tenant(plan="gold"))
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert "gold" in caught.value.message


@SQL
async def test_a_key_needs_an_existing_tenant(store: IdentityStore) -> None:
    await store.create_plan(Plan(name="free"))
    with pytest.raises(ModelgateError) as caught:
        await store.create_key(key(tenant_id="ghost"))
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert await store.find_key(key().prefix) is None


@SQL
async def test_times_come_back_as_the_same_instant_in_utc(store: IdentityStore) -> None:
    created = datetime(2025, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=-7)))
    await with_tenant(store, tenant(created_at=created))
    found = await store.get_tenant("t1")
    assert found is not None
    assert found.created_at == created
    assert found.created_at.tzinfo is UTC


@SQL
async def test_a_naive_time_is_refused(store: IdentityStore) -> None:
    await store.create_plan(Plan(name="free"))
    with pytest.raises(ModelgateError) as caught:
        await store.create_tenant(tenant(created_at=datetime(2025, 1, 1)))
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert list(await store.list_tenants()) == []


@SQL
@pytest.mark.parametrize("bad", ["nul\x00inside", "x" * 257, "lone \udc80 surrogate"])
async def test_text_no_backend_can_hold_is_refused_and_never_found(
    store: IdentityStore, bad: str
) -> None:
    await store.create_plan(Plan(name="free"))
    with pytest.raises(ModelgateError) as caught:
        await store.create_tenant(tenant(name=bad))
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    assert await store.get_tenant(bad) is None
    assert await store.find_key(bad) is None
    assert await store.revoke_key(bad, T0) is False
    assert list(await store.list_keys(bad)) == []


@SQL
async def test_a_revocation_can_be_brought_forward_but_never_postponed(
    store: IdentityStore,
) -> None:
    await with_tenant(store)
    await store.create_key(key())
    rotated_until = T0 + timedelta(hours=24)
    assert await store.revoke_key("k1", rotated_until) is True  # rotation: valid one more day
    assert await store.revoke_key("k1", T0 + timedelta(hours=1)) is True  # revoked now
    assert await store.revoke_key("k1", T0 + timedelta(hours=48)) is True  # a late rotation
    found = await store.find_key(key().prefix)
    assert found is not None and found.revoked_at == T0 + timedelta(hours=1)


@SQL
async def test_last_used_only_moves_forward(store: IdentityStore) -> None:
    await with_tenant(store)
    await store.create_key(key())
    assert await store.touch_key("k1", T0 + timedelta(seconds=10)) is True
    assert await store.touch_key("k1", T0 + timedelta(seconds=5)) is True  # a slower replica
    found = await store.find_key(key().prefix)
    assert found is not None and found.last_used_at == T0 + timedelta(seconds=10)


async def test_get_key_by_id(store: IdentityStore) -> None:
    await store.create_plan(Plan(name="p"))
    await store.create_tenant(Tenant(id="t1", name="one", plan="p", created_at=T0))
    record = ApiKeyRecord(
        id="k1",
        tenant_id="t1",
        name="ci",
        prefix="mg_live_dddddddddddd",
        key_hash="ab" * 32,
        scopes=("infer",),
        created_at=T0,
    )
    await store.create_key(record)
    assert await store.get_key("k1") == record
    assert await store.get_key("nope") is None
    assert await store.get_key("x" * 1000) is None
