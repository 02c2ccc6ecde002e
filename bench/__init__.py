"""Benchmarks of modelgate against raw ONNX Runtime and minimal baselines (``python -m bench``).

See docs/benchmarks.md for the method and the latest results.
"""
