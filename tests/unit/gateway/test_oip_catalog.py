"""What a static node serves, as :class:`~modelgate.cluster.oip_catalog.OipCatalog` reads it
from the answers real servers give (the shapes of Triton's, MLServer's and KServe's, as
tests/e2e/test_third_party_nodes.py meets them for real): a fake stub answers here."""

from __future__ import annotations

import logging
import re
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from modelgate.cluster.oip_catalog import OipCatalog
from modelgate.core.gateway.nodes import NodeInfo

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class FakeStub:
    """An OIP server: ``index`` (None: the call fails with ``index_error``), and per model
    its version labels and whether it declares a signature."""

    def __init__(
        self,
        models: dict[str, tuple[list[str], bool]],
        *,
        index: list[tuple[str, str, str]] | None = None,
        index_error: grpc.aio.AioRpcError | None = None,
        unknown: grpc.aio.AioRpcError | None = None,
    ):
        self.models = models
        self.index = index
        self.index_error = index_error
        self.unknown = unknown or _error(grpc.StatusCode.NOT_FOUND, "model not found")
        self.metadata_calls = 0

    async def RepositoryIndex(self, request: Any, **call: Any) -> Any:  # noqa: N802 (the proto's name)
        if self.index is None:
            assert self.index_error is not None
            raise self.index_error
        return service_pb2.RepositoryIndexResponse(
            models=[
                service_pb2.RepositoryIndexResponse.ModelIndex(name=n, version=v, state=s)
                for n, v, s in self.index
            ]
        )

    async def ModelMetadata(self, request: Any, **call: Any) -> Any:  # noqa: N802 (the proto's name)
        self.metadata_calls += 1
        if request.name not in self.models:
            raise self.unknown
        versions, declared = self.models[request.name]
        signature = SIGNATURE if declared else {"inputs": [], "outputs": []}
        return service_pb2.ModelMetadataResponse(
            name=request.name,
            versions=versions,
            platform="python",
            inputs=[service_pb2.ModelMetadataResponse.TensorMetadata(**t)
                    for t in signature["inputs"]],
            outputs=[service_pb2.ModelMetadataResponse.TensorMetadata(**t)
                     for t in signature["outputs"]],
        )  # fmt: skip

    async def ModelReady(self, request: Any, **call: Any) -> Any:  # noqa: N802 (the proto's name)
        if request.name not in self.models:
            raise self.unknown
        versions, _ = self.models[request.name]
        return service_pb2.ModelReadyResponse(ready=request.version in (versions or [""]))


async def test_mlserver_index_states_and_an_unversioned_model() -> None:
    stub = FakeStub(
        {"points": ([], True), "undeclared": ([], False)},
        index=[("points", "", "State.READY"), ("undeclared", "", "State.READY")],
    )
    served = await OipCatalog().served(stub, "mlserver:9000", {})
    assert set(served.models) == {"points"}  # no signature: left out
    assert set(served.models["points"]) == {1}
    assert served.unversioned == {"points"}
    node = NodeInfo("n", "mlserver:9000", models=served.models, unversioned=frozenset({"points"}))
    assert node.version_label("points", 1) == ""
    assert node.version_label("other", 3) == "3"


async def test_triton_index_with_numbered_versions_and_a_loading_one() -> None:
    stub = FakeStub(
        {"affine": (["1", "2"], True)},
        index=[("affine", "1", "READY"), ("affine", "2", "LOADING"), ("affine", "v3", "READY")],
    )
    catalog = OipCatalog()
    served = await catalog.served(stub, "triton:8001", {})
    assert {m: set(v) for m, v in served.models.items()} == {"affine": {1}}
    assert not served.unversioned
    calls = stub.metadata_calls
    await catalog.served(stub, "triton:8001", {})
    assert stub.metadata_calls == calls  # a version's signature is asked once


@pytest.mark.parametrize(
    "refusal",
    [
        _error(
            grpc.StatusCode.UNAVAILABLE,
            "This protocol is restricted, expecting header "
            "'triton-grpc-protocol-triton-access-token'",
        ),
        _error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"),
    ],
    ids=["pytriton-restricted", "kserve-unimplemented"],
)
async def test_a_node_that_keeps_its_index_is_asked_for_the_listed_models(
    refusal: grpc.aio.AioRpcError,
) -> None:
    triton_unknown = _error(
        grpc.StatusCode.UNAVAILABLE, "Request for unknown model: 'points' is not found"
    )
    stub = FakeStub({"affine": (["1"], True)}, index_error=refusal, unknown=triton_unknown)
    served = await OipCatalog().served(stub, "triton:8001", {})
    assert served.models == {}  # nothing listed: serves nothing (and says so in the log)
    served = await OipCatalog(["affine", "points"]).served(stub, "triton:8001", {})
    assert {m: set(v) for m, v in served.models.items()} == {"affine": {1}}


