"""Which of a node's calls a gateway forwarded, and so was already recorded there.

A gateway authenticates, admits and meters its client's request, records its prediction
for feedback and logs its payload (with the client's consent) before and after it forwards
the inference to a node (docs/scale-out.md). Doing the same again on the node would write a
second usage row (charged to the gateway's key, not the client), a second feedback row
under a request id the client never saw, and a second copy of the payload: CPU and
database writes on every request that nobody reads, and the payload stored where the
client's consent was not asked. So a node skips those for its gateways' calls; it still
monitors drift (the reference profiles are the node's: a gateway has no artifacts) and
counts the call in its metrics. It checks the call's inputs for anomalies unless the
gateway says it did (:data:`SCREENED_KEY`): a gateway checks each request itself when every
node of the version announces the statistics the check reads, and merges concurrent
requests into one call only then (a merged call's score would be the batch's, not each
caller's; :mod:`modelgate.core.gateway.remote`). A gateway that did not (an older one, or
one whose nodes disagree) sends no such entry, and the node checks as before.

A gateway calls its nodes with ``MODELGATE_NODE_KEY``, which the nodes accept as their
bootstrap admin key (``MODELGATE_ADMIN_KEY``): on a node, a call with that key is a
gateway's. A call with any other key (a tenant's, or a stored key given to the gateways) is
recorded on the node as on any server.
"""

from __future__ import annotations

from modelgate.core.access.identity import Principal

__all__ = ["ANOMALY_PARAMETERS", "ANOMALY_SCORE", "SCREENED", "SCREENED_KEY", "from_gateway"]

#: the call metadata entry by which a gateway says it checked the call's inputs for
#: anomalies (value :data:`SCREENED`); a node believes it only of :func:`from_gateway` calls
SCREENED_KEY = "modelgate-screened"
SCREENED = "1"
#: the response parameters of an anomaly check (core/monitoring/anomaly.py): a node that did
#: not believe :data:`SCREENED_KEY` answers them for the whole call, which its gateway drops
ANOMALY_SCORE = "anomaly_score"
ANOMALY_PARAMETERS = frozenset({ANOMALY_SCORE, "anomalous", "anomalous_features"})


def from_gateway(principal: Principal | None) -> bool:
    """True for a call made with the node's bootstrap admin key: its gateway's."""
    return principal is not None and principal.kind == "admin"
