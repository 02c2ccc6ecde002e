"""Gateway: the gateway's view of its nodes and how it sends them work.

The node directory and remote calls (``cluster``), a gateway's models served through the
nodes (``remote``), and the circuit breakers and retry budget that keep an outage from
growing (``breaker``, ``retry``).
"""
