"""Governance: what of an inference may be kept, and what a data subject may ask of it.

Whether an inference may be kept (``consent``), the payload logger (``payload_logger``),
logged payloads' stored form (``payloads``), the rows and the ports that keep and seal
them (``ports``), PII redaction (``redaction``) and the privacy use cases (``privacy``).
Training datasets built from consented payloads are the learning loop's, in monitoring
(``datasets``).
"""
