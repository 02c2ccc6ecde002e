"""In-process storage backends: for tests and single-process experiments (nothing persists)."""
