"""Payload logging in the core: the consent matrix, the listener (no I/O on the request
path, nothing lost when the store fails for a while), retention with an injected clock,
and the use cases (consent settings, subject export and erasure, datasets, rotation)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from modelgate.api.openai.embeddings import OpenAIHandlers
from modelgate.core.access.audit import AuditRecord
from modelgate.core.access.identity import Plan, Principal, Tenant
from modelgate.core.governance.consent import (
    LoggingTerms,
    logging_terms,
    request_allows,
    subject_of,
)
from modelgate.core.governance.payload_logger import PayloadLogger
from modelgate.core.governance.payloads import open_payload
from modelgate.core.governance.ports import PayloadConsent, PayloadQuery, PayloadRecord
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.governance.redaction import pseudonym
from modelgate.core.serving.manifest import ModelManifest, PayloadLoggingSpec, parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError, invalid
from modelgate.storage.crypto import AesGcmCipher
from modelgate.storage.memory.audit import MemoryAuditLog
from modelgate.storage.memory.identity import MemoryIdentityStore
from modelgate.storage.memory.payloads import MemoryPayloadStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PSEUDONYM_KEY = b"p" * 32
POLICY = {"enabled": True, "purpose": "quality review", "retention_days": 30}


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


def pseudonymize(subject: str) -> str:
    return pseudonym(PSEUDONYM_KEY, subject)


def manifest(policy: dict[str, Any] | None = POLICY) -> ModelManifest:
    data: dict[str, Any] = {
        "runtime": "python",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 2]}],
    }
    if policy is not None:
        data["payload_logging"] = policy
    return parse_manifest("reviews", data)


def principal(tenant: str = "ten_a", kind: str = "key") -> Principal:
    return Principal(tenant, "key_1", frozenset({"infer"}), Plan("p"), kind)


def inference(
    parameters: dict[str, Any] | None = None,
    *,
    model: ModelManifest | None = None,
    who: Principal | None = None,
    text: str = "mail me at alice@example.com",
) -> CompletedInference:
    data = np.empty(1, dtype=object)
    data[:] = [text.encode()]
    request = InferenceRequest(
        "reviews", None, [Tensor("text", "BYTES", data)], id="req-1", parameters=parameters or {}
    )
    scores = np.array([[0.25, np.nan]], dtype=np.float32)
    response = InferenceResponse("reviews", "3", [Tensor("score", "FP32", scores)])
    return CompletedInference(
        who if who is not None else principal(),
        request,
        response,
        model if model is not None else manifest(),
        {"text": data},
    )


def consent(tenant: str = "ten_a", **terms: Any) -> PayloadConsent:
    return PayloadConsent(tenant, True, updated_at=T0, **terms)


def logger(store: Any = None, clock: Clock | None = None, **options: Any) -> PayloadLogger:
    return PayloadLogger(
        store if store is not None else MemoryPayloadStore(),
        AesGcmCipher({"k1": os.urandom(32)}),
        pseudonymize,
        clock=clock or Clock(),
        **options,
    )


# -- the consent matrix --------------------------------------------------------------------
MODELS = {"no section": None, "disabled": {**POLICY, "enabled": False}, "enabled": POLICY}
TENANTS = {
    "no setting": None,
    "opted out": PayloadConsent("ten_a", False),
    "opted in": consent(),
}
REQUESTS: dict[str, dict[str, Any]] = {
    "silent": {},
    "other parameters": {"binary_data_output": True, "subject": "u1"},
    "consent true": {"consent": True},
    "consent 'true'": {"consent": "true"},
    "consent 'TRUE'": {"consent": "TRUE"},
    "log_payload true": {"log_payload": True},
    "consent false": {"consent": False},
    "consent 'false'": {"consent": "false"},
    "consent 'no'": {"consent": "no"},
    "consent 0": {"consent": 0},
    "consent 1": {"consent": 1},
    "log_payload false": {"log_payload": False},
    "one true, one false": {"consent": True, "log_payload": False},
}
WITHHELD = {
    "consent false",
    "consent 'false'",
    "consent 'no'",
    "consent 0",
    "consent 1",
    "log_payload false",
    "one true, one false",
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("request_", REQUESTS)
def test_kept_only_when_model_tenant_and_request_all_agree(
    model: str, tenant: str, request_: str
) -> None:
    spec = manifest(MODELS[model]).payload_logging
    terms = logging_terms(spec, TENANTS[tenant], REQUESTS[request_])
    expected = model == "enabled" and tenant == "opted in" and request_ not in WITHHELD
    assert (terms is not None) == expected
    # the listener applies the same rule
    listener = logger()
    if TENANTS[tenant] is not None:
        listener.apply(TENANTS[tenant])  # type: ignore[arg-type]
    listener.completed(inference(REQUESTS[request_], model=manifest(MODELS[model])))
    assert listener.pending == int(expected)


def test_terms_take_the_tenants_purpose_and_the_shorter_retention() -> None:
    spec = PayloadLoggingSpec(**POLICY)
    assert logging_terms(spec, consent(), {}) == LoggingTerms("quality review", 30)
    narrowed = logging_terms(spec, consent(purpose="evaluation", retention_days=7), {})
    assert narrowed is not None and (narrowed.purpose, narrowed.retention_days) == (
        "evaluation",
        7,
    )
    longer = logging_terms(spec, consent(retention_days=365), {})
    assert longer is not None and longer.retention_days == 30  # a tenant cannot widen


def test_without_access_control_nothing_is_kept() -> None:
    listener = logger()
    listener.apply(consent())
    listener.completed(
        CompletedInference(None, inference().request, inference().response, manifest(), {})
    )
    assert listener.pending == 0


def test_request_parameters_parse() -> None:
    assert request_allows({}) and request_allows({"consent": True})
    assert not request_allows({"log_payload": "nope"})
    assert subject_of({"subject": "user-7"}) == "user-7"
    assert subject_of({"subject": 42}) == "42"
    assert subject_of({"subject": True}) is None
    assert subject_of({"subject": ""}) is None
    assert subject_of({"subject": "x" * 257}) is None
    assert subject_of({}) is None


def test_manifest_section_is_validated() -> None:
    with pytest.raises(ModelgateError, match="purpose"):
        manifest({"enabled": True, "retention_days": 3})
    with pytest.raises(ModelgateError, match="retention_days"):
        manifest({"enabled": True, "purpose": "x", "retention_days": 0})
    with pytest.raises(ModelgateError, match="log_everything: Extra"):
        manifest({**POLICY, "log_everything": True})
    assert manifest(None).payload_logging is None


# -- the listener ------------------------------------------------------------------------
class NoIoStore(MemoryPayloadStore):
    """Fails the test if the request path touches it."""

    calls = 0

    def __getattribute__(self, name: str) -> Any:
        if name in {"append", "find", "purge", "list_consents", "delete_subject"}:
            type(self).calls += 1
        return super().__getattribute__(name)


def test_the_request_path_does_no_io_and_copies_nothing() -> None:
    store = NoIoStore()
    listener = logger(store)
    NoIoStore.calls = 0  # what construction touched (the writer keeps store.append)
    listener.apply(consent())
    done = inference({"subject": "alice"})
    for _ in range(100):
        listener.completed(done)
    listener.completed(inference(who=principal("ten_other")))  # not opted in
    assert NoIoStore.calls == 0
    assert listener.pending == 100
    held = listener._pending[0]
    assert held.inputs[0].data is done.request.inputs[0].data  # a reference, no copy
    assert held.subject == "alice"  # pseudonymized off the request path


async def test_a_flush_redacts_pseudonymizes_seals_and_writes() -> None:
    store = MemoryPayloadStore()
    listener = logger(store)
    listener.apply(consent())
    listener.completed(inference({"subject": "alice"}))
    assert await listener.flush() == 1
    [record] = await store.find(PayloadQuery())
    assert record.tenant_id == "ten_a" and record.key_id == "key_1"
    assert (record.model, record.version, record.purpose) == ("reviews", "3", "quality review")
    assert record.subject == pseudonymize("alice")
    assert record.created_at == T0 and record.expires_at == T0 + timedelta(days=30)
    assert record.redactions == {"email": 1}
    assert b"alice" not in record.ciphertext and b"[EMAIL]" not in record.ciphertext
    document = open_payload(listener._cipher, record)
    assert document["request_id"] == "req-1"
    assert document["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["mail me at [EMAIL]"]}
    ]
    assert document["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [1, 2], "data": [0.25, "NaN"]}
    ]


async def test_a_jwt_subject_is_not_kept_as_the_key() -> None:
    store = MemoryPayloadStore()
    listener = logger(store)
    listener.apply(consent())
    listener.completed(inference(who=principal(kind="jwt")))
    await listener.flush()
    assert [r.key_id for r in await store.find(PayloadQuery())] == ["jwt"]


async def test_text_that_is_not_utf8_is_not_kept() -> None:
    store = MemoryPayloadStore()
    listener = logger(store)
    listener.apply(consent())
    done = inference()
    done.request.inputs[0].data[0] = b"\xff\xfe card 4111 1111 1111 1111"
    listener.completed(done)
    await listener.flush()
    [record] = await store.find(PayloadQuery())
    assert open_payload(listener._cipher, record)["inputs"][0]["data"] == ["[BINARY]"]
    assert record.redactions == {"binary": 1}


async def test_oversized_payloads_are_skipped_and_counted() -> None:
    store = MemoryPayloadStore()
    listener = logger(store, max_bytes=1024)
    listener.apply(consent())
    listener.completed(inference(text="x" * 2000))
    listener.completed(inference())
    assert await listener.flush() == 1
    assert listener.skipped == 1


async def test_beyond_max_pending_payloads_are_dropped_and_counted() -> None:
    listener = logger(max_pending=3)
    listener.apply(consent())
    for _ in range(5):
        listener.completed(inference())
    assert (listener.pending, listener.dropped) == (3, 2)


class FlakyStore(MemoryPayloadStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, records: Sequence[PayloadRecord]) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("database unreachable")
        if any(r.model == "bad" for r in records):
            raise invalid("payload model is refused")
        await super().append(records)


async def test_a_store_outage_keeps_the_rows_until_it_is_back() -> None:
    store = FlakyStore()
    listener = logger(store)
    listener.apply(consent())
    store.down = True
    listener.completed(inference())
    assert await listener.flush() == 0
    listener.completed(inference())
    assert await listener.flush() == 0
    assert listener.pending == 2
    store.down = False
    assert await listener.flush() == 2
    assert listener.pending == 0 and listener.dropped == 0


async def test_a_refused_row_does_not_hold_the_others_back() -> None:
    store = FlakyStore()
    listener = logger(store)
    listener.apply(consent())
    bad = inference()
    bad.request.model = "bad"
    listener.completed(bad)
    listener.completed(inference())
    assert await listener.flush() == 1
    assert listener.dropped == 1 and listener.pending == 0


async def test_close_writes_what_is_pending() -> None:
    store = MemoryPayloadStore()
    listener = logger(store, flush_interval_s=60)
    await listener.start()
    listener.apply(consent())
    listener.completed(inference())
    await listener.close()
    assert len(await store.find(PayloadQuery())) == 1


async def test_the_background_task_writes_and_rereads_consent() -> None:
    store = MemoryPayloadStore()
    await store.set_consent(consent())
    listener = logger(store, flush_interval_s=0.01, consent_refresh_s=0.01)
    await listener.start()  # reads the settings first
    try:
        listener.completed(inference())
        for _ in range(200):
            if await store.find(PayloadQuery()):
                break
            await asyncio.sleep(0.01)
        assert len(await store.find(PayloadQuery())) == 1
        # withdrawn on another replica: this one stops within the refresh interval
        await store.set_consent(PayloadConsent("ten_a", False, updated_at=T0))
        for _ in range(200):
            if "ten_a" not in listener._consents:
                break
            await asyncio.sleep(0.01)
        listener.completed(inference())
        assert listener.pending == 0
    finally:
        await listener.close()


async def test_expired_rows_are_purged_by_the_injected_clock() -> None:
    store = MemoryPayloadStore()
    clock = Clock()
    listener = logger(store, clock)
    listener.apply(consent(retention_days=1))
    listener.completed(inference())
    clock.at = T0 + timedelta(hours=12)
    listener.completed(inference())
    await listener.flush()
    clock.at = T0 + timedelta(hours=23)
    assert await listener.purge() == 0
    clock.at = T0 + timedelta(days=1)  # the first row's time has come
    assert await listener.purge() == 1
    clock.at = T0 + timedelta(days=2)
    assert await listener.purge() == 1
    assert await store.find(PayloadQuery()) == []


# -- the use cases -----------------------------------------------------------------------
OPERATOR = Principal("*", "bootstrap-admin", frozenset({"tenants:admin"}), Plan("p"), "admin")


def tenant_admin(tenant: str) -> Principal:
    return Principal(tenant, f"key_{tenant}", frozenset({"keys:admin"}), Plan("p"))


class Fixture:
    def __init__(self, configured: bool = True) -> None:
        self.store = MemoryPayloadStore()
        self.audit = MemoryAuditLog()
        self.identity = MemoryIdentityStore()
        self.raw_key = os.urandom(32)
        self.cipher = AesGcmCipher({"k1": self.raw_key})
        self.clock = Clock()
        self.service = PrivacyService(
            self.store,
            self.audit,
            self.identity,
            cipher=self.cipher if configured else None,
            pseudonymize=pseudonymize if configured else None,
            now=lambda: self.clock.at,
        )
        self.logger = PayloadLogger(self.store, self.cipher, pseudonymize, clock=self.clock)
        self.service.attach(self.logger.apply, self.logger.flush)

    async def tenants(self, *ids: str) -> None:
        await self.identity.create_plan(Plan("p"))
        for tenant in ids:
            await self.identity.create_tenant(Tenant(tenant, tenant, "p", T0))

    async def log(self, tenant: str, subject: str | None, **parameters: Any) -> None:
        if subject is not None:
            parameters["subject"] = subject
        self.logger.completed(inference(parameters, who=principal(tenant)))

    async def trail(self) -> list[AuditRecord]:
        return list(await self.audit.list(0, 1000))


async def test_a_tenant_sets_its_own_consent_and_the_logger_applies_it_at_once() -> None:
    f = Fixture()
    await f.tenants("ten_a", "ten_b")
    await f.service.set_consent(
        tenant_admin("ten_a"), "ten_a", enabled=True, purpose="evaluation", source_ip="10.0.0.1"
    )
    await f.log("ten_a", "alice")
    assert f.logger.pending == 1
    assert (await f.service.consent(tenant_admin("ten_a"), "ten_a")).purpose == "evaluation"
    [entry] = await f.trail()
    assert (entry.action, entry.target, entry.tenant_id) == (
        "payload_logging.set",
        "tenant:ten_a",
        "ten_a",
    )
    assert entry.after is not None and entry.after["enabled"] is True and entry.before is None
    # another tenant's id answers like a missing one; a credential without keys:admin, 403
    for tenant in ("ten_b", "ten_nobody"):
        with pytest.raises(ModelgateError) as caught:
            await f.service.set_consent(tenant_admin("ten_a"), tenant, enabled=True)
        assert caught.value.kind is ErrorKind.NOT_FOUND
        assert caught.value.message == f"unknown tenant '{tenant}'"
    runner = Principal("ten_a", "k", frozenset({"infer", "usage:read"}), Plan("p"))
    with pytest.raises(ModelgateError) as denied:
        await f.service.set_consent(runner, "ten_a", enabled=False)
    assert denied.value.kind is ErrorKind.PERMISSION_DENIED
    # the operator opts ten_a out again
    await f.service.set_consent(OPERATOR, "ten_a", enabled=False)
    await f.log("ten_a", "alice")
    assert f.logger.pending == 1


async def test_opting_in_needs_keys_but_opting_out_never_does() -> None:
    f = Fixture(configured=False)
    await f.tenants("ten_a")
    with pytest.raises(ModelgateError) as caught:
        await f.service.set_consent(OPERATOR, "ten_a", enabled=True)
    assert caught.value.kind is ErrorKind.FAILED_PRECONDITION
    assert "MODELGATE_PAYLOAD_KEYS" in caught.value.message
    assert not (await f.service.set_consent(OPERATOR, "ten_a", enabled=False)).enabled


async def test_export_and_erasure_of_one_subject_are_tenant_scoped_and_audited() -> None:
    f = Fixture()
    await f.tenants("ten_a", "ten_b")
    for tenant in ("ten_a", "ten_b"):
        await f.service.set_consent(OPERATOR, tenant, enabled=True)
    await f.log("ten_a", "alice")
    await f.log("ten_a", "alice")
    await f.log("ten_a", "bob")
    await f.log("ten_b", "alice")  # the same id in another tenant
    await f.log("ten_a", None)
    await f.logger.flush()

    exported = await f.service.export_subject(tenant_admin("ten_a"), "alice")
    assert exported["subject"] == "alice" and exported["pseudonym"] == pseudonymize("alice")
    assert [r["tenant_id"] for r in exported["payload_logs"]] == ["ten_a", "ten_a"]
    assert exported["payload_logs"][0]["inputs"][0]["data"] == ["mail me at [EMAIL]"]
    everyone = await f.service.export_subject(OPERATOR, "alice")
    assert len(everyone["payload_logs"]) == 3
    with pytest.raises(ModelgateError) as caught:
        await f.service.export_subject(tenant_admin("ten_b"), "alice", tenant_id="ten_a")
    assert caught.value.kind is ErrorKind.NOT_FOUND

    # ten_b erases its alice; ten_a's alice is untouched
    assert await f.service.erase_subject(tenant_admin("ten_b"), "alice") == {"payload_logs": 1}
    assert len((await f.service.export_subject(OPERATOR, "alice"))["payload_logs"]) == 2
    # a row still waiting in memory is written first, then erased with the rest
    await f.log("ten_a", "alice")
    erased = await f.service.erase_subject(OPERATOR, "alice", source_ip="10.0.0.9")
    assert erased == {"payload_logs": 3}
    remaining = await f.store.find(PayloadQuery())
    assert sorted(r.subject or "-" for r in remaining) == sorted(["-", pseudonymize("bob")])

    actions = [(e.action, e.target, e.tenant_id) for e in await f.trail()]
    target = f"subject:{pseudonymize('alice')}"
    assert actions[-5:] == [
        ("subject.export", target, "ten_a"),
        ("subject.export", target, None),
        ("subject.erase", target, "ten_b"),
        ("subject.export", target, None),
        ("subject.erase", target, None),
    ]
    last = (await f.trail())[-1]
    assert last.after == {"tenant": "*", "payload_logs": 3} and last.source_ip == "10.0.0.9"
    assert "alice" not in json.dumps([e.after for e in await f.trail()])


async def test_other_subject_data_is_erased_and_exported_with_the_logs() -> None:
    class Feedback:
        name = "feedback"

        def __init__(self) -> None:
            self.erased: list[tuple[Sequence[str], str | None]] = []

        async def erase(self, subjects: Sequence[str], tenant_id: str | None) -> int:
            self.erased.append((subjects, tenant_id))
            return 2

        async def export(self, subjects: Sequence[str], tenant_id: str | None) -> list[Any]:
            return [{"rating": 5}]

    f = Fixture()
    feedback = Feedback()
    service = PrivacyService(
        f.store, f.audit, f.identity, cipher=f.cipher, pseudonymize=pseudonymize,
        holders=[feedback],
    )  # fmt: skip
    assert (await service.export_subject(OPERATOR, "alice"))["feedback"] == [{"rating": 5}]
    assert await service.erase_subject(OPERATOR, "alice", "ten_a") == {
        "payload_logs": 0,
        "feedback": 2,
    }
    assert feedback.erased == [((pseudonymize("alice"),), "ten_a")]


async def test_a_dataset_holds_live_rows_of_consenting_tenants_only() -> None:
    f = Fixture()
    await f.tenants("ten_a", "ten_b")
    for tenant in ("ten_a", "ten_b"):
        await f.service.set_consent(OPERATOR, tenant, enabled=True, retention_days=10)
    await f.log("ten_a", "alice")
    await f.log("ten_b", "bob")
    f.clock.at = T0 + timedelta(days=5)
    await f.log("ten_a", "carol")
    await f.logger.flush()
    await f.service.set_consent(OPERATOR, "ten_b", enabled=False)  # withdrawn
    f.clock.at = T0 + timedelta(days=12)  # the first rows have expired, not yet purged

    rows: list[dict[str, Any]] = []
    assert await f.service.export_dataset(OPERATOR, rows.append) == 1
    assert rows[0]["subject"] == pseudonymize("carol") and "carol" not in json.dumps(rows)
    assert rows[0]["inputs"][0]["data"] == ["mail me at [EMAIL]"]
    with pytest.raises(ModelgateError) as denied:
        await f.service.export_dataset(tenant_admin("ten_a"), rows.append)
    assert denied.value.kind is ErrorKind.PERMISSION_DENIED
    assert (await f.trail())[-1].action == "payloads.export"
    assert await f.service.purge(OPERATOR) == 2


async def test_rekey_reseals_old_rows_with_the_active_key() -> None:
    f = Fixture()
    await f.tenants("ten_a")
    await f.service.set_consent(OPERATOR, "ten_a", enabled=True)
    for _ in range(3):
        await f.log("ten_a", "alice")
    await f.logger.flush()
    k2 = os.urandom(32)
    rotated = AesGcmCipher({"k1": f.raw_key, "k2": k2}, active="k2")
    service = PrivacyService(
        f.store, f.audit, f.identity, cipher=rotated, pseudonymize=pseudonymize
    )
    assert await service.rekey(OPERATOR) == 3
    assert await service.rekey(OPERATOR) == 0
    only_k2 = AesGcmCipher({"k2": k2})
    for record in await f.store.find(PayloadQuery()):
        assert record.cipher_key == "k2"
        assert open_payload(only_k2, record)["request_id"] == "req-1"


# -- the OpenAI adapter ------------------------------------------------------------------
async def test_openai_user_names_the_subject_and_extra_fields_can_withhold_consent() -> None:
    seen: list[dict[str, Any] | None] = []

    class Embeddings:
        async def embed(self, model: str, texts: list[str], dimensions: Any, principal: Any,
                        parameters: dict[str, Any] | None = None,
                        truncate: bool | None = None) -> Any:  # fmt: skip
            seen.append(parameters)
            return type(
                "R", (), {"vectors": np.zeros((1, 2)), "prompt_tokens": 1, "region": None}
            )()

    handlers = OpenAIHandlers(None, Embeddings())  # type: ignore[arg-type]
    await handlers.embeddings(b'{"model": "m", "input": "hi", "user": "user-7"}')
    await handlers.embeddings(b'{"model": "m", "input": "hi", "user": "u", "consent": false}')
    await handlers.embeddings(b'{"model": "m", "input": "hi"}')
    assert seen == [{"subject": "user-7"}, {"subject": "u", "consent": False}, {}]


def test_grpc_request_parameters_withhold_consent_and_name_the_subject() -> None:
    from tritonclient.grpc import service_pb2

    from modelgate.api.grpc.codec import decode_parameters

    message = service_pb2.ModelInferRequest()
    message.parameters["consent"].bool_param = False
    message.parameters["subject"].string_param = "user-9"
    parameters = decode_parameters(message.parameters)
    assert not request_allows(parameters)
    assert subject_of(parameters) == "user-9"
