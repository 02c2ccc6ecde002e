"""Serving: the models and how one of them runs a request.

What an inference is asked and answers (``requests``), the models' metadata, health and
repository control (``catalog``), the result cache (``caching``), the model registry and
its life cycle (``registry``, ``version_loading``, ``model_control``, ``overrides``),
manifests and their files (``manifest``, ``artifacts``, ``profiles``), running a model
(``batching``, ``execution``, ``signature``, ``tensors``, ``request_size``,
``statistics``), the request path's context and spans (``request_context``, ``tracing``),
the background recorders' base and row writer (``recording``, ``row_writer``), and the
ports of runtimes, repositories, the result store, the tracer and metrics (``ports``). The
request path that composes the contexts is :mod:`modelgate.core.pipeline`; serving imports
only access.
"""
