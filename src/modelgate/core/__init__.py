"""The use cases of modelgate and the ports they need.

Nothing here imports a web, gRPC, database, Redis or model-runtime library: adapters and
runtimes are handed in through constructors by :mod:`modelgate.boot`.

One package per bounded context: ``serving`` (the request path and the models it runs), ``gateway``
(a gateway's nodes), ``access`` (who calls, what they may do), ``admission`` (limits, quotas, abuse,
usage), ``traffic`` (deployments: which version answers), ``monitoring`` (drift, anomalies,
feedback, alerts), ``governance`` (payload logging and privacy) and ``jobs`` (asynchronous jobs). No
``__init__`` imports anything: import modules by their full path.
"""
