"""Gateway: the gateway's view of its nodes and how it sends them work.

The node table and the catalog of models it makes (``node_table``), the remote calls
routed by it (``cluster``), a node's announcement and answer (``nodes``), which failures
are a node's (``faults``), a gateway's models served through the nodes (``remote``), the
circuit breakers and retry budget that keep an outage from growing (``breaker``,
``retry``), which of a node's calls its gateway forwarded (``node_calls``), and the ports
of the node directory, the node client and the cluster's metrics (``ports``).
"""
