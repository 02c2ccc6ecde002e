"""Demo traffic for the learning loop: applicants from the credit-risk generator sent to a
running server, then their outcomes sent back as feedback (``python -m modelgate.demo
traffic``, the README's loop).

With ``shifted`` the outcomes follow a relationship the served versions never saw (the
richer half of the applicants defaults), so a model retrained on this traffic scores
better on it than the serving version: what the learning loop is for. Without it the
outcomes are the generator's own. A client of the public API only (OIP v2 REST and
``POST /v1/feedback``), with the caller's key; every call has a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from modelgate.demo.credit_risk import FEATURE_NAMES, INPUT_NAME, generate

__all__ = ["ROWS_PER_REQUEST", "TrafficResult", "outcomes", "send_traffic"]

#: applicants per inference request (each labelled by one feedback item)
ROWS_PER_REQUEST = 20
#: feedback items per ``POST /v1/feedback`` (the route takes up to 1,000)
_ITEMS_PER_POST = 50
_INCOME = FEATURE_NAMES.index("annual_income")


@dataclass(frozen=True, slots=True)
class TrafficResult:
    requests: int
    rows: int
    labelled: int
    defaults: int


def outcomes(
    n_rows: int, seed: int, *, shifted: bool
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``n_rows`` applicants and whether each defaulted: the generator's outcomes, or with
    ``shifted`` the richer half defaulting (the relationship turned round)."""
    data = generate(n_rows, seed)
    if not shifted:
        return data.features, data.labels.astype(np.int64)
    income = data.features[:, _INCOME]
    return data.features, (income > np.median(income)).astype(np.int64)


def send_traffic(
    url: str,
    key: str,
    *,
    rows: int,
    seed: int = 1,
    shifted: bool = False,
    model: str = "credit-risk",
    prefix: str = "demo",
    timeout_s: float = 30.0,
) -> TrafficResult:
    """Infer ``rows`` applicants on ``model`` (ROWS_PER_REQUEST per request, each request
    named ``<prefix>-<seed>-<first row>``), then label every row through feedback. Raises
    :class:`httpx.HTTPStatusError` on any answer but success."""
    features, labels = outcomes(rows, seed, shifted=shifted)
    headers = {"Authorization": f"Bearer {key}"}
    items: list[dict[str, Any]] = []
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
        for start in range(0, rows, ROWS_PER_REQUEST):
            batch = features[start : start + ROWS_PER_REQUEST]
            request_id = f"{prefix}-{seed}-{start}"
            body = {
                "id": request_id,
                "inputs": [
                    {"name": INPUT_NAME, "datatype": "FP32", "shape": list(batch.shape),
                     "data": batch.reshape(-1).tolist()}
                ],
            }  # fmt: skip
            client.post(f"/v2/models/{model}/infer", json=body).raise_for_status()
            labelled = labels[start : start + ROWS_PER_REQUEST].tolist()
            items.append({"request_id": request_id, "labels": labelled})
        for start in range(0, len(items), _ITEMS_PER_POST):
            sent = client.post(
                "/v1/feedback", json={"items": items[start : start + _ITEMS_PER_POST]}
            )
            sent.raise_for_status()
    return TrafficResult(len(items), rows, rows, int(labels.sum()))
