"""``python -m modelgate.boot.openapi [FILE]``: write the OpenAPI document without a server.

The document of a server with every optional route served (credentials required, OAuth and
JWKS with a signing key, jobs, feedback, the result cache), built from the same components
``modelgate serve`` builds, over an empty model repository in a temporary data directory.
The TypeScript SDK generates its types from it (clients/typescript, ``npm run generate``).
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from modelgate.api.openapi.document import build_document
from modelgate.api.rest.app import RestApp
from modelgate.boot.serving import build_components
from modelgate.identity.jwt import generate_signing_key
from modelgate.settings import Settings

__all__ = ["full_document"]


def full_document() -> dict[str, Any]:
    """The document of a server that serves every optional route."""
    with tempfile.TemporaryDirectory(prefix="modelgate-openapi-") as data:
        settings = Settings(
            data_dir=Path(data),
            model_repository=Path(data) / "models",
            auth="required",
            admin_key=SecretStr(secrets.token_urlsafe(32)),  # never used: nothing is served
            jwt_issuer="https://modelgate.invalid",
            jwt_signing_key=SecretStr(generate_signing_key("ES256")),
        )
        app = build_components(settings).rest_app
        assert isinstance(app, RestApp)
        return build_document(app)


def main(argv: list[str]) -> int:
    text = json.dumps(full_document(), indent=2, sort_keys=True) + "\n"
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
