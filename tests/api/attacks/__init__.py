"""The attack suite that docs/security.md promises: tables of hostile requests against a real
in-process :class:`Server` (REST and gRPC; once on SQLite, once on PostgreSQL + Redis, see
conftest.py), each refused with the right status in its protocol's error shape, never a
5xx, and never an answer that holds another tenant's data.

1. credentials x routes: missing, malformed, unknown, expired, revoked, another tenant's,
   a disabled tenant's, and tampered or forged JWTs, against OIP REST inference and
   metadata, OpenAI ``/v1/models``, an admin route and gRPC ``ModelInfer``
   (test_credentials.py);
2. cross-tenant access to every route that carries an id (models, tenants, keys, usage,
   quotas; REST and gRPC) answers exactly like an id that does not exist, and no list
   shows another tenant's records (test_cross_tenant.py);
3. mass assignment: privilege fields in admin bodies are refused and change nothing; a key
   (or a token, or ``/oauth/token``) cannot mint more rights than it holds
   (test_mass_assignment.py);
4. SQL/JSON injection strings in every text field (a table, and hypothesis for the admin
   names and the usage parameters): a 4xx, or a 2xx where the value is legal, never a
   5xx; the tables hold what they held and the server still answers (test_injection.py);
5. no key, token or admin key reaches the logs (test_logs.py).

Jobs do not exist yet, so no job routes are covered: add their ids to ``CROSS_TENANT`` and
their text fields to ``REST_FIELDS`` / ``GRPC_FIELDS`` when they do.

Tenants, keys and usage are created through the store (fixed ids); the models are the
fixture models plus two private copies of ``doubler``: ``acme-only`` (tenant ``ten_acme``)
and ``globex-only`` (tenant ``ten_globex``). The attacker is acme; everything of globex's
has "globex" in its id or is listed in :attr:`World.foreign`, so a leak is a substring.
Each test module gets a world of its own per backend (world.py builds it).

The server's address is 127.0.0.1 for every request, and its tables send hundreds of
refused credentials and failing requests: the abuse thresholds are raised out of the way
(the throttle has a suite of its own, tests/api/test_abuse.py).
"""
