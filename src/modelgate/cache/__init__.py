"""Result-store backends behind the :class:`~modelgate.core.serving.caching.ResultStore` port.

- :mod:`.memory`: ``MemoryResultStore``, in-process, a least-recently-used bound on entries
  and bytes;
- :mod:`.redis`: ``RedisResultStore``, shared by replicas, an outage answering as a miss;
  imports ``redis`` only when chosen. Its wire format is in :mod:`.codec`.

This package imports nothing on its own: pick the module of the backend you use.
"""
