"""The use cases of modelgate and the ports they need.

Nothing here imports a web, gRPC, database, Redis or model-runtime library: adapters and
runtimes are handed in through constructors by :mod:`modelgate.bootstrap`.
"""
