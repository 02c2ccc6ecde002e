"""The live dashboard at ``/dashboard``: a static page that reads modelgate's own JSON APIs
with the API key typed into it (docs/dashboard.md)."""
