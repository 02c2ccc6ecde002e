"""The explanations' compute slots (core/pipeline/explain_slots.py): one tenant cannot take
every slot and place while others wait, a freed slot goes round the tenants, and a refusal
or a deadline holds nothing; and the admission checks that never change with a retry
(core/pipeline/explanations.py: the default budget, the over-limit row count, the models
retrained from tenants' data)."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.pipeline.explain_slots import ExplainSlots, Reservation
from modelgate.core.pipeline.explanations import ExplainPolicy, Explanations
from modelgate.core.serving.learning_spec import TRAINED_BY_LOOP, LearningSpec
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ErrorKind, ModelgateError

MANIFEST = {
    "runtime": "onnxruntime",
    "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [-1, 2], "feature_names": ["a", "b"]}
    ],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
    "explain": {"link": "identity"},
}


def _refused(slots: ExplainSlots, tenant: str) -> ModelgateError:
    with pytest.raises(ModelgateError) as caught:
        slots.reserve(tenant)
    assert caught.value.kind is ErrorKind.OVERLOADED
    return caught.value


async def test_a_tenant_cannot_take_every_place_while_another_waits() -> None:
    slots = ExplainSlots(concurrency=2, queue=3, tenant_queue=2)
    a = [slots.reserve("a") for _ in range(4)]  # 2 slots, 2 waiting: a's whole share
    assert [r.holds_slot for r in a] == [True, True, False, False]
    assert "this tenant already has 2" in str(_refused(slots, "a"))
    b = slots.reserve("b")  # b still gets a place
    c = slots.reserve("c")  # the queue (3) is full, but c has nothing: it waits with one
    assert slots.waiting == 4
    _refused(slots, "b")  # b has one waiting and the queue is full
    # a freed slot goes to the tenants that were never served, in turn, before a's next
    slots.release(a[0])
    assert b.holds_slot and not a[2].holds_slot
    slots.release(a[1])
    assert c.holds_slot and not a[2].holds_slot
    slots.release(b)
    assert a[2].holds_slot
    for reservation in (a[2], a[3], c):
        slots.release(reservation)
    assert slots.held == 0 and slots.waiting == 0


async def test_a_waiter_is_woken_with_its_slot_and_a_deadline_holds_nothing() -> None:
    slots = ExplainSlots(concurrency=1, queue=4, tenant_queue=4)
    first = slots.reserve("a")
    late = slots.reserve("b")
    with pytest.raises(ModelgateError) as caught:
        await slots.wait(late, time.monotonic() + 0.01)
    assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
    slots.release(late)
    assert slots.waiting == 0
    second = slots.reserve("b")
    waiter = asyncio.create_task(slots.wait(second, None))
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.release(first)
    await waiter
    assert second.holds_slot
    slots.release(second)
    slots.release(second)  # idempotent
    assert slots.held == 0 and slots.waiting == 0


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["reserve", "release"]), st.integers(0, 3), st.integers(0, 50)),
        max_size=60,
    ),
    concurrency=st.integers(1, 3),
    queue=st.integers(0, 4),
    tenant_queue=st.integers(0, 3),
)
def test_the_bounds_hold_whatever_the_order(
    steps: list[tuple[str, int, int]], concurrency: int, queue: int, tenant_queue: int
) -> None:
    async def run() -> None:
        slots = ExplainSlots(concurrency, queue, tenant_queue)
        held: list[Reservation] = []
        refusals: set[ErrorKind] = set()
        tenants = ("a", "b", "c", "d")
        for action, tenant, pick in steps:
            if action == "reserve":
                try:
                    held.append(slots.reserve(tenants[tenant]))
                except ModelgateError as exc:
                    refusals.add(exc.kind)
            elif held:
                slots.release(held.pop(pick % len(held)))
            assert slots.held <= concurrency
            assert slots.waiting <= queue + len(tenants)
            # a slot is never idle while someone waits
            assert slots.waiting == 0 or slots.held == concurrency
            for t in tenants:
                assert sum(1 for r in held if r.tenant == t and not r.holds_slot) <= tenant_queue
        for reservation in held:
            slots.release(reservation)
        assert slots.held == 0 and slots.waiting == 0
        assert refusals <= {ErrorKind.OVERLOADED}

    asyncio.run(run())


def _principal(per_minute: int | None, scopes: tuple[str, ...] = ("infer",)) -> Principal:
    return Principal("t", "k", frozenset(scopes), Plan("p", explanations_per_minute=per_minute))


def _explanations(**policy: object) -> Explanations:
    return Explanations(ExplainPolicy(**policy), kernel=None)  # type: ignore[arg-type]


def test_a_plan_without_a_limit_gets_the_servers_default() -> None:
    explanations = _explanations(default_per_minute=5)
    manifest = parse_manifest("m", MANIFEST)
    assert explanations.check(_principal(None), manifest, 5) == 5
    assert explanations.check(_principal(9), manifest, 9) == 9  # the plan's own wins
    with pytest.raises(ModelgateError) as caught:
        explanations.check(_principal(None), manifest, 6)
    # never fits, however long one waits: not the retryable 429
    assert caught.value.kind is ErrorKind.PAYLOAD_TOO_LARGE
    assert caught.value.retry_after is None
    assert "5 explained rows per minute" in str(caught.value)
    with pytest.raises(ModelgateError) as caught:
        _explanations(default_per_minute=0).check(_principal(None), manifest, 1)
    assert caught.value.kind is ErrorKind.PERMISSION_DENIED
    with pytest.raises(ModelgateError) as caught:
        explanations.check(_principal(0), manifest, 1)
    assert caught.value.kind is ErrorKind.PERMISSION_DENIED


def test_a_version_the_loop_trained_is_explained_for_operators_only() -> None:
    """The rule follows the version (its card), not the model's ``learning`` section: the
    versions a model started from explain for tenants."""
    retrained = parse_manifest("m", MANIFEST).model_copy(
        update={"learning": LearningSpec(trainer="x.y:z")}
    )
    learned = retrained.model_copy(update={"card": {"trained_by": TRAINED_BY_LOOP}})
    explanations = _explanations()
    assert explanations.check(_principal(None), retrained, 1) == 60
    with pytest.raises(ModelgateError) as caught:
        explanations.check(_principal(None), learned, 1)
    assert caught.value.kind is ErrorKind.PERMISSION_DENIED
    assert "only operators" in str(caught.value)
    assert explanations.check(_principal(None, ("infer", "tenants:admin")), learned, 1) == 60
    everyone = _explanations(learned_for_tenants=True)
    assert everyone.check(_principal(None), learned, 1) == 60
