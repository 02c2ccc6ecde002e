"""Trainers shipped with modelgate, for its demo models (``credit_risk``). Imported only in
a trainer's process, never by the server."""
