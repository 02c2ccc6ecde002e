"""The composition root: the one place that reads :class:`~modelgate.settings.Settings`, picks
an implementation for each port, and wires the core to them.

- :mod:`.components`: ``Components`` and ``build_core_components`` (everything but the
  protocol adapters: what a job worker runs), and the lifecycle list the process starts in
  order and closes in reverse (:mod:`.lifecycle`);
- :mod:`.serving`: ``build_components`` (the core's components and the REST app: what a
  server serves) and ``build_grpc_server``;
- one module per thing built from settings: :mod:`.state` (the database), :mod:`.stores`
  (the stores replicas share: memory or Redis), :mod:`.security` (bearer tokens),
  :mod:`.alerts`, :mod:`.listeners` (payload logs, feedback), :mod:`.deployments`,
  :mod:`.jobs`, :mod:`.cluster` (gateways and nodes).

This package imports nothing on its own. The core never imports it (an import-linter
contract holds this).
"""
