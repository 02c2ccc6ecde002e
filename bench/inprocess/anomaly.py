"""``anomaly``: the credit-risk REST request with a typical applicant, one in the reference's 1%
tails and one out of distribution, alternating, and the anomaly check alone for each (issue
11).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np
import orjson

from bench.inprocess.asgi import asgi_post, post_scope, rest_call
from bench.inprocess.timing import Call, Figures, per_call
from bench.workloads import AUTHORIZATION, CREDIT, CREDIT_ROW

#: credit-risk applicants the anomaly check scores 0 (``CREDIT_ROW``), about 0.29 (an income in
#: the reference's top 1%, below its maximum) and 1 (an income out of range, an unseen
#: home_ownership): what drifting traffic and garbage look like
ANOMALY_ROWS = {
    "typical row": CREDIT_ROW,
    "row in the 1% tails": [*CREDIT_ROW[:1], 300000.0, *CREDIT_ROW[2:]],
    "out-of-distribution row": [*CREDIT_ROW[:1], 9e9, *CREDIT_ROW[2:11], 7.0],
}


async def measure_anomaly(components: Any, figures: Figures) -> None:
    """The REST request and the anomaly check alone, for each of :data:`ANOMALY_ROWS`,
    measured in alternation so that a drift of the machine weighs on every row alike."""
    app, detector = components.rest_app, components.service.anomalies
    loaded = components.registry.get(CREDIT, None)
    path = f"/v2/models/{CREDIT}/infer"
    requests: dict[str, Call] = {}
    screens: dict[str, Call] = {}
    for name, row in ANOMALY_ROWS.items():
        body = orjson.dumps(
            {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": row}]}
        )
        answer = await asgi_post(app, path, orjson.loads(body))  # a flag answers 200
        requests[name] = rest_call(app, post_scope(path, body, AUTHORIZATION), body)
        inputs = {"features": np.asarray([row], dtype=np.float32)}
        screens[name] = functools.partial(detector.screen, loaded, inputs)
        print(f"{name}: {answer.get('parameters')}", file=sys.stderr)
    for label, calls, share in (
        ("RestApp", requests, 1.0),
        ("AnomalyDetector.screen", screens, 0.5),
    ):
        order = [*calls, *reversed(calls)]
        runs: dict[str, list[float]] = {name: [] for name in calls}
        for name in order:
            runs[name].append(await per_call(calls[name], figures.seconds * share))
        for name, values in runs.items():
            figures.out[f"{label}, {name}"] = sum(values) / len(values)
            print(label, name, [round(v, 1) for v in values], file=sys.stderr)
