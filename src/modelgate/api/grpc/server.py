from __future__ import annotations

from typing import Any

import grpc

from modelgate.core.inference import InferenceService


def create_grpc_server(service: InferenceService, *, max_message_bytes: int, reuse_port: bool) -> Any:
    return grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
