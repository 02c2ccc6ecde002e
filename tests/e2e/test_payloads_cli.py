"""``modelgate payloads`` and ``modelgate subjects`` as an operator runs them, on the
database of a data directory: consent, a JSONL dataset, a subject's export and erasure,
key rotation, all recorded in the audit trail."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelgate.boot.listeners import build_payload_logger
from modelgate.boot.state import build_state
from modelgate.core.access.identity import Plan, Principal, Tenant
from modelgate.core.governance.ports import PayloadConsent
from modelgate.core.governance.redaction import pseudonym
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.requests import CompletedInference, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.settings import Settings
from modelgate.storage.sql.engine import migrate

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
PSEUDONYM_KEY = "pseudonym-" + "k" * 22


def _log_payloads(data_dir: Path) -> None:
    """What a server's logger writes: alice and bob in ten_a, alice in ten_b."""

    async def main() -> None:
        settings = Settings(
            data_dir=data_dir, payload_keys={"k1": K1}, payload_pseudonym_key=PSEUDONYM_KEY
        )
        state = build_state(settings)
        await migrate(state.url)
        await state.identity.create_plan(Plan("p"))
        for tenant in ("ten_a", "ten_b"):
            await state.identity.create_tenant(Tenant(tenant, tenant, "p", datetime.now(UTC)))
        logger = build_payload_logger(settings, state)
        assert logger is not None
        manifest = parse_manifest(
            "reviews",
            {
                "runtime": "python",
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "n", "datatype": "INT64", "shape": [-1]}],
                "payload_logging": {"enabled": True, "purpose": "training", "retention_days": 9},
            },
        )
        for tenant, subject, text in [
            ("ten_a", "alice", "great product, mail me at alice@example.com"),
            ("ten_a", "bob", "too slow"),
            ("ten_b", "alice", "other tenant"),
        ]:
            logger.apply(PayloadConsent(tenant, True))
            data = np.empty(1, dtype=object)
            data[:] = [text.encode()]
            who = Principal(tenant, "key_1", frozenset({"infer"}), Plan("p"))
            request = InferenceRequest(
                "reviews", None, [Tensor("text", "BYTES", data)], parameters={"subject": subject}
            )
            response = InferenceResponse("reviews", "1", [Tensor("n", "INT64", np.array([3]))])
            logger.completed(CompletedInference(who, request, response, manifest, {}))
        await logger.close()
        await state.engine.dispose()

    asyncio.run(main())


def test_datasets_subjects_and_rotation_from_the_command_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODELGATE_DATA_DIR": str(tmp_path / "data"),
        "MODELGATE_PAYLOAD_KEYS": json.dumps({"k1": K1}),
        "MODELGATE_PAYLOAD_PSEUDONYM_KEY": PSEUDONYM_KEY,
    }

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "modelgate", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **extra},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    _log_payloads(tmp_path / "data")
    # ten_a and ten_b consent in the database too (the logger was told directly above)
    cli("payloads", "consent", "ten_a", "--enable")
    cli("payloads", "consent", "ten_b", "--disable")

    out = tmp_path / "dataset.jsonl"
    cli("payloads", "export", "--tenant", "ten_a", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["inputs"][0]["data"] for r in rows] == [
        ["great product, mail me at [EMAIL]"],
        ["too slow"],
    ]
    assert rows[0]["subject"] == pseudonym(PSEUDONYM_KEY.encode(), "alice")
    assert rows[0]["purpose"] == "training" and rows[0]["redactions"] == {"email": 1}
    everyone = cli("payloads", "export", "--out", "-").stdout.splitlines()
    assert len(everyone) == 2  # ten_b withdrew: its row stays, but is not exported

    exported: dict[str, Any] = json.loads(cli("subjects", "export", "alice").stdout)
    assert sorted(r["tenant_id"] for r in exported["payload_logs"]) == ["ten_a", "ten_b"]

    # rotation: k2 becomes active, old rows still open, rekey re-seals them, k1 can go
    rotated = {"MODELGATE_PAYLOAD_KEYS": json.dumps({"k1": K1, "k2": K2})}
    rotated["MODELGATE_PAYLOAD_ACTIVE_KEY"] = "k2"
    assert "3 rows re-sealed" in cli("payloads", "rekey", **rotated).stdout
    only_k2 = {"MODELGATE_PAYLOAD_KEYS": json.dumps({"k2": K2})}
    assert len(cli("payloads", "export", "--out", "-", **only_k2).stdout.splitlines()) == 2

    erased = cli("subjects", "erase", "alice", "--tenant", "ten_a", **only_k2).stdout
    assert "payload_logs: 1" in erased
    again = json.loads(cli("subjects", "export", "alice", **only_k2).stdout)
    assert [r["tenant_id"] for r in again["payload_logs"]] == ["ten_b"]
    assert "0 expired rows deleted" in cli("payloads", "purge").stdout

    audit = cli("audit", "list", "--limit", "100").stdout
    for action in ("payload_logging.set", "payloads.export", "subject.export", "subject.erase"):
        assert action in audit
    assert "payloads.rekey" in audit and "alice" not in audit
