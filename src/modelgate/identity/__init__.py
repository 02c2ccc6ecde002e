"""Identities that come from outside modelgate's own key store.

``modelgate.identity.jwt``: JWT bearer tokens, verified against static public keys or a JWKS
URL (:class:`~modelgate.identity.jwt.JwtVerifier`), and signed by modelgate itself for the
OAuth2 client-credentials grant (:class:`~modelgate.identity.jwt.TokenIssuer`);
``jwt_keys`` (the static keys and the JWKS cache that check signatures) and ``jwt_claims``
(what the claims must hold and mean) serve it. ``modelgate.identity.tokens``: the core's
token verifier on top of it.

Nothing is imported here, so that importing the package pulls in neither PyJWT nor httpx.
"""
