"""``/openapi.json`` and its pages, ``/docs`` (Swagger UI) and ``/redoc``, with their
assets served by modelgate itself (fastapi-offline's copies: no CDN, they work offline).

Open to everyone, as ``/admin/openapi.json`` and ``/admin/docs`` are, and as FastAPI and
LiteLLM serve theirs: the document names routes and shapes, never a model, tenant or key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from modelgate import __version__

__all__ = ["build_docs_app"]


def build_docs_app(document: Callable[[], dict[str, Any]]) -> FastAPI:
    """The app answering ``/openapi.json``, ``/docs``, ``/docs/...`` and ``/redoc``;
    ``document`` is called once, on the first request that needs it."""
    app = FastAPIOffline(
        title="modelgate API",
        version=__version__,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
        static_url="/docs/static",
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document()
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
