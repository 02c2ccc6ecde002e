"""Error answers become the SDK's exceptions, whichever of the server's shapes they have."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

import modelgate_client as mg
from modelgate_client._errors import error_from_response, retry_after_seconds


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, mg.BadRequestError), (401, mg.AuthenticationError), (403, mg.PermissionDeniedError),
     (404, mg.NotFoundError), (409, mg.ConflictError), (413, mg.BadRequestError),
     (422, mg.BadRequestError), (429, mg.RateLimitError), (500, mg.ServerError),
     (503, mg.ServerError), (504, mg.ServerError), (418, mg.APIError)],
)  # fmt: skip
def test_status_to_exception(status: int, kind: type[mg.APIError]) -> None:
    error = error_from_response(httpx.Response(status, json={"error": "why"}))
    assert type(error) is kind and error.status == status and error.message == "why"
    assert error.code is None


def test_the_openai_shape_gives_its_code() -> None:
    body = {"error": {"message": "No job", "type": "invalid_request_error", "param": None,
                      "code": "model_not_found"}}  # fmt: skip
    headers = {"x-request-id": "abc"}
    error = error_from_response(httpx.Response(404, json=body, headers=headers))
    assert isinstance(error, mg.NotFoundError) and error.message == "No job"
    assert error.code == "model_not_found" and error.request_id == "abc"
    body["error"]["code"] = None
    assert error_from_response(httpx.Response(404, json=body)).code == "invalid_request_error"


def test_the_admin_validation_shape_names_the_fields() -> None:
    body = {
        "detail": [{"type": "missing", "loc": ["body", "default_version"], "msg": "Field required"}]
    }
    error = error_from_response(httpx.Response(422, json=body))
    assert isinstance(error, mg.BadRequestError) and error.code == "validation_error"
    assert error.message == "body.default_version: Field required"


def test_a_body_that_is_not_json_is_kept_as_text() -> None:
    error = error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(error, mg.ServerError) and error.message == "<html>bad gateway</html>"
    empty = error_from_response(httpx.Response(503))
    assert empty.message == "Service Unavailable"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "7"})) == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after_seconds(httpx.Headers({"retry-after": later}))
    assert seconds is not None and 20 < seconds <= 30
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers()) is None
    limited = error_from_response(
        httpx.Response(429, json={"error": "x"}, headers={"retry-after": "2"})
    )
    assert isinstance(limited, mg.RateLimitError) and limited.retry_after == 2.0
