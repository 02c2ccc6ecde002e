"""The management API under ``/admin``: a FastAPI app, because here its OpenAPI document
and request validation pay for themselves (the inference path stays plain ASGI)."""
