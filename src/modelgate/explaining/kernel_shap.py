"""``ShapKernelAttributor``: the :class:`~modelgate.core.serving.attribution.KernelAttributor`
of models the ``linear`` method cannot explain, computed by SHAP's ``KernelExplainer``.

SHAP (and numba, scipy, pandas under it) is imported on the first explanation, not when the
server starts: most requests never ask for one, and the import costs about two seconds.

For each row, KernelExplainer builds its coalition samples, each a copy of the background
with the sampled features taken from the row, and calls the model once with all of them
(``samples * len(background)`` rows), then solves the weighted regression under the
constraint that the attributions add up to ``link(model(row)) - base``. The regression
keeps every feature (``l1_reg=False``): a feature selection would change which features
get attributions from one row to the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelgate.core.serving.attribution import ModelFunction, Rows

__all__ = ["ShapKernelAttributor"]


class ShapKernelAttributor:
    """KernelSHAP attributions in ``identity`` or ``logit`` space."""

    def attribute(
        self, model: ModelFunction, rows: Rows, background: Rows, link: str, samples: int
    ) -> tuple[Rows, float, int]:
        import shap  # lazily: see the module docstring

        evaluations = 0

        def counted(data: Any) -> Any:
            nonlocal evaluations
            evaluations += len(data)
            return model(np.asarray(data, dtype=np.float64))

        explainer = shap.KernelExplainer(counted, background, link=link)
        values = explainer.shap_values(rows, nsamples=samples, silent=True, l1_reg=False)
        base = float(np.asarray(explainer.expected_value).reshape(-1)[0])
        return np.asarray(values, dtype=np.float64).reshape(rows.shape), base, evaluations
