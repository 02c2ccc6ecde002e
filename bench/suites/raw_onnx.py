"""1. Raw ONNX Runtime in-process: the ceiling every server is measured against."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bench import raw, workloads
from bench.suites.context import Ctx, Result
from bench.suites.measuring import alternate, background_text, ms_text, number_text


def bench_raw(ctx: Ctx) -> Result:
    credit = workloads.model_files(ctx.models, workloads.CREDIT)
    minilm = workloads.model_files(ctx.models, workloads.MINILM)
    seconds = max(2.0, min(4.0, ctx.duration / 3))
    result = Result(
        "raw",
        "In-process ONNX Runtime (the ceiling)",
        ["workload", "batch", "rows/s", "median call", "p99 call", "others' cores"],
    )
    predictor = raw.minilm_predictor(minilm)
    cases: list[tuple[str, int, Callable[[], Any]]] = [
        (f"credit-risk v{credit.version} (intra 1)", 1, raw.credit_call(credit, 1)),
        (f"credit-risk v{credit.version} (intra 1)", 64, raw.credit_call(credit, 64)),
    ] + [
        (
            f"MiniLM v{minilm.version}, 16-token sentences (intra 2)",
            n,
            raw.minilm_call(predictor, n),
        )
        for n in (1, 8, 32)
    ]
    for label, batch, call in cases:
        key = f"{label} batch {batch}"
        run: Callable[[], raw.Rate] = functools.partial(raw.rate, call, batch, seconds)
        rates = alternate(ctx.once(), [(key, run)], lambda r: f"{r.rows_per_s:,.0f} rows/s")[key]
        rate = rates[0]
        result.rows.append(
            [
                label,
                str(batch),
                number_text(rate.rows_per_s),
                ms_text(rate.median_call_ms),
                ms_text(rate.p99_call_ms),
                background_text(rates),
            ]
        )
    result.notes.append(
        f"{seconds:.1f} s per case after a warm-up, in the benchmark process, not pinned. "
        "MiniLM includes tokenization, mean pooling and normalisation "
        "(`modelgate.runtimes.text_embedding.TextEmbeddingPredictor.predict`)."
    )
    return result
