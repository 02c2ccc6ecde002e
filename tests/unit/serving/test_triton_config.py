"""A Triton model configuration in a load's ``parameters.config``: the fields that map onto
the manifest become the override, the model's own name, platform and tensors are accepted
when they match, the rest is refused by name, all at once."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.serving.manifest import merge, parse_manifest
from modelgate.core.serving.overrides import check_override
from modelgate.core.serving.triton_config import triton_override
from modelgate.errors import ErrorKind, ModelgateError

MANIFEST_DATA: dict[str, Any] = {
    "runtime": "onnxruntime",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    "batching": {"max_batch_size": 8, "max_queue_delay_us": 0, "max_queue_size": 64},
    "labels": {"team": "risk"},
}
MANIFEST = parse_manifest("m", MANIFEST_DATA)
UNBATCHED = parse_manifest("m", {**MANIFEST_DATA, "batching": None})


def refused(config: dict[str, Any], manifest: Any = MANIFEST) -> str:
    with pytest.raises(ModelgateError) as info:
        triton_override(config, manifest)
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    return info.value.message


@pytest.mark.parametrize(
    ("config", "override"),
    [
        ({"max_batch_size": 16}, {"batching": {"max_batch_size": 16}}),
        ({"max_batch_size": "16"}, {"batching": {"max_batch_size": 16}}),  # protobuf's JSON
        ({"max_batch_size": 0}, {"batching": None}),
        (
            {
                "max_batch_size": 4,
                "dynamic_batching": {
                    "max_queue_delay_microseconds": "100",
                    "preferred_batch_size": [4],
                    "default_queue_policy": {"max_queue_size": 10},
                },
            },
            {"batching": {"max_batch_size": 4, "max_queue_delay_us": 100, "max_queue_size": 10}},
        ),
        (
            {"dynamic_batching": {"max_queue_delay_microseconds": 50}},
            {"batching": {"max_queue_delay_us": 50}},
        ),
        (
            {"instance_group": [{"count": 2, "kind": "KIND_CPU"}, {"count": 1, "name": "b"}]},
            {"instances": 3, "hardware": {"prefer": "cpu"}},
        ),
        (
            {"instance_group": [{"kind": "KIND_GPU"}]},
            {"instances": 1, "hardware": {"prefer": "gpu"}},
        ),
        ({"name": "m", "version_policy": {"all": {}}}, {"version_policy": "all"}),
        (
            {"name": "m", "version_policy": {"latest": {"num_versions": "2"}}},
            {"version_policy": {"latest": 2}},
        ),
        (
            {"name": "m", "version_policy": {"specific": {"versions": ["1", 3]}}},
            {"version_policy": {"specific": [1, 3]}},
        ),
        (
            {
                "name": "m",
                "platform": "onnxruntime_onnx",
                "backend": "onnxruntime",
                "parameters": {"team": {"string_value": "risk"}},
                "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}],
                "output": [{"name": "y", "dims": [4]}],
                "execution": "thread",
            },
            {"execution": "thread"},
        ),
    ],
)
def test_triton_fields_map_onto_the_override(
    config: dict[str, Any], override: dict[str, Any]
) -> None:
    mapped = triton_override(config, MANIFEST)
    assert mapped == override
    # and the result is an override the manifest takes
    parse_manifest("m", merge(MANIFEST_DATA, check_override(mapped)))


def test_unbatched_dims_are_the_whole_shape() -> None:
    config = {"name": "m", "input": [{"name": "x", "dims": [-1, 4]}]}
    assert triton_override(config, UNBATCHED) == {}
    assert "dims [4]" in refused({"name": "m", "input": [{"name": "x", "dims": [4]}]}, UNBATCHED)


def test_a_config_without_triton_fields_is_left_as_it_is() -> None:
    config = {"batching": {"max_batch_size": 2}, "runtime": "python"}
    assert triton_override(config, MANIFEST) == config  # check_override refuses 'runtime'


def test_every_field_that_does_not_map_is_named_at_once() -> None:
    message = refused(
        {
            "max_batch_size": 8,
            "optimization": {"graph": {"level": 1}},
            "model_warmup": [{"name": "w"}],
            "dynamic_batching": {"preserve_ordering": True, "preferred_batch_size": [2, 4]},
            "instance_group": [{"count": 1, "gpus": [0]}],
            "input": [{"name": "x", "dims": [4], "reshape": {"shape": [2, 2]}}],
            "runtime_options": {"class": "Evil"},
        }
    )
    for named in (
        "'optimization'",
        "'model_warmup'",
        "'dynamic_batching.preserve_ordering'",
        "'dynamic_batching.preferred_batch_size' [2, 4]",
        "'instance_group.gpus'",
        "'input.reshape' (x)",
        "'runtime_options'",
    ):
        assert named in message


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"name": "other"}, "'name' is 'other', the model's is 'm'"),
        ({"platform": "tensorrt_plan"}, "'platform' is 'tensorrt_plan'"),
        ({"backend": "python"}, "'backend' is 'python'"),
        ({"parameters": {"team": {"string_value": "x"}}}, "'parameters'"),
        ({"input": [{"name": "z", "dims": [4]}]}, "the model has no input 'z'"),
        ({"input": [{"name": "x", "data_type": "TYPE_INT64"}]}, "data_type 'TYPE_INT64'"),
        ({"output": [{"name": "y", "dims": [5]}]}, "dims [5] (max_batch_size 8)"),
        ({"max_batch_size": 4, "batching": {"max_batch_size": 2}}, "not both"),
        ({"instance_group": [{"count": 1}], "instances": 2}, "not both"),
        ({"instance_group": [{"kind": "KIND_CPU"}, {"kind": "KIND_GPU"}]}, "mixes"),
        ({"max_batch_size": 0, "dynamic_batching": {}}, "needs max_batch_size > 0"),
        ({"max_batch_size": "eight"}, "'max_batch_size' must be an integer"),
        ({"max_batch_size": True}, "'max_batch_size' must be an integer"),
        ({"input": {"name": "x"}}, "'input' must be a list of objects"),
        ({"instance_group": [{"kind": ["KIND_CPU"]}]}, "'instance_group.kind'"),
    ],
)
def test_what_does_not_match_the_model_is_refused(config: dict[str, Any], says: str) -> None:
    assert says in refused(config)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    ["max_batch_size", "dynamic_batching", "instance_group", "input", "output", "name",
     "version_policy", "batching", "instances", "platform", "optimization"]
)  # fmt: skip


@given(st.dictionaries(_KEYS, _JSON, min_size=1, max_size=5))
def test_any_config_maps_or_is_refused_with_invalid_argument(config: dict[str, Any]) -> None:
    kind = None
    try:
        override = check_override(triton_override(config, MANIFEST))
        parse_manifest("m", merge(MANIFEST_DATA, override))
    except ModelgateError as exc:
        kind = exc.kind
    assert kind in (None, ErrorKind.INVALID_ARGUMENT)
