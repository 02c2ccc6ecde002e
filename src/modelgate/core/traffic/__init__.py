"""Traffic: which version of a model answers a request.

Deployments and their store (``deployments``, ``ports``), the router on the request path
(``routing``), rollouts as operators change them (``rollout``), canary gates (``canary``) and
shadow copies (``shadow``).
"""
