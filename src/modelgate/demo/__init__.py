"""Builders for the demo model repository.

The server ships no models of its own; these builders produce a small, reproducible repository
(a tabular ONNX classifier and a sentence-embedding model) so that `make run`, the tests and the
benchmarks have something real to serve. Everything is generated offline from pinned packages,
so two builds of the same recipe give the same models.
"""
