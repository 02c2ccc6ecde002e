"""``/dashboard`` and ``/dashboard/static/...``: the dashboard's page and its assets, files of
this package served from memory (read once, on first use), with no CDN.

The page holds no data: it asks for an API key and calls the JSON APIs with it
(``/admin/usage``, ``/admin/tenants/{id}/quotas``, ``/admin/traffic``, deployments,
monitoring, ``/v1/jobs``), whose scopes decide what the key sees. So the page itself needs no
credential, as ``/docs`` needs none. Every answer carries a strict Content-Security-Policy:
scripts, styles and fetches from this origin only, no inline script, no framing.
"""

from __future__ import annotations

from importlib import resources

from modelgate.api.rest.asgi import Receive, Scope, Send, respond

__all__ = ["PAGE", "DashboardApp"]

#: the page's path; its assets are under ``PAGE + "/static/"``
PAGE = "/dashboard"
_STATIC = PAGE + "/static/"
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
_SECURITY = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class DashboardApp:
    """Answers GET of the page and its assets; 404 for any other path under
    ``/dashboard``, 405 for any other method."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, bytes]] | None = None

    def files(self) -> dict[str, tuple[bytes, bytes]]:
        """path -> (body, content type), the package's static files (a fixed set: a path
        names one of them or nothing, so no path reaches the file system)."""
        if self._files is None:
            found: dict[str, tuple[bytes, bytes]] = {}
            folder = resources.files(__package__).joinpath("static")
            for item in folder.iterdir():
                kind = _TYPES.get(item.name[item.name.rfind(".") :])
                if kind is not None and item.is_file():
                    found[_STATIC + item.name] = (item.read_bytes(), kind)
            found[PAGE] = found.pop(_STATIC + "index.html")
            self._files = found
        return self._files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        found = self.files().get(scope["path"])
        if found is None:
            await respond(send, 404, b'{"error":"no such page"}', _json())
        elif method != "GET":
            headers = [*_json(), (b"allow", b"GET")]
            await respond(send, 405, b'{"error":"method not allowed"}', headers)
        else:
            body, kind = found
            await respond(send, 200, body, [(b"content-type", kind), *_SECURITY])


def _json() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), *_SECURITY]
