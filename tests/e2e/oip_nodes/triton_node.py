"""A real Triton server, the one PyTriton ships (``tritonserver``), serving one model:
``affine``, y = 2x + 1 on FP32 rows, with Triton's own dynamic batching (max 16 rows).

Runs in ``build/pytriton-venv`` (tests/e2e/test_third_party_nodes.py), not in modelgate's
environment: ``python triton_node.py HTTP_PORT GRPC_PORT METRICS_PORT WORKSPACE``. Stops
on SIGINT or SIGTERM, taking its Triton server with it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


@batch
def affine(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": (x * 2.0 + 1.0).astype(np.float32)}


def main() -> None:
    http_port, grpc_port, metrics_port = (int(a) for a in sys.argv[1:4])
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        allow_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config, workspace=Path(sys.argv[4])) as triton:
        triton.bind(
            model_name="affine",
            infer_func=affine,
            inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
            outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=16),
        )
        with contextlib.suppress(KeyboardInterrupt):
            triton.serve()


if __name__ == "__main__":
    main()
