"""The ``modelgate`` command, one module per command group: ``root`` (``serve``,
``models``, ``monitor`` and the app that gathers the groups), ``admin`` (plans, tenants,
keys, usage, prices, audit, payloads), ``deployments``, ``feedback``, ``jobs`` (and
``worker``), ``profile``.

``app`` and ``main`` are the entry points (``modelgate = "modelgate.cli:main"``)."""

from modelgate.cli.root import app, main

__all__ = ["app", "main"]
