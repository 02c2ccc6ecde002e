"""Metrics (and later traces and logs) of modelgate."""
