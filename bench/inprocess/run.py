"""One run: a modelgate built in-process over the demo credit-risk model, the chosen measurement,
and the command line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

from bench import redis_scratch, tenant
from bench.inprocess.anomaly import measure_anomaly
from bench.inprocess.asgi import asgi_post
from bench.inprocess.grpc_servicer import measure_grpc
from bench.inprocess.refusals import measure_refusals
from bench.inprocess.rest import measure_rest
from bench.inprocess.stalls import measure_stalls
from bench.inprocess.steps import measure_steps
from bench.inprocess.timing import Figures
from bench.step_costs import text_table
from bench.workloads import BENCH_KEY, CREDIT, credit_json


async def measure(
    which: str,
    models: Path,
    seconds: float,
    auth: str = "admin",
    redis_url: str | None = None,
    redis_prefix: str | None = None,
) -> dict[str, float]:
    from modelgate.api.oip_codec import decode_infer_request, encode_infer_response
    from modelgate.boot.serving import build_components
    from modelgate.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        (repo / CREDIT).symlink_to((models / CREDIT).resolve())
        shared: dict[str, Any] = {}
        if redis_url is not None:
            shared = {"redis_url": SecretStr(redis_url), "redis_key_prefix": redis_prefix}
        components = build_components(
            Settings(
                model_repository=repo,
                data_dir=Path(tmp) / "d",
                log_level="warning",
                admin_key=SecretStr(BENCH_KEY),
                **shared,
            )
        )
        await components.open()  # migrations: the tenant, its plan and key live in SQLite
        if which in ("steps", "stalls"):  # as a server: the recorders' flush loops run too
            await components.start()
        else:
            await components.registry.start()
        secret = None
        if auth == "tenant" or which in ("refusals", "steps", "stalls"):
            secret = await tenant.create_key(
                lambda path, body: asgi_post(components.rest_app, path, body)
            )
        # as the server does after start-up: the long-lived objects leave the collector's
        # generations, so full collections do not walk them (docs/benchmarks.md)
        gc.collect()
        gc.freeze()
        figures = Figures(seconds, secret is not None)
        try:
            if which == "refusals":
                assert secret is not None
                await measure_refusals(components, figures, secret)
                return figures.out
            if which == "grpc":
                await measure_grpc(components, models, figures, secret)
                return figures.out
            if which == "steps":
                assert secret is not None
                return await measure_steps(components, secret, seconds)
            if which == "stalls":
                assert secret is not None
                return await measure_stalls(components, secret, seconds)
            if which == "anomaly":
                await measure_anomaly(components, figures)
                return figures.out
            await measure_rest(
                components, figures, secret, decode_infer_request, encode_infer_response
            )
            loaded = components.registry.get(CREDIT, None)
            assert loaded is not None
            request = decode_infer_request(CREDIT, None, credit_json(), None, 1 << 24)
            response = await components.service.infer(request)
            inputs = {"features": np.asarray(request.inputs[0].data)}
            runtime: Any = loaded.runtime
            predictor = getattr(getattr(runtime, "inner", runtime), "predictor", None)
            # the version's plan, as the pipeline's _validate step calls it
            await figures.one("_validate", lambda: loaded.plan.validate(request.inputs), 0.5)
            await figures.one(
                f"{type(runtime).__name__}.infer", lambda: runtime.infer(inputs, None)
            )
            await figures.one(
                "encode_infer_response", lambda: encode_infer_response(response, {}), 0.5
            )
            if predictor is not None:
                await figures.one(
                    "predictor.predict (ONNX Runtime)", lambda: predictor.predict(inputs), 0.5
                )
            return figures.out
        finally:
            if which in ("steps", "stalls"):
                await components.close()
            else:
                await components.registry.close()
                components.executor.shutdown(wait=False)
            if redis_url is not None and redis_prefix is not None:
                redis_scratch.remove_prefix(redis_url, redis_prefix)


def main() -> None:
    import uvloop

    from modelgate.observability.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("which", choices=["rest", "grpc", "refusals", "anomaly", "steps", "stalls"])
    parser.add_argument("models", type=Path)
    parser.add_argument("seconds", type=float, nargs="?", default=2.0)
    parser.add_argument("--auth", choices=tenant.AUTH_MODES, default="admin")
    parser.add_argument("--redis", metavar="URL", help="limits, quotas and strikes in Redis")
    args = parser.parse_args()
    os.environ.setdefault("MODELGATE_LOG_LEVEL", "warning")
    if args.which in ("steps", "stalls"):  # request lines written as a server does, to /dev/null
        configure_logging("warning", stream=open(os.devnull, "w"))  # noqa: SIM115 (till exit)
    prefix = redis_scratch.unique_prefix() if args.redis else None
    figures = uvloop.run(
        measure(args.which, args.models, args.seconds, args.auth, args.redis, prefix)
    )
    if args.which == "steps":
        print(text_table(figures), file=sys.stderr)
    print(json.dumps(figures))
