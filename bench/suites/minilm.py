"""4. MiniLM single-sentence requests against raw batched ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import loadgen, raw, workloads
from bench.loadgen import Load
from bench.suites.context import LOAD_CPU, Check, Ctx, Result
from bench.suites.measuring import (
    alternate,
    authorization,
    background_text,
    checked,
    describe,
    median,
    model_stats,
    ms_text,
    number_text,
    post,
    rounds_text,
    with_server_cpu,
)
from bench.suites.servers import start_modelgate


def bench_minilm(ctx: Ctx) -> Result:
    minilm = workloads.model_files(ctx.models, workloads.MINILM)
    batching = minilm.manifest.batching
    delay_ms = batching.max_queue_delay_us / 1e3 if batching else 0.0
    result = Result(
        "minilm",
        "MiniLM single-sentence requests vs raw batched ONNX Runtime",
        [
            "path",
            "concurrency",
            "sentences/s (median)",
            "p50",
            "p99",
            "server cores",
            "others' cores",
            "rounds sentences/s",
        ],
    )
    predictor = raw.minilm_predictor(minilm)
    raw32, raw1 = raw.minilm_call(predictor, 32), raw.minilm_call(predictor, 1)
    mg = start_modelgate(ctx, "modelgate-minilm", None)
    try:
        auth = authorization(mg)
        oip = loadgen.lua_script(
            ctx.work / "minilm-oip.lua",
            [workloads.sentence_json(s) for s in workloads.SENTENCES],
            authorization=auth,
        )
        openai = loadgen.lua_script(
            ctx.work / "minilm-openai.lua",
            [workloads.embeddings_json(s) for s in workloads.SENTENCES],
            authorization=auth,
        )
        base = f"http://127.0.0.1:{mg.http_port}"
        oip_url = f"{base}/v2/models/{workloads.MINILM}/infer"
        emb_url = f"{base}/v1/embeddings"
        answer = post(oip_url, workloads.sentence_json(workloads.SENTENCES[0]), auth)
        assert answer["outputs"][0]["shape"] == [1, 384], answer
        embedded = post(emb_url, workloads.embeddings_json("hi"), auth)
        assert len(embedded["data"][0]["embedding"]) == 384

        def over_http(
            url: str, script: Path, connections: int, seconds: float
        ) -> Callable[[], Load]:
            return lambda: checked(
                with_server_cpu(
                    mg, lambda: loadgen.wrk(url, script, connections, seconds, cpus=LOAD_CPU)
                ),
                url,
            )

        def in_process(
            call: Callable[[], Any], rows: int, seconds: float
        ) -> Callable[[], raw.Rate]:
            return lambda: raw.rate(call, rows, seconds)

        over_http(oip_url, oip, 64, 2)()
        over_http(emb_url, openai, 64, 2)()
        before = model_stats(mg.http_port, workloads.MINILM)
        c64: dict[str, list[Any]] = alternate(
            ctx,
            [
                ("raw batch 32", in_process(raw32, 32, ctx.duration)),
                ("OIP infer", over_http(oip_url, oip, 64, ctx.duration)),
                ("/v1/embeddings", over_http(emb_url, openai, 64, ctx.duration)),
            ],
            lambda r: f"{r.rps:,.0f}/s" if isinstance(r, Load) else f"{r.rows_per_s:,.0f}/s",
        )
        after = model_stats(mg.http_port, workloads.MINILM)
        c1: dict[str, list[Any]] = alternate(
            ctx,
            [
                ("raw batch 1", in_process(raw1, 1, ctx.short)),
                ("OIP infer", over_http(oip_url, oip, 1, ctx.short)),
            ],
            lambda r: describe(r) if isinstance(r, Load) else f"median {ms_text(r.median_call_ms)}",
        )
        after1 = model_stats(mg.http_port, workloads.MINILM)
    finally:
        mg.stop()
    raw_b32 = median([r.rows_per_s for r in c64["raw batch 32"]])
    result.rows.append(
        [
            "in-process, batch 32",
            "-",
            number_text(raw_b32),
            ms_text(median([r.median_call_ms for r in c64["raw batch 32"]])) + " per batch",
            "-",
            "-",
            background_text(c64["raw batch 32"]),
            rounds_text([r.rows_per_s for r in c64["raw batch 32"]]),
        ]
    )
    med: dict[str, float] = {}
    for name in ("OIP infer", "/v1/embeddings"):
        loads = c64[name]
        med[name] = median([x.rps for x in loads])
        result.rows.append(
            [
                f"modelgate {name}, 1 sentence/request",
                "64",
                number_text(med[name]),
                ms_text(median([x.p50_ms or 0 for x in loads])),
                ms_text(median([x.p99_ms or 0 for x in loads])),
                f"{median([x.extra['server_cores'] for x in loads]):.2f}",
                background_text(loads),
                rounds_text([x.rps for x in loads]),
            ]
        )
    raw_b1 = median([r.median_call_ms for r in c1["raw batch 1"]])
    mg_p50 = median([x.p50_ms or 0 for x in c1["OIP infer"]])
    result.rows.append(
        [
            "in-process, batch 1",
            "1",
            number_text(median([r.rows_per_s for r in c1["raw batch 1"]])),
            ms_text(raw_b1),
            ms_text(median([r.p99_call_ms for r in c1["raw batch 1"]])),
            "-",
            background_text(c1["raw batch 1"]),
            rounds_text([r.rows_per_s for r in c1["raw batch 1"]]),
        ]
    )
    result.rows.append(
        [
            "modelgate OIP infer, 1 sentence/request",
            "1",
            number_text(median([x.rps for x in c1["OIP infer"]])),
            ms_text(mg_p50),
            ms_text(median([x.p99_ms or 0 for x in c1["OIP infer"]])),
            f"{median([x.extra['server_cores'] for x in c1['OIP infer']]):.2f}",
            background_text(c1["OIP infer"]),
            rounds_text([x.rps for x in c1["OIP infer"]]),
        ]
    )
    ratio = med["OIP infer"] / raw_b32
    overhead = mg_p50 - raw_b1
    served1 = max(after1["inferences"] - after["inferences"], 1)
    queue1 = (after1["queue_ns"] - after["queue_ns"]) / served1 / 1e6
    compute1 = (after1["compute_ns"] - after["compute_ns"]) / served1 / 1e6
    result.checks += [
        Check(
            "MiniLM c=64 OIP sentences/s / raw batch-32", f"{ratio:.2f}x", ">= 0.85", ratio >= 0.85
        ),
        Check(
            "MiniLM c=64 /v1/embeddings sentences/s / raw batch-32",
            f"{med['/v1/embeddings'] / raw_b32:.2f}x",
            "(info)",
            None,
        ),
        Check(
            "MiniLM c=1 p50 overhead over raw batch-1",
            f"{ms_text(overhead)} ({ms_text(mg_p50)} vs {ms_text(raw_b1)}; "
            f"in modelgate per request: queue {ms_text(queue1)}, compute {ms_text(compute1)})",
            f"<= {delay_ms + 1:g} ms (max_queue_delay {delay_ms:g} ms + 1 ms)",
            overhead <= delay_ms + 1,
        ),
    ]
    executions = max(after["executions"] - before["executions"], 1)
    inferences = after["inferences"] - before["inferences"]
    result.notes += [
        "Server cores: CPU time of the server process per second of the run (ONNX Runtime's "
        "intra-op threads spin while they wait for work, which shows here).",
        f"modelgate not pinned (the model runs intra_op_threads 2 on both cores), wrk pinned to "
        f"CPU {LOAD_CPU}; raw ONNX Runtime runs in the benchmark process while the server is "
        f"idle. {ctx.rounds} alternating rounds ({ctx.duration:g} s at c=64, {ctx.short:g} s at "
        "c=1); wrk sends round-robin 8 different 16-token sentences.",
        f"modelgate's statistics over the c=64 rounds (OIP and /v1/embeddings): "
        f"{inferences / executions:.1f} sentences per model execution; per request on average "
        f"{(after['queue_ns'] - before['queue_ns']) / max(inferences, 1) / 1e6:.1f} ms queued "
        f"and {(after['compute_ns'] - before['compute_ns']) / max(inferences, 1) / 1e6:.1f} ms in "
        "its batch's execution (tokenization, ONNX Runtime, pooling, in a worker thread).",
    ]
    return result
