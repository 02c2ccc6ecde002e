"""Model runtimes: each turns a version folder into a
:class:`~modelgate.core.serving.ports.Predictor`.

One module per runtime; a runtime's library is imported only when that runtime is used
(:func:`modelgate.runtimes.registry.loaders`).
"""
