"""The result cache in the core: keys, tickets, hits that skip the runtime, tenants kept
apart, directives, subjects, stale answers, version identity; the in-process store's
bounds and the shared store's wire format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.caching import (
    ResultCache,
    cache_directives,
    result_key,
    version_identity,
)
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import Arrays, CachedResult, VersionSource
from modelgate.core.serving.registry import ModelRegistry
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.cache import MemoryResultStore
from modelgate.storage.redis.cache_codec import decode_result, encode_result
from modelgate.testing import DEFAULT_MANIFEST as MANIFEST
from modelgate.testing import MemoryRepository

DATATYPES = {"x": "FP32", "t": "BYTES"}


def key(**changes: Any) -> str:
    args: dict[str, Any] = {
        "tenant": "ten_a",
        "model": "m",
        "version": "1",
        "identity": "abc",
        "requested": None,
        "inputs": {"x": np.arange(8, dtype=np.float32).reshape(2, 4)},
        "datatypes": DATATYPES,
    }
    args.update(changes)
    return result_key(**args)


arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
    elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=False),
)


@given(arrays)
def test_the_same_arrays_make_the_same_key_however_they_are_laid_out(
    x: np.ndarray[Any, Any],
) -> None:
    reordered = np.asfortranarray(x.copy())
    big_endian = x.astype(x.dtype.newbyteorder(">"))
    assert key(inputs={"x": x}) == key(inputs={"x": reordered}) == key(inputs={"x": big_endian})


@given(arrays, st.data())
def test_any_change_of_the_data_makes_another_key(x: np.ndarray[Any, Any], data: Any) -> None:
    index = data.draw(st.integers(0, x.size - 1))
    changed = x.copy().reshape(-1)
    changed[index] = changed[index] + 1 if changed[index] < 1e6 else changed[index] - 1
    assert key(inputs={"x": x}) != key(inputs={"x": changed.reshape(x.shape)})
    # the same values in another shape
    assert key(inputs={"x": x}) != key(inputs={"x": x.reshape(*x.shape, 1)})


def test_tenant_model_version_identity_and_outputs_are_in_the_key() -> None:
    base = key()
    others = [
        key(tenant="ten_b"),
        key(tenant=None),
        key(model="m2"),
        key(version="2"),
        key(identity="abd"),
        key(requested=[RequestedOutput("y")]),
        key(requested=[RequestedOutput("y", {"classification": 2})]),
        key(datatypes={"x": "FP64"}),
    ]
    assert len({base, *others}) == len(others) + 1
    # how an output is encoded does not change what it holds
    plain = key(requested=[RequestedOutput("y")])
    assert key(requested=[RequestedOutput("y", {"binary_data": True})]) == plain


def test_bytes_tensors_are_keyed_element_by_element() -> None:
    def text(*items: bytes) -> str:
        array = np.empty(len(items), dtype=object)
        array[:] = list(items)
        return key(inputs={"t": array})

    assert text(b"ab", b"c") != text(b"a", b"bc")
    assert text(b"ab", b"") != text(b"ab")
    assert text(b"a", b"b") == text(b"a", b"b")


def test_cache_control_directives() -> None:
    assert cache_directives("no-cache") == (True, False)
    assert cache_directives("No-Store, max-age=0") == (True, True)
    assert cache_directives("max-age=60") == (False, False)
    assert cache_directives(None) == (False, False)
    assert cache_directives(7) == (False, False)


def test_version_identity_follows_the_files_and_the_manifest(tmp_path: Path) -> None:
    manifest = parse_manifest("m", {**MANIFEST, "cache": {"ttl_seconds": 60}})
    (tmp_path / "model.bin").write_bytes(b"weights v1")
    first = version_identity(manifest, str(tmp_path))
    assert version_identity(manifest, str(tmp_path)) == first
    (tmp_path / "model.bin").write_bytes(b"weights v2")
    assert version_identity(manifest, str(tmp_path)) != first
    other = parse_manifest("m", {**MANIFEST, "cache": {"ttl_seconds": 61}})
    assert version_identity(other, str(tmp_path)) != version_identity(manifest, str(tmp_path))


@pytest.mark.timeout(30)
def test_version_identity_reads_only_regular_files_inside_the_model(tmp_path: Path) -> None:
    """A link to /dev/zero or a FIFO would be read forever, a link out of the model's
    folder would be read at all: the identity skips them (the artifact rule, artifacts.py)."""
    manifest = parse_manifest("m", {**MANIFEST, "cache": {"ttl_seconds": 60}})
    version = tmp_path / "models" / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.bin").write_bytes(b"weights")
    (tmp_path / "models" / "m" / "shared.bin").write_bytes(b"shared v1")
    (version / "shared.bin").symlink_to(tmp_path / "models" / "m" / "shared.bin")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"elsewhere v1")
    (version / "out.txt").symlink_to(outside)
    (version / "zero").symlink_to("/dev/zero")
    os.mkfifo(version / "pipe")
    first = version_identity(manifest, str(version))
    outside.write_bytes(b"elsewhere v2")
    assert version_identity(manifest, str(version)) == first
    (tmp_path / "models" / "m" / "shared.bin").write_bytes(b"shared v2")
    assert version_identity(manifest, str(version)) != first


# -- the service ---------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class SwitchablePredictor:
    """y = x * 2, counting calls other than warm-up (zeros); UNAVAILABLE while ``down``."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        if self.down:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "node gone")
        self.calls += int(bool(inputs["x"].any()))
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        pass


