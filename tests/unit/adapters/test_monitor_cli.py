"""``modelgate monitor`` renders the server's monitoring report as tables."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelgate.cli import root as cli

REPORT: dict[str, Any] = {
    "model": "credit-risk",
    "versions": [
        {
            "model": "credit-risk",
            "version": "2",
            "status": "drift",
            "drift": True,
            "rows": 500,
            "requests": 10,
            "window_rows": 10000,
            "window_seconds": 3600.0,
            "features": [
                {
                    "name": "age_band",
                    "kind": "categorical",
                    "status": "ok",
                    "psi": 0.009,
                    "live_mean": 2.3,
                    "ks": None,
                    "ks_threshold": None,
                    "chi_square": 4.7,
                    "p_value": 0.59,
                },
                {
                    "name": "annual_income",
                    "kind": "numeric",
                    "status": "drift",
                    "psi": 5.15,
                    "live_mean": 186683.9,
                    "ks": 0.754,
                    "ks_threshold": 0.1,
                    "chi_square": None,
                    "p_value": None,
                },
            ],
            "predictions": [
                {
                    "output": "probabilities",
                    "status": "drift",
                    "psi": 0.38,
                    "class_name": "default",
                    "live_mean": 0.0995,
                    "ks": 0.235,
                    "ks_threshold": 0.1,
                    "frequencies": None,
                }
            ],
            "confidence": {
                "probabilities": {
                    "mean_top_probability": 0.903,
                    "mean_entropy": 0.403,
                    "low_confidence_share": 0.026,
                }
            },
        }
    ],
}


def test_monitor_prints_each_feature_and_the_confidence(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        asked.append(f"{method} {url} {kwargs['headers'].get('Authorization')}")
        return httpx.Response(200, content=json.dumps(REPORT).encode())

    monkeypatch.setattr(cli.httpx, "request", request)
    monkeypatch.setattr(cli.console, "width", 200)
    result = CliRunner().invoke(
        cli.app, ["monitor", "credit-risk", "--version", "2", "--api-key", "k", "--url", "http://s"]
    )
    assert result.exit_code == 0, result.output
    assert asked == ["GET http://s/admin/models/credit-risk/monitoring?version=2 Bearer k"]
    assert "annual_income" in result.output and "5.150" in result.output
    assert "drift" in result.output and "0.754" in result.output
    assert "low-confidence share 2.6%" in result.output


TEXT_REPORT: dict[str, Any] = {
    "model": "all-MiniLM-L6-v2",
    "versions": [
        {
            **REPORT["versions"][0],
            "model": "all-MiniLM-L6-v2",
            "features": [],
            "predictions": [],
            "confidence": {},
            "text": {
                "input": "text",
                "status": "drift",
                "length": {
                    "unit": "tokens",
                    "status": "drift",
                    "rows": 120,
                    "psi": 9.471,
                    "ks": 0.699,
                    "ks_threshold": 0.208,
                    "live_mean": 141.1,
                    "reference_mean": 14.2,
                },
                "embedding": {
                    "output": "embedding",
                    "status": "drift",
                    "rows": 120,
                    "psi": 10.094,
                    "ks": 0.948,
                    "ks_threshold": 0.208,
                    "live_mean_cosine": 0.04,
                    "reference_mean_cosine": 0.473,
                    "centroid_distance": 0.914,
                },
            },
            "anomalies": {
                "action": "flag",
                "threshold": 0.5,
                "requests": 40,
                "flagged": 3,
                "rejected": 0,
                "share": 0.075,
            },
        }
    ],
}


def test_monitor_prints_text_drift_and_anomalies(monkeypatch: pytest.MonkeyPatch) -> None:
    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(TEXT_REPORT).encode())

    monkeypatch.setattr(cli.httpx, "request", request)
    monkeypatch.setattr(cli.console, "width", 200)
    result = CliRunner().invoke(cli.app, ["monitor", "all-MiniLM-L6-v2", "--api-key", "k"])
    assert result.exit_code == 0, result.output
    assert "length (tokens)" in result.output and "9.471" in result.output
    assert "cosine to centroid" in result.output and "10.094" in result.output
    assert "cosine distance 0.914" in result.output
    assert "7.5% of 40 requests (3 flagged, 0 rejected)" in result.output


def test_monitor_prints_a_tenants_view_of_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's key gets the model-wide window's verdicts, its figures null (scope
    "tenant"): printed as such, no "None rows"."""
    version = REPORT["versions"][0]
    tenant_view = {
        **REPORT,
        "scope": "tenant",
        "versions": [
            {
                **version,
                "rows": None,
                "requests": None,
                "confidence": {},
                "anomalies": None,
                "features": [
                    {k: (v if k in ("name", "kind", "status") else None) for k, v in f.items()}
                    for f in version["features"]
                ],
                "predictions": [
                    {k: (v if k in ("output", "status") else None) for k, v in p.items()}
                    for p in version["predictions"]
                ],
            }
        ],
    }

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(tenant_view).encode())

    monkeypatch.setattr(cli.httpx, "request", request)
    monkeypatch.setattr(cli.console, "width", 200)
    result = CliRunner().invoke(cli.app, ["monitor", "credit-risk", "--url", "http://s"])
    assert result.exit_code == 0, result.output
    assert "the model's verdicts only" in result.output
    assert "None" not in result.output
    assert "annual_income" in result.output and "drift" in result.output
