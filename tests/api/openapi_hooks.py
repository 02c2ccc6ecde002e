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
        if model is not None and case.path.endswith("/monitoring"):
            # a model not loaded yet answers 503 there (docs/monitoring.md), and only doubler
            # is preloaded: which of the others an inference has loaded by then depends on
            # the order of the operations, which any new route changes
            model = "doubler"
        if model is not None:
            parameters["model"] = model
            if "version" in parameters:
                parameters["version"] = "1"
