"""A job item's wire format: each item of a job is stored as its OIP request body (JSON)
and its result as its OIP response body, always with JSON ``data``. Shared by the
``/v1/jobs`` routes (:mod:`modelgate.api.rest.jobs`, which check items at submission) and
the job worker (:mod:`modelgate.boot.jobs`), which must not depend on the REST adapter.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelgate.api.oip_codec import decode_infer_request, encode_infer_response
from modelgate.core.serving.requests import InferenceRequest, InferenceResponse

__all__ = ["decode_job_item", "encode_job_response"]


def decode_job_item(
    model: str, version: str | None, body: dict[str, Any], max_elements: int
) -> InferenceRequest:
    """An item's OIP request body as a request (what submission checks, and workers run)."""
    return decode_infer_request(model, version, orjson.dumps(body), None, max_elements)


def encode_job_response(response: InferenceResponse, parameters: dict[str, Any]) -> dict[str, Any]:
    """An item's OIP response body, always with JSON ``data`` (results are stored as JSON)."""
    for output in response.requested or ():
        output.parameters.pop("binary_data", None)
    params = {k: v for k, v in parameters.items() if k != "binary_data_output"}
    body, _ = encode_infer_response(response, params)
    document: dict[str, Any] = orjson.loads(body)
    return document
