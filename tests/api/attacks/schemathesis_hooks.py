"""Schemathesis hooks of the admin API suite (``SCHEMATHESIS_HOOKS``).

Generated data repeats itself (``"0"`` is a favourite), and a repeated valid
``Idempotency-Key`` on another request is rightly refused with 422: each valid key gets a
suffix of its own, so a key means one request, as a client would use it. Malformed keys
(negative tests) are sent as generated.

The key the suite runs with (``MODELGATE_SUITE_KEY_ID``) is never revoked or rotated by the
run itself: a tenant key with ``keys:admin`` may rightly revoke itself, and every later
request would then test nothing but 401.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import schemathesis

_VALID = re.compile(r"[!-~]{1,200}")
_SERIAL = itertools.count()
_KEEP = os.environ.get("MODELGATE_SUITE_KEY_ID")


@schemathesis.hook
def before_call(_context: Any, case: Any, **_kwargs: Any) -> None:
    parameters = case.path_parameters or {}
    if _KEEP is not None and parameters.get("key_id") == _KEEP:
        parameters["key_id"] = "key_kept_by_the_suite"  # unknown: 404
    headers = case.headers or {}
    for name, value in headers.items():
        if name.lower() == "idempotency-key" and _VALID.fullmatch(value):
            headers[name] = f"{value}.{next(_SERIAL)}"
