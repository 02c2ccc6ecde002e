"""Schemathesis hooks of the whole-document run (tests/api/test_schemathesis.py).

Generated model names are nearly all unknown (404 before anything else is read): most cases
name a model the server has instead, so that bodies reach the decoders and the models. Load and
unload keep their generated names: a model unloaded mid-run would make the rest 503. The
key the run holds is the operator's bootstrap key, which no admin route can revoke.
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis

_MODELS = itertools.cycle(["doubler", "doubler", "cached-doubler", "echo-text", None])


@schemathesis.hook
def before_call(_context: Any, case: Any, **_kwargs: Any) -> None:
    parameters = case.path_parameters or {}
    if "model" in parameters and "/repository/" not in case.path:  # no unloading
        model = next(_MODELS)
        if model == "echo-text" and case.path.endswith("/monitoring"):
            # the monitoring report of a model no request has loaded yet is 503 by design
            # (core/monitoring/monitor.py); whether echo-text is loaded by then depended on
            # the order of the document's operations
            model = "doubler"
        if model is not None:
            parameters["model"] = model
            if "version" in parameters:
                parameters["version"] = "1"
