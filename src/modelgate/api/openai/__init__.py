"""OpenAI-compatible routes: ``GET /v1/models`` and ``POST /v1/embeddings``."""
