"""The REST surface: OIP v2 (JSON and binary tensor data), OpenAI routes and /metrics."""
