"""Serving: the request path and the models it runs.

The inference use case (``inference``, ``embeddings``, ``caching``), the model registry and
its life cycle (``registry``, ``model_control``, ``overrides``), manifests and their files
(``manifest``, ``artifacts``, ``profiles``), running a model (``batching``, ``execution``,
``signature``, ``tensors``, ``request_size``, ``statistics``), the request path's context and
tracing port (``request_context``, ``tracing``), the background recorders' base and row
writer (``recording``, ``row_writer``), and the ports of runtimes, repositories and metrics
(``ports``).
"""
