"""A repository load request's parameters, read the same way on REST and gRPC.

Triton's load takes ``parameters.config`` (a JSON model configuration, as a string or, on
REST, an object) and ``file:<path>`` parameters (a model folder's files, uploaded). The
config goes to the core as it is, where a Triton configuration is mapped onto the manifest
(core/serving/triton_config.py); uploaded files are refused on both protocols with the same
UNSUPPORTED (REST 501, gRPC UNIMPLEMENTED): modelgate runs only what the operator put in the
model repository.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelgate.api.extensions import UPLOADED_FILES, unsupported_extension
from modelgate.errors import invalid

__all__ = ["load_config"]


def load_config(parameters: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``config`` parameter as a JSON object (None: not given)."""
    if any(str(key).startswith("file:") for key in parameters):
        raise unsupported_extension(UPLOADED_FILES)
    config = parameters.get("config")
    if config is None:
        return None
    if isinstance(config, str | bytes):
        try:
            config = orjson.loads(config)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"parameter 'config' is malformed JSON: {exc}") from None
    if not isinstance(config, dict):
        raise invalid("parameter 'config' must be a JSON object")
    return config
