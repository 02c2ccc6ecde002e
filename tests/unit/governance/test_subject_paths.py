"""A data subject's id in an admin path never outlives the request: the request log writes
``{subject}`` in its place, and an idempotency record keeps the subject's pseudonym (in its
path and its hash), so a retry with the same key is still answered again."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.admission.idempotency import IdempotencyService
from modelgate.core.admission.ports import StoredAnswer
from modelgate.core.governance.redaction import pseudonym
from modelgate.observability.logs import logged_path
from modelgate.storage.memory.idempotency import MemoryIdempotencyStore

KEY = b"pseudonym-key-" + b"k" * 20
SUBJECTS = st.text(
    alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
    min_size=3,
    max_size=64,
).filter(lambda s: s not in "/admin/subjects/{subject}/export")


@settings(max_examples=200, deadline=None)
@given(subject=SUBJECTS, tail=st.sampled_from(["", "/export", "/export/more"]))
def test_the_request_log_never_writes_a_subjects_id(subject: str, tail: str) -> None:
    written = logged_path(f"/admin/subjects/{subject}{tail}")
    assert subject not in written
    assert written == f"/admin/subjects/{{subject}}{tail}"


def test_other_paths_are_logged_as_they_are() -> None:
    for path in ("/v2/models/credit-risk/infer", "/admin/tenants/ten_1/keys", "/admin/subjects"):
        assert logged_path(path) == path


@settings(max_examples=50, deadline=None)
@given(subject=SUBJECTS)
def test_an_idempotency_record_keeps_the_pseudonym_and_still_replays(subject: str) -> None:
    store = MemoryIdempotencyStore()
    service = IdempotencyService(store, pseudonymize=lambda s: pseudonym(KEY, s))
    concealed = service.concealed(subject)
    assert subject not in concealed
    assert concealed == "subject:" + pseudonym(KEY, subject)
    path = f"/admin/subjects/{concealed}"

    async def scenario() -> None:
        run = await service.begin("ten|key:1", "k-1", "DELETE", path, b"")
        assert run.outcome == "run"
        assert subject not in run.record.path
        await service.complete(run, StoredAnswer(200, b'{"erased":{}}'))
        again = await service.begin("ten|key:1", "k-1", "DELETE", path, b"")
        assert again.outcome == "replay"
        other = f"/admin/subjects/{service.concealed(subject + 'x')}"
        assert (await service.begin("ten|key:1", "k-1", "DELETE", other, b"")).outcome == (
            "mismatch"
        )

    asyncio.run(scenario())


def test_without_a_pseudonym_key_the_id_is_still_not_kept() -> None:
    service = IdempotencyService(MemoryIdempotencyStore())
    assert "alice-1842" not in service.concealed("alice-1842")
    assert service.concealed("alice-1842") == service.concealed("alice-1842")
