"""``/metrics`` of a running modelgate, and the Prometheus rules and Grafana dashboard shipped
in ``deploy/``: the rules and every dashboard query parse with Prometheus' own parser
(``promtool``, from Debian's ``prometheus`` package), the rules' unit tests pass, and every
metric they name is one that modelgate exports after some traffic (a success, an error, a
refusal) -- a renamed metric breaks the build, not a dashboard in production."""

from __future__ import annotations

import functools
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelgate.api.rest.socket_state import accept_queue
from modelgate.boot.components import Components
from modelgate.boot.serving import build_components
from modelgate.core.monitoring.alerts import SERVER_ERRORS
from modelgate.core.monitoring.fairness import AttributeAudit, FairnessReport, VersionAudit
from modelgate.core.monitoring.ports import GroupFigures
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS, ROOT
from tests.debian_tools import debian_binary

#: the async tests share the module's server, so they share its event loop
on_server_loop = pytest.mark.asyncio(loop_scope="module")

RULES = ROOT / "deploy" / "prometheus" / "modelgate-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "modelgate-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "modelgate-dashboard.json"
ADMIN = "admin-" + "m" * 24
#: series Prometheus writes itself, not modelgate
PROMETHEUS_OWN = {"up"}


# -- promtool ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def promtool() -> Path:
    """``promtool`` from PATH, or taken from Debian's ``prometheus`` package into
    ``build/prometheus`` (unpacked, not installed: no Prometheus server is set up)."""
    return debian_binary("prometheus", "usr/bin/promtool")


def run_promtool(promtool: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(promtool), *args], input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# -- metric names in PromQL --------------------------------------------------------------
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "atan2", "inf", "nan"}
_AGGREGATION_TAIL = re.compile(r"\s*(?:\(|(?:by|without)\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (expressions parse: promtool says so first).

    Everything else is taken out first: strings (label values, regexes), label matchers,
    ranges and durations, numbers, grouping label lists; of the identifiers left, those
    called (functions, aggregations) and the keywords are not metrics."""
    expr = _STRINGS.sub('""', expr)
    expr = re.sub(r"#[^\n]*", "", expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d[A-Za-z0-9_.]*", "0", expr)
    expr = _GROUPING.sub(r"\1()", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        token = match.group()
        if token in _KEYWORDS or _AGGREGATION_TAIL.match(expr, match.end()):
            continue
        names.add(token)
    return names


def label_names(expr: str) -> set[str]:
    """The label names an expression matches on or groups by."""
    expr = _STRINGS.sub('""', expr)
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", body))
    return labels


def test_metric_names_finds_selectors_only() -> None:
    expr = """
      histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{model=~"x|y", le!="1e3"}[5m])))
        / on (model) group_left (tenant) b_total offset 1h
        > bool 1e3 and sum without (status) (c) unless count_values("v", d:rec:rate5m) # e
    """
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:rec:rate5m"}
    assert metric_names('up{job="modelgate"} == 0') == {"up"}
    assert label_names(expr) == {"model", "le", "tenant", "status"}


# -- rules and dashboard -----------------------------------------------------------------
def rule_expressions() -> dict[str, str]:
    """Every expression of the rules file: {record or alert name: expr}."""
    document = yaml.safe_load(RULES.read_text())
    return {
        rule.get("record") or rule["alert"]: rule["expr"]
        for group in document["groups"]
        for rule in group["rules"]
    }


def recorded_names() -> set[str]:
    document = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in document["groups"] for r in g["rules"] if "record" in r}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows hold their panels when collapsed


def _grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced as Grafana does it at run time."""
    for variable in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(variable, "5m")
    return re.sub(r"\$\{?(model|tenant)\}?", ".*", expr)


