"""Whether an inference may be kept, and under which terms: the rule payload logging
(:class:`~modelgate.core.governance.payload_logger.PayloadLogger`) and the feedback recorder
share.

An inference's inputs and outputs are stored only when all three agree:

1. **the model** allows it: ``payload_logging.enabled`` in its manifest, which names the
   purpose and the retention;
2. **the tenant** opted in (``PUT /admin/tenants/{t}/payload-logging``); with access
   control off there is no tenant to consent, so nothing is stored;
3. **the request** does not withhold it: its parameters ``consent`` and ``log_payload``,
   when present, must be ``true`` (the boolean, or the string "true"); any other value
   (``false``, ``"no"``, ``0``, ...) withholds consent. A request can narrow, never widen:
   without 1 and 2 a ``consent: true`` changes nothing.

The row's purpose is the tenant's when it named one, else the model's; its retention the
shorter of the two. The data subject is the request parameter ``subject`` (a string or an
integer, at most 256 characters); it is stored only as its keyed pseudonym.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelgate.core.governance.payloads import MAX_SUBJECT_LENGTH
from modelgate.core.governance.ports import PayloadConsent
from modelgate.core.serving.manifest import PayloadLoggingSpec

__all__ = [
    "CONSENT_PARAMETERS",
    "SUBJECT_PARAMETER",
    "LoggingTerms",
    "logging_terms",
    "request_allows",
    "subject_of",
]

#: request parameters that withhold consent unless they are true
CONSENT_PARAMETERS = ("consent", "log_payload")
#: the request parameter naming the data subject (OpenAI's ``user``)
SUBJECT_PARAMETER = "subject"


@dataclass(frozen=True, slots=True)
class LoggingTerms:
    """Why and how long one inference is kept."""

    purpose: str
    retention_days: int


def request_allows(parameters: Mapping[str, Any]) -> bool:
    """Does the request leave consent as it is (no parameter, or ``true``)?"""
    for name in CONSENT_PARAMETERS:
        if name in parameters:
            value = parameters[name]
            if value is not True and not (isinstance(value, str) and value.lower() == "true"):
                return False
    return True


def logging_terms(
    policy: PayloadLoggingSpec | None,
    consent: PayloadConsent | None,
    parameters: Mapping[str, Any],
) -> LoggingTerms | None:
    """The terms an inference is kept under, or None when it must not be kept."""
    if policy is None or not policy.enabled or consent is None or not consent.enabled:
        return None
    if parameters and not request_allows(parameters):
        return None
    retention = policy.retention_days
    if consent.retention_days is not None:
        retention = min(retention, consent.retention_days)
    return LoggingTerms(consent.purpose or policy.purpose, retention)


def subject_of(parameters: Mapping[str, Any]) -> str | None:
    """The data subject a request names, or None (not given, or not an id)."""
    value = parameters.get(SUBJECT_PARAMETER)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_SUBJECT_LENGTH:
        return value
    return None
