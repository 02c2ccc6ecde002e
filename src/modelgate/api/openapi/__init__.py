"""The OpenAPI document of every HTTP route (``document.py``), what it says of each REST
route (``operations.py``), the REST bodies' schemas (``oip.py``, ``v1.py``) and the pages
that serve it (``pages.py``). docs/api-reference.md says what a user gets."""
