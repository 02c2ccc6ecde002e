"""``modelgate prices`` and ``modelgate usage report`` as an operator runs them, on the
database of a data directory: a price set with the CLI prices the usage written after it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from modelgate.core.admission.metering import UsageRecorder
from modelgate.storage.sql.engine import create_engine, database_url_for
from modelgate.storage.sql.usage import SqlUsageStore

AT = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
LATER = datetime(2025, 3, 5, 8, 0, tzinfo=UTC)


def _record_usage(data_dir: Path) -> None:
    """What a server's recorder writes: a few requests, flushed at the price of the moment."""

    async def main() -> None:
        engine = create_engine(database_url_for(data_dir))
        clock = iter([AT, AT, AT, LATER])
        recorder = UsageRecorder(SqlUsageStore(engine), clock=lambda: next(clock).timestamp())
        for tenant, model, rows, tokens, status in [
            ("ten_a", "credit-risk", 1500, 0, "ok"),
            ("ten_a", "credit-risk", 500, 0, "ok"),
            ("ten_b", "credit-risk", 1000, 0, "ok"),
            ("ten_a", "minilm", 2, 4000, "error"),
        ]:
            recorder.record(
                tenant, None, model, "1", hardware="cpu", status=status, cache_hit=False,
                rows=rows, tokens=tokens, latency_ms=12.0, compute_ms=3.0,
            )  # fmt: skip
        await recorder.close()
        await engine.dispose()

    asyncio.run(main())


def test_prices_and_usage_reports_from_the_command_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "MODELGATE_DATA_DIR": str(data_dir),
        "MODELGATE_CURRENCY": "EUR",
    }
    env.pop("COLUMNS", None)  # piped output: whole rows, one line each, however wide

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelgate", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    priced = cli("prices", "set", "default", "--per-1k-units", "2", "--per-compute-second", "0")
    assert priced.returncode == 0, priced.stdout + priced.stderr
    assert cli("prices", "set", "model:minilm", "--per-1k-units", "0.5").returncode == 0
    refused = cli("prices", "set", "gpu", "--per-1k-units", "1")
    assert refused.returncode == 1 and "invalid_argument" in refused.stdout
    listed = cli("prices", "list")
    assert "model:minilm" in listed.stdout and "per 1k units (EUR)" in listed.stdout

    _record_usage(data_dir)

    report = cli("usage", "report", "--by", "day,model")
    assert report.returncode == 0, report.stdout + report.stderr
    lines = report.stdout.splitlines()
    assert "cost (EUR)" in report.stdout
    credit = next(line for line in lines if "2025-03-04" in line and "credit-risk" in line)
    assert "3,000" in credit and "6.0000" in credit  # 3000 rows at 2 per 1k
    minilm = next(line for line in lines if "minilm" in line)
    assert "2025-03-05" in minilm and "4,000" in minilm and "2.0000" in minilm  # tokens
    total = next(line for line in lines if "total" in line)
    assert "8.0000" in total and "4 " in total.split("│")[3]

    as_json = cli("usage", "report", "--by", "tenant", "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["currency"] == "EUR"
    by_tenant = {r["tenant_id"]: (r["requests"], r["errors"], r["cost"]) for r in document["rows"]}
    assert by_tenant == {"ten_a": (3, 1, 6.0), "ten_b": (1, 0, 2.0)}
    one_day = cli("usage", "report", "--json", "--tenant", "ten_a", "--until", "2025-03-05")
    assert [r["requests"] for r in json.loads(one_day.stdout)["rows"]] == [2]

    bad = cli("usage", "report", "--by", "region")
    assert bad.returncode == 1 and "cannot group by" in bad.stdout
    assert cli("usage", "report", "--since", "2030-01-01").stdout.startswith("no usage")

    assert cli("prices", "delete", "model:minilm").returncode == 0
    gone = cli("prices", "delete", "model:minilm")
    assert gone.returncode == 1 and "not_found" in gone.stdout
    trail = cli("audit", "list")
    assert trail.stdout.count("price.set") == 2 and "price.delete" in trail.stdout
    assert cli("audit", "verify").returncode == 0
