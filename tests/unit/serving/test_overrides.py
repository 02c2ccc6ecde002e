"""What a load's configuration override may change, who may send one, and where a model's
files may be: the allow-list, the operator scope and the path rules, with fakes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.authorization import may_configure_models, require_model_configuration
from modelgate.core.access.identity import Plan, Principal
from modelgate.core.access.tenancy import validate_scopes
from modelgate.core.serving.artifacts import artifact_path, check_relative
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.overrides import OVERRIDABLE, check_override, override_fields
from modelgate.core.serving.ports import VersionSource
from modelgate.errors import ErrorKind, ModelgateError

MANIFEST: dict[str, Any] = {
    "runtime": "onnxruntime",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


def principal(tenant: str, *scopes: str, kind: str = "key") -> Principal:
    return Principal(tenant, "key_1", frozenset(scopes), Plan("basic"), kind)


# -- the allow-list ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        {"batching": {"max_batch_size": 16, "max_queue_delay_us": 500}},
        {"batching": None},
        {"instances": 2, "execution": "thread"},
        {"hardware": {"prefer": "gpu"}},
        {"version_policy": {"latest": 1}},
    ],
)
def test_run_time_settings_may_be_overridden(config: dict[str, Any]) -> None:
    assert check_override(config) == config


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"runtime": "python", "artifact": "/tmp/x.py"}, "artifact"),
        ({"runtime": "python"}, "runtime"),
        ({"runtime_options": {"class": "X"}}, "runtime_options"),
        ({"runtime_options": {"intra_op_threads": 2}}, "runtime_options"),
        ({"tenants": ["ten_acme"]}, "tenants"),
        ({"rate_limit": {"requests_per_second": 0.001}}, "rate_limit"),
        ({"artifact": "../../../../etc/hostname"}, "artifact"),
        ({"batching": {"max_batch_size": 8, "extra": 1}}, "batching.extra"),
        ({"hardware": {"prefer": "gpu", "device": 3}}, "hardware.device"),
        ({"fallbacks": ["other"]}, "fallbacks"),
        ({"cache": {"ttl_seconds": 1}}, "cache"),
        ({"payload_logging": {"enabled": True}}, "payload_logging"),
        ({"name": "other"}, "name"),
    ],
)
def test_everything_else_is_refused_naming_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ModelgateError) as info:
        check_override(config)
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert f"'{field}'" in info.value.message


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda k: k not in OVERRIDABLE),
        st.none() | st.integers() | st.text(max_size=5),
        min_size=1,
        max_size=4,
    )
)
def test_any_unknown_field_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ModelgateError) as info:
        check_override(config)
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert f"'{min(config)}'" in info.value.message


def test_an_object_field_must_be_an_object() -> None:
    with pytest.raises(ModelgateError, match="'hardware' must be an object"):
        check_override({"hardware": "gpu"})


def test_override_fields_are_dotted_and_sorted() -> None:
    assert override_fields(
        {"tenants": ["a"], "batching": {"max_queue_size": 1, "max_batch_size": 2}}
    ) == ["batching.max_batch_size", "batching.max_queue_size", "tenants"]


# -- who may override ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (principal("ten_acme", "models:write"), False),
        # a tenant's credential claiming the scope (a token's scopes come from its issuer)
        (principal("ten_acme", "models:write", "models:configure", kind="jwt"), False),
        (principal("ten_ops", "models:write", "tenants:admin"), True),
        (principal(ADMIN_TENANT, "models:configure", kind="admin"), True),
        (principal(ADMIN_TENANT, "models:write", kind="admin"), False),
        (None, True),  # access control off
    ],
)
def test_only_operators_with_models_configure_may_override(
    who: Principal | None, allowed: bool
) -> None:
    assert may_configure_models(who) is allowed
    if not allowed:
        with pytest.raises(ModelgateError) as info:
            require_model_configuration(who, ["tenants"])
        assert info.value.kind is ErrorKind.PERMISSION_DENIED
        assert "models:configure" in info.value.message and "'tenants'" in info.value.message


def test_a_key_gets_models_configure_only_with_tenants_admin() -> None:
    with pytest.raises(ModelgateError, match="operator scope"):
        validate_scopes(["models:write", "models:configure"])
    assert validate_scopes(["tenants:admin", "models:configure"]) == (
        "tenants:admin",
        "models:configure",
    )


# -- where a model's files may be ----------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["/etc/hostname", "../model.onnx", "a/../../b", "..", "", "C:\\x", "a\\..\\b", "x\x00y"],
)
def test_artifact_names_are_relative_without_dot_dot(name: str) -> None:
    with pytest.raises(ModelgateError):
        check_relative(name)
    with pytest.raises(ModelgateError) as info:
        parse_manifest("m", {**MANIFEST, "artifact": name})
    assert "artifact" in info.value.message


@given(
    st.lists(
        st.text(alphabet="ab.", min_size=1, max_size=3).filter(lambda p: p not in (".", "..")),
        min_size=0,
        max_size=3,
    ),
    st.integers(0, 3),
    st.booleans(),
)
def test_any_path_with_dot_dot_or_a_root_is_refused(
    parts: list[str], where: int, absolute: bool
) -> None:
    parts = [*parts[:where], "..", *parts[where:]]
    name = ("/" if absolute else "") + "/".join(parts)
    with pytest.raises(ModelgateError):
        check_relative(name)


def _source(root: Path) -> VersionSource:
    folder = root / "repo" / "m" / "1"
    folder.mkdir(parents=True)
    return VersionSource(1, str(folder), parse_manifest("m", MANIFEST))


def test_a_file_in_the_version_folder_resolves(tmp_path: Path) -> None:
    source = _source(tmp_path)
    (Path(source.path) / "model.onnx").write_bytes(b"x")
    assert artifact_path(source, "model.onnx") == str((Path(source.path) / "model.onnx").resolve())


def test_a_symlink_to_a_sibling_version_is_allowed(tmp_path: Path) -> None:
    source = _source(tmp_path)
    other = Path(source.path).parent / "2"
    other.mkdir()
    (other / "model.onnx").write_bytes(b"x")
    os.symlink(other / "model.onnx", Path(source.path) / "model.onnx")
    assert artifact_path(source, "model.onnx") == str((other / "model.onnx").resolve())


@pytest.mark.parametrize("target", ["outside.onnx", "missing.onnx"])
def test_a_symlink_out_of_the_model_folder_is_refused_without_host_paths(
    tmp_path: Path, target: str
) -> None:
    source = _source(tmp_path)
    (tmp_path / "outside.onnx").write_bytes(b"x")
    os.symlink(tmp_path / target, Path(source.path) / "model.onnx")
    with pytest.raises(ModelgateError) as info:
        artifact_path(source, "model.onnx")
    assert "outside the model's folder" in info.value.message
    assert "model 'm' version 1" in info.value.message
    assert str(tmp_path) not in info.value.message


def test_a_missing_file_names_the_model_and_version_not_the_path(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with pytest.raises(ModelgateError) as info:
        artifact_path(source, "x.onnx")
    assert info.value.message == "artifact 'x.onnx' not found in model 'm' version 1"


def test_a_shared_file_may_sit_beside_the_versions(tmp_path: Path) -> None:
    source = _source(tmp_path)
    shared = Path(source.path).parent / "tokenizer.json"
    shared.write_text("{}")
    with pytest.raises(ModelgateError):
        artifact_path(source, "tokenizer.json", "tokenizer")
    assert artifact_path(source, "tokenizer.json", "tokenizer", shared=True) == str(
        shared.resolve()
    )


def test_a_version_folder_linked_from_elsewhere_keeps_its_own_files(tmp_path: Path) -> None:
    """The repository's layout is the operator's: a version folder may be a link; the files
    it holds resolve inside it."""
    elsewhere = tmp_path / "store" / "m1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model.onnx").write_bytes(b"x")
    (tmp_path / "repo" / "m").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "repo" / "m" / "1")
    source = VersionSource(1, str(tmp_path / "repo" / "m" / "1"), parse_manifest("m", MANIFEST))
    assert artifact_path(source, "model.onnx") == str((elsewhere / "model.onnx").resolve())