class Usage:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(
        self, tenant_id: str, key_id: str | None, model: str, version: str | None, **kw: Any
    ) -> None:
        self.records.append({"tenant": tenant_id, **kw})


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def cache_event(self, model: str, event: str) -> None:
        self.events.append((model, event))


class Setup:
    def __init__(self, cache_spec: dict[str, Any] | None, *, enabled: bool = True) -> None:
        self.predictor = SwitchablePredictor()
        self.clock = Clock()
        self.usage = Usage()
        self.events = Events()
        manifest: dict[str, Any] = {} if cache_spec is None else {"cache": cache_spec}
        self.repository = MemoryRepository({"m": {1: manifest}})
        self.registry = ModelRegistry(self.repository, {"python": self._load})
        store = MemoryResultStore(clock=self.clock, observer=self.events)
        self.cache = ResultCache(store, observer=self.events, clock=self.clock)
        self.service = InferenceService(
            self.registry, usage=self.usage, cache=self.cache if enabled else None
        )

    def _load(self, source: VersionSource) -> SwitchablePredictor:
        return self.predictor

    async def infer(
        self, value: float = 1.0, principal: Principal | None = None, **request: Any
    ) -> Any:
        x = np.full((1, 2), value, np.float32)
        return await self.service.infer(
            InferenceRequest("m", None, [Tensor("x", "FP32", x)], **request), principal
        )


def tenant(name: str) -> Principal:
    return Principal(name, f"key_{name}", frozenset({"infer"}), Plan("p"))


async def test_a_hit_skips_the_runtime_and_is_metered_as_one() -> None:
    setup = Setup({"ttl_seconds": 60})
    first = await setup.infer()
    second = await setup.infer()
    assert (first.cache, second.cache) == ("miss", "hit")
    assert setup.predictor.calls == 1
    np.testing.assert_array_equal(second.outputs[0].data, first.outputs[0].data)
    assert [r["cache_hit"] for r in setup.usage.records] == [False, True]
    assert [r["rows"] for r in setup.usage.records] == [1, 1]
    stats = setup.registry.versions("m")[0].stats.as_dict()
    assert stats["inference_stats"]["success"]["count"] == 2
    assert stats["inference_stats"]["cache_hit"]["count"] == 1
    assert stats["inference_stats"]["cache_miss"]["count"] == 1
    assert stats["execution_count"] == 1
    assert setup.events.events == [("m", "miss"), ("m", "store"), ("m", "hit")]
    with pytest.raises(
        ValueError, match="read-only"
    ):  # an entry cannot be changed through an answer
        second.outputs[0].data[0, 0] = 7


async def test_models_without_a_cache_section_and_a_cache_turned_off_never_cache() -> None:
    for setup in (Setup(None), Setup({"ttl_seconds": 60}, enabled=False)):
        assert (await setup.infer()).cache is None
        assert (await setup.infer()).cache is None
        assert setup.predictor.calls == 2


async def test_tenants_never_share_an_entry_unless_the_model_is_shareable() -> None:
    setup = Setup({"ttl_seconds": 60})
    assert (await setup.infer(principal=tenant("a"))).cache == "miss"
    assert (await setup.infer(principal=tenant("b"))).cache == "miss"
    assert (await setup.infer(principal=tenant("a"))).cache == "hit"
    shared = Setup({"ttl_seconds": 60, "shareable": True})
    assert (await shared.infer(principal=tenant("a"))).cache == "miss"
    assert (await shared.infer(principal=tenant("b"))).cache == "hit"


async def test_other_inputs_and_outputs_miss() -> None:
    setup = Setup({"ttl_seconds": 60})
    await setup.infer(1.0)
    assert (await setup.infer(2.0)).cache == "miss"
    assert (await setup.infer(1.0, outputs=[RequestedOutput("y")])).cache == "miss"
    assert (await setup.infer(1.0, outputs=[RequestedOutput("y")])).cache == "hit"


async def test_no_cache_skips_the_lookup_and_no_store_the_write() -> None:
    setup = Setup({"ttl_seconds": 60})
    await setup.infer()
    assert (await setup.infer(cache_control="no-cache")).cache == "miss"
    assert (await setup.infer(parameters={"cache_control": "no-cache"})).cache == "miss"
    assert setup.predictor.calls == 3
    assert (await setup.infer(5.0, cache_control="no-store")).cache == "miss"
    assert (await setup.infer(5.0)).cache == "miss"


async def test_a_request_naming_a_data_subject_is_not_kept() -> None:
    setup = Setup({"ttl_seconds": 60})
    assert (await setup.infer(parameters={"subject": "user-1"})).cache == "miss"
    assert (await setup.infer()).cache == "miss"  # nothing was kept
    # an answer kept for a request without a subject may still answer one that names one
    assert (await setup.infer(parameters={"subject": "user-1"})).cache == "hit"


