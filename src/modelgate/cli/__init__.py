"""The ``modelgate`` command, one module per command group: ``root`` (``serve``,
``models``, ``monitor`` and the app that gathers the groups), ``access`` (plans, tenants,
keys), ``audit``, ``usage`` (and prices), ``privacy`` (payloads, subjects), ``deployments``,
``feedback``, ``jobs`` (and ``worker``), ``profile``; ``operator`` is what the commands that
act on the database share.

``app`` and ``main`` are the entry points (``modelgate = "modelgate.cli:main"``)."""

from modelgate.cli.root import app, main

__all__ = ["app", "main"]