def dashboard_expressions() -> dict[str, str]:
    """Every query of the dashboard, its variables' included: {where: PromQL}."""
    document = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in _panels(document["panels"]):
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in document["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else ""
        values = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", query)
        assert values is not None, f"variable {variable['name']}: {query}"
        found[f"variable {variable['name']}"] = values.group(1)
    return {where: _grafana_to_promql(expr) for where, expr in found.items()}


def test_rules_pass_promtool(promtool: Path) -> None:
    out = run_promtool(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(rule_expressions())} rules found" in out


def test_rules_unit_tests_pass(promtool: Path) -> None:
    """deploy/prometheus/modelgate-rules.test.yml: alerts fire (and stay quiet) as meant."""
    run_promtool(promtool, "test", "rules", str(RULE_TESTS))


def test_dashboard_queries_parse(promtool: Path, tmp_path: Path) -> None:
    """Each query, written as a recording rule, through Prometheus' parser."""
    queries = dashboard_expressions()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(queries.values())
    ]
    file = tmp_path / "dashboard-queries.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool(promtool, "check", "rules", str(file))
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_dashboard_panels_have_queries_and_unique_ids() -> None:
    document = json.loads(DASHBOARD.read_text())
    panels = list(_panels(document["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]


def test_error_ratio_means_what_the_built_in_alerts_mean() -> None:
    expr = rule_expressions()["model:modelgate_inference_errors:ratio_rate5m"]
    statuses = re.search(r'status=~"([^"]+)"', expr)
    assert statuses is not None and set(statuses.group(1).split("|")) == SERVER_ERRORS


# -- a running modelgate -----------------------------------------------------------------
def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _rows(n: int) -> dict[str, Any]:
    data = [float(i) for i in range(4 * n)]
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [n, 4], "data": data}]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    components = build_components(
        Settings(
            model_repository=FIXTURE_MODELS,
            data_dir=tmp_path_factory.mktemp("metrics"),
            auth="required",
            admin_key=ADMIN,
            memory_budget_mb=1024,
            abuse_slow_after=3,
            abuse_block_after=3,
        )
    )
    await components.open()
    await components.start()
    # the HTTP listener's accept queue, as Server.startup tracks it: one connection waits
    with socket.socket() as listener, socket.socket() as waiting:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        waiting.connect(listener.getsockname())
        components.metrics.track_accept_queue(functools.partial(accept_queue, listener))
        yield components
    await components.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def scraped(app: Components) -> tuple[str, str]:
    """/metrics after traffic, and the tenant that sent it: successes, invalid requests,
    refusals (batch size and a daily quota), a key blocked for abuse, result-cache lookups."""
    transport = httpx.ASGITransport(app=app.rest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def admin(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = await client.post(path, json=body, headers=_as(ADMIN))
            assert answer.status_code == 201, answer.text
            return dict(answer.json())

        await admin("/admin/plans", {"name": "tight", "requests_per_day": 4, "max_batch_size": 2})
        tenant = await admin("/admin/tenants", {"name": "acme", "plan": "tight"})
        keys = {
            name: (await admin(f"/admin/tenants/{tenant['id']}/keys", {"name": name}))["secret"]
            for name in ("runner", "prober")
        }
        infer = "/v2/models/doubler/infer"
        statuses = [
            (await client.post(infer, json=_rows(n), headers=_as(keys["runner"]))).status_code
            for n in (1, 2, 3, 1, 1, 1)  # 3 rows: over the plan's batch size
        ]
        # 2 + 1 rows served, then the 4th request of the day is refused
        assert statuses == [200, 200, 413, 200, 200, 429]
        bad = {"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [1]}]}
        for _ in range(3):  # the third failure blocks the key
            answer = await client.post(infer, json=bad, headers=_as(keys["prober"]))
            assert answer.status_code == 400
        for _ in range(2):  # a miss and a hit of the result cache
            cached = await client.post(
                "/v2/models/cached-doubler/infer", json=_rows(1), headers=_as(ADMIN)
            )
            assert cached.status_code == 200, cached.text
        _audited(app)
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        return metrics.text, str(tenant["id"])


def _audited(app: Components) -> None:
    """A fairness report as the background audit keeps it (no fixture model records
    predictions with protected attributes): the gauges' names and labels are exported."""
    assert app.fairness_watch is not None
    groups = [
        GroupFigures("0", 120, True, 30, 0.2, 0.8, 0.5, 0.1),
        GroupFigures("1", 110, True, 25, 0.1, 0.85, 0.4, 0.05),
        GroupFigures("4", 6, False),
    ]
    attribute = AttributeAudit("age_band", "ok", 236, groups, 0.1, 0.5, 0.1, 0.1)
    at = datetime.now(UTC)
    report = FairnessReport(
        "doubler", at, None, None, 30, 50_000, False, [VersionAudit("1", 236, 0, [attribute])]
    )
    app.fairness_watch.reports["doubler"] = (report, at)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


@on_server_loop
async def test_every_metric_the_rules_and_dashboard_name_is_exported(
    scraped: tuple[str, str],
) -> None:
    exported = {name for name, _ in samples(scraped[0])}
    known = exported | recorded_names() | PROMETHEUS_OWN
    named = {
        where: metric_names(expr)
        for where, expr in {**rule_expressions(), **dashboard_expressions()}.items()
    }
    assert all(named.values()), [where for where, names in named.items() if not names]
    missing = {where: names - known for where, names in named.items() if names - known}
    assert not missing


@on_server_loop
async def test_every_label_the_rules_and_dashboard_use_is_on_their_metrics(
    scraped: tuple[str, str],
) -> None:
    """A grouping by a label the metric lacks would draw one line where many were meant."""
    labels: dict[str, set[str]] = {}
    for name, pairs in samples(scraped[0]):
        labels.setdefault(name, set()).update(label for label, _ in pairs)
    for record, expr in rule_expressions().items():  # a recorded series: its sources' labels
        if ":" in record:
            labels[record] = set().union(*(labels[n] for n in metric_names(expr)))
    target = {"instance", "job"}  # added by Prometheus to every scraped series
    wrong = {}
    for where, expr in {**rule_expressions(), **dashboard_expressions()}.items():
        known = target.union(*(labels.get(n, set()) for n in metric_names(expr)))
        if label_names(expr) - known:
            wrong[where] = label_names(expr) - known
    assert not wrong


@on_server_loop
async def test_exposition_passes_promtool_lint(promtool: Path, scraped: tuple[str, str]) -> None:
    """Prometheus' conventions: counters end in _total, units in base units, help text."""
    run_promtool(promtool, "check", "metrics", stdin=scraped[0])


@on_server_loop
async def test_requests_are_counted_per_tenant_with_their_usage(
    scraped: tuple[str, str],
) -> None:
    text, tenant = scraped
    common = {"model": "doubler", "version": "2", "tenant": tenant}
    total = "modelgate_inference_requests_total"
    assert value(text, total, **common, status="success") == 4
    assert value(text, total, **common, status="invalid_argument") == 3
    assert value(text, total, **common, status="payload_too_large") == 1
    assert value(text, total, **common, status="rate_limited") == 1
    count = "modelgate_inference_request_duration_seconds_count"
    assert value(text, count, **common) == 9
    assert value(text, "modelgate_usage_rows_total", model="doubler", tenant=tenant) == 5
    refused = "modelgate_refused_requests_total"
    assert value(text, refused, tenant=tenant, reason="batch_size") == 1
    assert value(text, refused, tenant=tenant, reason="quota_requests_per_day") == 1
    assert value(text, "modelgate_abuse_blocks_total", kind="key") == 1


@on_server_loop
async def test_state_is_read_at_scrape(scraped: tuple[str, str]) -> None:
    text = scraped[0]
    assert value(text, "modelgate_model_state", model="doubler", version="2", state="READY")
    assert not value(text, "modelgate_model_state", model="doubler", version="2", state="LOADING")
    artifact = value(text, "modelgate_model_artifact_bytes", model="doubler", version="2")
    assert artifact > 0
    assert value(text, "modelgate_models_loaded_bytes") >= artifact
    assert value(text, "modelgate_models_memory_budget_bytes") == 1024 * 1024 * 1024
    assert value(text, "modelgate_inflight_requests") == 0
    assert value(text, "modelgate_http_accept_queue_connections") == 1
    assert value(text, "modelgate_http_accept_queue_limit_connections") == 16
    assert value(text, "modelgate_max_inflight_requests") == 512
    assert value(text, "modelgate_store_degraded", store="rate_limiter") == 0
    assert value(text, "modelgate_usage_dropped_requests_total") == 0
