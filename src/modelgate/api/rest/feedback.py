"""``POST /v1/feedback``: ground truth for earlier predictions, by request id.

Body: one item, ``{"request_id": "...", "label": 1}`` (``"row": N`` for row N of a
request of several rows; default 0) or ``{"request_id": "...", "labels": [1, 0, ...]}``
(one per row), or a batch ``{"items": [item, ...]}`` (at most :data:`MAX_ITEMS`), all or
none. A label is a class index: an integer from 0 to 2**31 - 1 (booleans are not). The
answer is ``{"accepted": N}``, the number of rows labelled. Errors have OpenAI's shape,
like every ``/v1`` route.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelgate.core.access.identity import Principal
from modelgate.core.monitoring.feedback import MAX_LABEL, FeedbackItem, FeedbackService
from modelgate.core.monitoring.feedback_recorder import MAX_REQUEST_ID
from modelgate.errors import invalid

__all__ = ["MAX_ITEMS", "decode_feedback", "submit_feedback"]

#: the most items one request may carry
MAX_ITEMS = 1000
#: the most labels one item may carry (rows of one request)
MAX_LABELS = 65536
_ITEM_KEYS = frozenset({"request_id", "label", "labels", "row"})


async def submit_feedback(
    service: FeedbackService, body: bytes, principal: Principal | None
) -> bytes:
    accepted = await service.submit(principal, decode_feedback(body))
    return orjson.dumps({"accepted": accepted})


def decode_feedback(body: bytes) -> list[FeedbackItem]:
    """The items of a feedback body; INVALID_ARGUMENT naming the first problem."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise invalid("the request body must be a JSON object")
    if "items" in document:
        if set(document) != {"items"}:
            raise invalid("a batch has only 'items'")
        items = document["items"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise invalid(f"'items' must be a list of 1 to {MAX_ITEMS} objects")
        return [_item(item, f"items[{i}]") for i, item in enumerate(items)]
    return [_item(document, "body")]


def _item(value: Any, where: str) -> FeedbackItem:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be an object")
    unknown = set(value) - _ITEM_KEYS
    if unknown:
        raise invalid(f"{where}: unknown field '{sorted(unknown)[0]}'")
    request_id = value.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_REQUEST_ID:
        raise invalid(f"{where}: 'request_id' must be a string of 1 to {MAX_REQUEST_ID} characters")
    has_label, has_labels = "label" in value, "labels" in value
    if has_label == has_labels:
        raise invalid(f"{where}: give either 'label' or 'labels'")
    if has_labels:
        labels = value["labels"]
        if "row" in value:
            raise invalid(f"{where}: 'row' goes with 'label', not 'labels'")
        if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
            raise invalid(f"{where}: 'labels' must be a list of 1 to {MAX_LABELS} labels")
        return FeedbackItem(request_id, labels=tuple(_label(v, where) for v in labels))
    row = value.get("row", 0)
    if not _integer(row) or not 0 <= row <= MAX_LABELS:
        raise invalid(f"{where}: 'row' must be an integer from 0 to {MAX_LABELS}")
    return FeedbackItem(request_id, label=_label(value["label"], where), row=row)


def _label(value: Any, where: str) -> int:
    if not _integer(value) or not 0 <= value <= MAX_LABEL:
        raise invalid(f"{where}: a label is a class index, an integer from 0 to {MAX_LABEL}")
    return int(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
