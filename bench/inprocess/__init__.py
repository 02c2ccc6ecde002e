"""Where a credit-risk request's time goes inside modelgate, with no server or socket.

``rest``: the ASGI app called in-process, and each layer below it, sequentially (c=1) and 64
at a time. ``grpc``: modelgate's ``ModelInfer`` servicer method against the baseline's
(``bench.baseline_grpc``), called directly without grpc, and the gRPC codec.

``refusals``: the CPU of one refused request (a tenant flooding past its plan's rate limit,
429 / RESOURCE_EXHAUSTED) against one served inference of a tenant key, REST and gRPC,
with the refusal memo (core/admission/refusals.py) and without it (the full path).
``anomaly``: the credit-risk REST request with a typical applicant, one in the reference's 1%
tails (scored, not flagged) and one out of distribution (flagged: an income out of range and an
unseen category), alternating (A B C C B A, the mean of each), and the anomaly check alone for
each: every row is scored by the small-request loop, and an odd row must cost no more than a
typical one within 10% (issue 11's odd rows).

``steps``: the CPU µs per request of each step of the credit-risk REST request (auth,
admission, decode, validation, anomaly, cache, run, metering, metrics, response, monitoring,
feedback, encode, log) with a tenant key, every feature on as ``make run`` builds it: a timer
around each step's call, and each feature switched off in turn against all on (ablation),
with a control pair; ``bench.step_costs`` makes the table (issue 11).

``stalls``: how long the event loop is held at a time while it serves 1,000 tenant-key
requests a second in-process, every background writer flushing as in a server: the gaps of
a probe that sleeps 1 ms at a time (``bench/inprocess/stalls.py``; a stall is a gap over
5 ms).

``--auth tenant`` also measures every request with a tenant's key (``bench.tenant``: a plan
with rate limits and quotas that never refuse), each such figure measured in alternation
with its bootstrap-key twin (A B B A, the mean of each) and named with ", tenant key";
``--redis URL`` puts the rate limiter, quota counters and abuse strikes in Redis under a
unique key prefix, removed at the end.

Run in a fresh process pinned to one CPU::

    python -m bench.inprocess rest|grpc|refusals MODELS [SECONDS] [--auth admin|tenant]
        [--redis URL]
    python -m bench.inprocess rest|grpc|anomaly MODELS [SECONDS] [--auth admin|tenant] [--redis URL]
    python -m bench.inprocess steps|stalls MODELS [SECONDS] [--redis URL]   (a tenant key)

prints JSON (µs per call).
"""
