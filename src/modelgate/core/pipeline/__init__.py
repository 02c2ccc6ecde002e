"""Pipeline: the request path that composes every context.

The inference use case (``inference``: route, authorize, validate, screen, admit, look up,
run, meter, notify, as named steps), its spans (``spans``) and text embeddings on top of it
(``embeddings``). It sits above traffic, monitoring, admission and serving and below jobs;
nothing below it imports it.
"""
