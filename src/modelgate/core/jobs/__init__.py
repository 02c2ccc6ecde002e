"""Jobs: asynchronous batch work.

Job states, records and policy (``jobs``), the queue port (``ports``), the use case
(``service``), the worker that runs items through the inference service (``worker``), and the
SSRF defence of the webhook URLs jobs call (``ssrf``).
"""