async def test_an_entry_expires_after_its_ttl() -> None:
    setup = Setup({"ttl_seconds": 60})
    await setup.infer()
    setup.clock.now += 61
    assert (await setup.infer()).cache == "miss"
    assert setup.predictor.calls == 2


async def test_a_stale_entry_answers_only_while_the_model_fails_and_within_its_window() -> None:
    setup = Setup({"ttl_seconds": 60, "stale_seconds": 30})
    fresh = await setup.infer()
    setup.clock.now += 70
    setup.predictor.down = True
    stale = await setup.infer()
    assert stale.cache == "stale"
    assert stale.cached_at == pytest.approx(setup.clock.now - 70)
    np.testing.assert_array_equal(stale.outputs[0].data, fresh.outputs[0].data)
    assert ("m", "stale") in setup.events.events
    setup.clock.now += 30  # past the stale window
    with pytest.raises(ModelgateError) as failed:
        await setup.infer()
    assert failed.value.kind is ErrorKind.UNAVAILABLE
    without = Setup({"ttl_seconds": 60})  # no stale_seconds: the error stands
    await without.infer()
    without.clock.now += 61
    without.predictor.down = True
    with pytest.raises(ModelgateError):
        await without.infer()


async def test_a_reload_of_changed_files_never_meets_an_old_entry(tmp_path: Path) -> None:
    class FileRepository(MemoryRepository):
        def versions(self, name: str, override: Any = None) -> list[VersionSource]:
            manifest = parse_manifest(name, {**MANIFEST, "cache": {"ttl_seconds": 60}})
            return [VersionSource(1, str(tmp_path), manifest)]

    (tmp_path / "weights").write_bytes(b"one")
    setup = Setup({"ttl_seconds": 60})
    setup.registry = ModelRegistry(
        FileRepository({"m": {1: {}}}),
        {"python": lambda source: setup.predictor},
        load_hooks=[setup.cache.prepare],
    )
    setup.service.registry = setup.registry
    await setup.infer()
    assert (await setup.infer()).cache == "hit"
    await setup.registry.load("m")  # the same files: the same identity
    assert (await setup.infer()).cache == "hit"
    (tmp_path / "weights").write_bytes(b"two")
    await setup.registry.load("m")
    assert (await setup.infer()).cache == "miss"
    await setup.registry.close()


# -- stores ----------------------------------------------------------------------------------
def result(model: str = "m", *, rows: int = 1, size: int = 4, until: float = 2e9) -> CachedResult:
    data = np.zeros((rows, size), np.float32)
    return CachedResult(model, "1", (Tensor("y", "FP32", data),), rows, 0, 0.0, until, until)


async def test_the_memory_store_keeps_the_most_recently_used_within_its_bounds() -> None:
    events = Events()
    store = MemoryResultStore(max_entries=2, observer=events)
    store.put("a", result("ma"))
    store.put("b", result("mb"))
    assert await store.get("a") is not None  # now b is the least recently used
    store.put("c", result("mc"))
    assert await store.get("b") is None
    assert await store.get("a") is not None and await store.get("c") is not None
    assert events.events == [("mb", "eviction")]
    one = result().size_bytes()
    by_bytes = MemoryResultStore(max_bytes=2 * one, observer=events)
    for name in "xyz":
        by_bytes.put(name, result())
    assert len(by_bytes) == 2 and by_bytes.bytes <= 2 * one
    by_bytes.put("huge", result(size=10_000))  # over the whole bound: not kept
    assert await by_bytes.get("huge") is None and len(by_bytes) == 2


async def test_the_memory_store_drops_entries_past_their_stale_time() -> None:
    clock = Clock()
    store = MemoryResultStore(clock=clock)
    store.put("a", result(until=clock.now + 10))
    assert await store.get("a") is not None
    clock.now += 10
    assert await store.get("a") is None and len(store) == 0


@given(
    st.lists(st.binary(max_size=20), min_size=1, max_size=6),
    hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=3)),
)
def test_the_wire_format_round_trips(texts: list[bytes], numbers: np.ndarray[Any, Any]) -> None:
    text = np.empty(len(texts), dtype=object)
    text[:] = texts
    original = CachedResult(
        "m", "3", (Tensor("t", "BYTES", text), Tensor("n", "INT64", numbers)), 2, 5, 1.5, 2.5, 3.5
    )
    back = decode_result(encode_result(original))
    assert (back.model, back.model_version, back.rows, back.tokens) == ("m", "3", 2, 5)
    assert (back.stored_at, back.fresh_until, back.stale_until) == (1.5, 2.5, 3.5)
    assert list(back.outputs[0].data) == texts
    np.testing.assert_array_equal(back.outputs[1].data, numbers)
    assert back.outputs[1].data.shape == numbers.shape


def test_the_wire_format_refuses_what_it_did_not_write() -> None:
    raw = encode_result(result())
    for broken in (b"", b"XXXX" + raw[4:], raw + b"\0", raw[:-1]):
        with pytest.raises((ValueError, KeyError, TypeError, ModelgateError)):
            decode_result(broken)
