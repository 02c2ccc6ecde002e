"""Issue 15's "Measured" table in one run, against real ``modelgate serve`` processes with
access control on and tenant keys (bench/flood/keys.py):

    .venv/bin/python -m bench.flood --models build/models [--only ROW] [--server-share 0.1]
    .venv/bin/python -m bench --only flood            # the same, as a suite

Rows (``--only``, repeatable): ``fairness`` (tenants B and C beside A's flood),
``refusal-cost`` (server CPU per refusal vs per inference), ``overload`` (4x capacity,
shedding off / 20 ms / 50 ms), ``key-cache`` (tenant vs bootstrap key at 1,500 req/s),
``outage`` (a known key through a 6 s PostgreSQL outage). Servers are pinned to CPU 0; this
process (the open-loop generator, bench/openloop.py) and wrk to CPU 1. Every ratio is taken
within the run. About 3-4 minutes for all.
"""

from bench.flood.measure import Row
from bench.flood.run import ROWS, run_flood

__all__ = ["ROWS", "Row", "run_flood"]
