"""Writes an MLServer model repository with two scikit-learn models, for
tests/e2e/test_third_party_nodes.py; runs in ``build/mlserver-venv``:
``python sklearn_model.py FOLDER``.

- ``points``: a logistic regression on two features (class 1 far from the origin), its
  signature declared in ``model-settings.json`` (inputs ``features`` FP32 [-1, 2], output
  ``predict`` INT64 [-1, 1]) and no version: MLServer's default, which the gateway serves
  as version 1.
- ``undeclared``: the same model without a declared signature: its metadata lists no
  inputs, so the gateway leaves it out (it validates every request).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
}


def main() -> None:
    root = Path(sys.argv[1])
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 2], [3, 3], [2, 3], [3, 2]], np.float32)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    model = LogisticRegression().fit(x, y)
    for name, signature in (("points", SIGNATURE), ("undeclared", {})):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, folder / "model.joblib")
        settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib"},
            **signature,
        }
        (folder / "model-settings.json").write_text(json.dumps(settings))


if __name__ == "__main__":
    main()
