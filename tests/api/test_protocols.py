"""The same behaviour over OIP REST and OIP gRPC: every case runs once per protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.api.conftest import ProtocolError

pytestmark = pytest.mark.asyncio(loop_scope="module")

Client = Any  # RestClient | GrpcClient: the same methods


def rows(n: int, start: float = 1.0) -> np.ndarray[Any, Any]:
    return (np.arange(n * 4, dtype=np.float32) + start).reshape(n, 4)


async def test_server_live_ready_and_metadata(client: Client) -> None:
    assert await client.live()
    assert await client.ready()
    meta = await client.server_metadata()
    assert meta["name"] == "modelgate"
    assert meta["version"]
    assert {"model_repository", "statistics", "classification"} <= set(meta["extensions"])


async def test_model_metadata(client: Client) -> None:
    meta = await client.metadata("doubler")
    assert meta == {
        "name": "doubler",
        "versions": ["1", "2"],
        "platform": "python",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, 4]},
        ],
    }
    text = await client.metadata("echo-text", "1")
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["datatype"] for o in text["outputs"]] == ["BYTES", "INT64"]


async def test_model_ready_by_version(client: Client) -> None:
    assert await client.model_ready("doubler")
    assert await client.model_ready("doubler", "1")
    with pytest.raises(ProtocolError) as info:
        await client.model_ready("doubler", "9")
    assert info.value.code == "not_found"
    with pytest.raises(ProtocolError) as info:
        await client.model_ready("no-such-model")
    assert info.value.code == "not_found"


async def test_infer_default_version_is_2(client: Client) -> None:
    x = rows(2)
    out = await client.infer("doubler", {"x": x})
    assert set(out) == {"y", "scores"}
    np.testing.assert_array_equal(out["y"], x * 3)
    assert out["y"].dtype == np.float32
    assert out["y"].shape == (2, 4)


async def test_infer_pinned_version_1(client: Client) -> None:
    x = rows(3, start=-5)
    out = await client.infer("doubler", {"x": x}, version="1")
    np.testing.assert_array_equal(out["y"], x * 2)


async def test_only_requested_outputs_are_returned(client: Client) -> None:
    out = await client.infer("doubler", {"x": rows(1)}, outputs=["y"])
    assert list(out) == ["y"]


async def test_classification_returns_top_k_labels(client: Client) -> None:
    x = np.array([[0.1, 0.9, 0.3, 0.2], [5.0, 1.0, 2.0, 7.0]], dtype=np.float32)
    out = await client.infer("doubler", {"x": x}, version="1", outputs=["scores"], classification=2)
    scores = out["scores"]
    assert scores.shape == (2, 2)
    labels = [[item.decode().split(":")[-1] for item in row] for row in scores]
    assert labels == [["b", "c"], ["d", "a"]]
    assert float(scores[1, 0].decode().split(":")[0]) == pytest.approx(7.0)


async def test_bytes_in_and_out(client: Client) -> None:
    # The model upper-cases bytes (ASCII only) and counts bytes, so UTF-8 passes through.
    text = np.array([b"hello", b"", "grüße".encode()], dtype=object)
    out = await client.infer("echo-text", {"text": text})
    assert out["upper"].tolist() == [b"HELLO", b"", "GRüßE".encode()]
    assert out["length"].tolist() == [5, 0, 7]
    assert out["length"].dtype == np.int64


@pytest.mark.parametrize(
    ("model", "version"), [("no-such-model", None), ("doubler", "9"), ("doubler", "two")]
)
async def test_unknown_model_or_version_is_not_found(
    client: Client, model: str, version: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer(model, {"x": rows(1)}, version=version)
    assert info.value.code == "not_found"


async def test_wrong_datatype_is_invalid(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"x": rows(1).astype(np.float64)})
    assert info.value.code == "invalid"
    assert "FP64" in info.value.message


async def test_wrong_shape_for_the_signature_is_invalid(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"x": np.ones((2, 3), dtype=np.float32)})
    assert info.value.code == "invalid"
    assert "shape" in info.value.message


@pytest.mark.parametrize("binary", [False, True])
async def test_shape_and_data_length_mismatch_is_invalid(client: Client, binary: bool) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"x": rows(1)}, shapes={"x": [2, 4]}, binary=binary)
    assert info.value.code == "invalid"


async def test_missing_or_unexpected_input_is_invalid(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {})
    assert info.value.code == "invalid"
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"z": rows(1)})
    assert info.value.code == "invalid"
    assert "'z'" in info.value.message


async def test_non_finite_input_is_invalid(client: Client) -> None:
    x = rows(2)
    x[1, 2] = np.nan
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"x": x})
    assert info.value.code == "invalid"
    assert "NaN" in info.value.message


async def test_negative_dimension_is_invalid(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"x": rows(1)}, shapes={"x": [-1, 4]})
    assert info.value.code == "invalid"


async def test_huge_dimensions_are_refused_before_allocation(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.infer("doubler", {"x": rows(1)}, shapes={"x": [2**31, 2**31]})
    assert info.value.code == "too_large"
    assert await client.live()


async def test_unload_and_load_round_trip(client: Client) -> None:
    text = {"text": np.array([b"a"], dtype=object)}
    await client.infer("echo-text", text)
    await client.unload("echo-text")
    try:
        assert not await client.model_ready("echo-text")
        with pytest.raises(ProtocolError) as info:
            await client.infer("echo-text", text)
        assert info.value.code == "unavailable"
        states = {r["name"]: r["state"] for r in await client.index()}
        assert states["echo-text"] == "UNAVAILABLE"
    finally:
        await client.load("echo-text")
    assert await client.model_ready("echo-text")
    assert (await client.infer("echo-text", text))["upper"].tolist() == [b"A"]
    assert {"name": "echo-text", "version": "1", "state": "READY"} in await client.index()


async def test_load_with_config_override(client: Client) -> None:
    """An operator's override changes what its allow-list permits (here, which versions
    serve) and nothing that decides what code runs."""
    x = rows(1)
    await client.load("doubler", config={"version_policy": {"specific": [2]}})
    try:
        np.testing.assert_array_equal((await client.infer("doubler", {"x": x}))["y"], x * 3)
        with pytest.raises(ProtocolError) as info:
            await client.infer("doubler", {"x": x}, version="1")
        assert info.value.code == "not_found"
        with pytest.raises(ProtocolError) as info:
            await client.load("doubler", config={"runtime_options": {"factor": 5}})
        assert info.value.code == "invalid" and "'runtime_options'" in info.value.message
    finally:
        await client.load("doubler")
    np.testing.assert_array_equal(
        (await client.infer("doubler", {"x": x}, version="1"))["y"], x * 2
    )


async def test_load_unknown_model_is_not_found(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.load(f"never-existed-load-{client.protocol}")
    assert info.value.code == "not_found"


async def test_unload_unknown_model_is_not_found(client: Client) -> None:
    with pytest.raises(ProtocolError) as info:
        await client.unload(f"never-existed-unload-{client.protocol}")
    assert info.value.code == "not_found"


async def test_failed_load_of_unknown_model_leaves_no_trace(client: Client) -> None:
    name = f"never-existed-{client.protocol}"
    with pytest.raises(ProtocolError):
        await client.load(name)
    with pytest.raises(ProtocolError) as info:
        await client.unload(name)
    assert info.value.code == "not_found"


async def test_statistics_count_requests(client: Client) -> None:
    before = (await client.stats("doubler"))["1"]
    for n in (1, 2, 3):
        await client.infer("doubler", {"x": rows(n)}, version="1")
    with pytest.raises(ProtocolError):
        await client.infer("doubler", {"x": np.ones((1, 3), np.float32)}, version="1")
    after = (await client.stats("doubler"))["1"]
    assert after["success"] == before["success"] + 3
    assert after["inference_count"] == before["inference_count"] + 6
    assert after["fail"] == before["fail"] + 1
    with pytest.raises(ProtocolError) as info:
        await client.stats("no-such-model")
    assert info.value.code == "not_found"


async def test_overload_answers_unavailable_and_the_server_keeps_serving(client: Client) -> None:
    async def one(i: int) -> ProtocolError | np.ndarray[Any, Any]:
        try:
            out = await client.infer("slow-sum", {"x": np.array([[i, 1]], dtype=np.int32)})
        except ProtocolError as exc:
            return exc
        return out["total"]

    results = await asyncio.gather(*(one(i) for i in range(48)))
    errors = [r for r in results if isinstance(r, ProtocolError)]
    answers = {i: r.tolist() for i, r in enumerate(results) if not isinstance(r, ProtocolError)}
    assert errors, "48 concurrent requests should overflow a queue of 4"
    assert answers, "the first requests should be served"
    assert {e.code for e in errors} == {"unavailable"}
    assert all(e.retry_after is not None and int(e.retry_after) >= 1 for e in errors)
    assert all(total == [i + 1] for i, total in answers.items())
    out = await client.infer("slow-sum", {"x": np.array([[40, 2]], dtype=np.int32)})
    assert out["total"].tolist() == [42]


async def test_a_large_request_is_cut_into_batches(client: Client) -> None:
    x = rows(40)  # 5 batches of max_batch_size 8
    np.testing.assert_array_equal((await client.infer("doubler", {"x": x}))["y"], x * 3)


async def test_a_request_bigger_than_the_queue_is_served(client: Client) -> None:
    x = rows(8 * 64 + 8)  # doubler: max_batch_size 8, max_queue_size 64
    np.testing.assert_array_equal((await client.infer("doubler", {"x": x}))["y"], x * 3)


async def test_concurrent_requests_each_get_their_own_rows(client: Client) -> None:
    inputs = [rows(1 + i % 3, start=100.0 * i) for i in range(32)]
    results = await asyncio.gather(*(client.infer("doubler", {"x": x}) for x in inputs))
    for x, out in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(out["y"], x * 3)