async def test_a_node_failing_otherwise_is_not_read_as_empty() -> None:
    stub = FakeStub(
        {}, index_error=_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await OipCatalog(["affine"]).served(stub, "down:8001", {})


_labels = st.one_of(st.just(""), st.from_regex(r"[0-9]{1,4}", fullmatch=True), st.text(max_size=12))
_states = st.sampled_from(["READY", "State.READY", "", "UNAVAILABLE", "LOADING", "State.LOADING"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), _labels, _states),
        max_size=12,
    )
)
async def test_any_index_gives_numbered_versions_of_ready_models_only(
    entries: list[tuple[str, str, str]],
) -> None:
    stub = FakeStub({name: ([], True) for name in "abc"}, index=entries)
    served = await OipCatalog().served(stub, "any:1", {})
    for name, versions in served.models.items():
        ready = [
            (v, s) for n, v, s in entries if n == name and s.rsplit(".", 1)[-1] in ("READY", "")
        ]
        labels = {v for v, _ in ready if v == "" or re.fullmatch("[0-9]{1,9}", v)}
        assert labels, (name, entries)
        # numbered versions win over an entry without one
        assert set(versions) == ({int(v) for v in labels if v} or {1})
        assert (name in served.unversioned) == (not any(v for v in labels))


# -- a hostile node: names, how many, what is kept ------------------------------------------
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(["../../etc\n\x00", "", "a" * 100_000, "ok.model-1", "x" * 129]),
        ),
        max_size=8,
    )
)
async def test_only_names_the_repository_accepts_reach_the_catalog_and_logs(
    names: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    stub = FakeStub({n: (["1"], True) for n in names}, index=[(n, "1", "READY") for n in names])
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="modelgate.cluster"):
        served = await OipCatalog().served(stub, "hostile:1", {})
    assert set(served.models) == {n for n in names if _MODEL_NAME.fullmatch(n)}
    assert stub.metadata_calls == len(set(served.models))  # none asked about a bad name
    for record in caplog.records:
        line = record.getMessage()
        assert "\n" not in line and "\x00" not in line and "\r" not in line
        assert len(line) < 1000


@settings(max_examples=20, deadline=None)
@given(listed=st.integers(0, 60), cap=st.integers(1, 20))
async def test_a_node_is_read_up_to_its_cap_of_model_versions(listed: int, cap: int) -> None:
    names = [f"m{i}" for i in range(listed)]
    stub = FakeStub({n: (["1"], True) for n in names}, index=[(n, "1", "READY") for n in names])
    served = await OipCatalog(max_models=cap).served(stub, "big:1", {})
    assert len(served.models) == min(listed, cap)
    assert stub.metadata_calls == min(listed, cap)


async def test_the_manifests_of_models_a_node_stops_listing_are_dropped() -> None:
    stub = FakeStub({"a": (["1"], True), "b": (["1"], True)})
    catalog = OipCatalog()
    stub.index = [("a", "1", "READY"), ("b", "1", "READY")]
    await catalog.served(stub, "n:1", {})
    assert stub.metadata_calls == 2
    await catalog.served(stub, "n:1", {})
    assert stub.metadata_calls == 2  # kept while listed
    stub.index = [("a", "1", "READY")]
    served = await catalog.served(stub, "n:1", {})
    assert set(served.models) == {"a"}
    stub.index = [("a", "1", "READY"), ("b", "1", "READY")]
    await catalog.served(stub, "n:1", {})
    assert stub.metadata_calls == 3  # b's was dropped when it went: asked again


@settings(max_examples=10, deadline=None)
@given(rounds=st.lists(st.integers(0, 10_000), min_size=1, max_size=6))
async def test_what_is_kept_per_node_never_passes_its_cap(rounds: list[int]) -> None:
    """A node naming new models every refresh: what the catalog keeps for it stays within
    the cap after each read, and what it read is kept (not asked again while listed)."""
    cap = 5
    catalog = OipCatalog(max_models=cap)
    for start in rounds:
        names = [f"m{start + i}" for i in range(8)]
        index = [(n, "1", "READY") for n in names]
        stub = FakeStub({n: (["1"], True) for n in names}, index=index)
        await catalog.served(stub, "churn:1", {})
        assert stub.metadata_calls <= cap
        assert len(catalog._manifests["churn:1"]) <= cap
        again = FakeStub({n: (["1"], True) for n in names}, index=index)
        await catalog.served(again, "churn:1", {})
        assert again.metadata_calls == 0
