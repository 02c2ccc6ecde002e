"""Governance: what of an inference may be kept, and what a data subject may ask of it.

Whether an inference may be kept (``consent``), the payload logger (``payload_logger``),
logged payloads and their ports (``payloads``), PII redaction (``redaction``) and the
privacy use cases (``privacy``). Training datasets built from consented payloads are the
learning loop's, in monitoring (``datasets``).
"""
