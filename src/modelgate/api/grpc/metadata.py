"""The core's metadata, configuration, statistics and repository answers as
``grpc_service.proto`` messages, and a load request's ``config`` parameter as a manifest
override."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2, service_pb2

from modelgate.api import load_request
from modelgate.api.grpc.codec import decode_parameters

__all__ = [
    "load_config",
    "model_config_response",
    "model_metadata_response",
    "model_statistics_response",
    "repository_index_response",
    "server_metadata_response",
]


def server_metadata_response(meta: dict[str, Any]) -> Any:
    return service_pb2.ServerMetadataResponse(
        name=meta["name"], version=meta["version"], extensions=meta["extensions"]
    )


def model_metadata_response(meta: dict[str, Any]) -> Any:
    tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    # The proto has no parameters field, so the model card is REST-only.
    return service_pb2.ModelMetadataResponse(
        name=meta["name"],
        versions=meta["versions"],
        platform=meta["platform"],
        inputs=[
            tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]
        ],
        outputs=[
            tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in meta["outputs"]
        ],
    )


def model_config_response(config: dict[str, Any]) -> Any:
    message = json_format.ParseDict(
        config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True
    )
    return service_pb2.ModelConfigResponse(config=message)


def model_statistics_response(stats: dict[str, Any]) -> Any:
    return json_format.ParseDict(
        stats, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True
    )


def repository_index_response(rows: Sequence[Mapping[str, Any]]) -> Any:
    index = service_pb2.RepositoryIndexResponse.ModelIndex
    return service_pb2.RepositoryIndexResponse(
        models=[
            index(
                name=r["name"],
                version=r.get("version", ""),
                state=r["state"],
                reason=r.get("reason", ""),
            )
            for r in rows
        ]
    )


def load_config(params: Any) -> dict[str, Any] | None:
    """``parameters["config"]`` (api/load_request.py)."""
    return load_request.load_config(decode_parameters(params))
