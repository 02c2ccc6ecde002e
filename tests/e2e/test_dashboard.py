"""The dashboard at ``/dashboard``, against a real ``modelgate serve`` with the demo models.

Over plain HTTP: the page and its assets are served by modelgate itself, with no CDN
reference and a strict Content-Security-Policy; ``/admin/traffic`` (the JSON the live
section reads) keeps each tenant to its own traffic. In a real headless Chromium (Debian's
``chromium``, driven by Playwright): a tenant signs in with its key and sees what the usage
API reports for it, another tenant's data nowhere, the numbers and chart move after traffic
is sent, and the page logs no console error. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from modelgate.demo import credit_risk
from tests.e2e.conftest import ADMIN_KEY, AUTH, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ROW = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 12], "data": [0.5] * 12}]}


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    key: str


@pytest.fixture(scope="module")
def server(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(demo_models, tmp_path_factory.mktemp("dashboard"))
    yield running
    assert stop_server(running) == 0, running.log.read_text()


def make_tenant(server: RunningServer, prefix: str, **plan: int) -> Tenant:
    name = f"{prefix}-{secrets.token_hex(4)}"
    scopes = ["infer", "models:read", "usage:read"]
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/plans", json={"name": name, **plan}).status_code == 201
        tenant = admin.post("/admin/tenants", json={"name": name, "plan": name})
        assert tenant.status_code == 201, tenant.text
        tenant_id = tenant.json()["id"]
        key = admin.post(f"/admin/tenants/{tenant_id}/keys", json={"name": name, "scopes": scopes})
        assert key.status_code == 201, key.text
    return Tenant(tenant_id, name, key.json()["secret"])


def infer(server: RunningServer, tenant: Tenant, count: int, model: str = "credit-risk") -> None:
    headers = {"Authorization": f"Bearer {tenant.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        for _ in range(count):
            answer = http.post(f"/v2/models/{model}/infer", json=ROW)
            assert answer.status_code == 200, answer.text


def usage_requests(server: RunningServer, tenant: Tenant) -> dict[str, int]:
    """Requests per model that the usage API reports for ``tenant`` (its own key)."""
    headers = {"Authorization": f"Bearer {tenant.key}"}
    answer = httpx.get(
        f"{server.url}/admin/usage", params={"group_by": "model"}, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return {row["model"]: row["requests"] for row in answer.json()["rows"]}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not seen in {timeout} s: {what}")
        time.sleep(0.2)


# -- over plain HTTP --------------------------------------------------------------------


def test_the_page_and_its_assets_are_served_here_with_a_strict_policy(
    server: RunningServer,
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:  # no credential: no data
        page = http.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assets = re.findall(r"""(?:src|href)=["'](/[^"']+)""", page.text)  # not "#main"
        assert {a.rsplit(".", 1)[-1] for a in assets} == {"js", "css"}
        for text in [page.text, *(http.get(a).text for a in assets)]:
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)  # no CDN
            assert "cdn" not in text.lower()
        for asset in assets:
            answer = http.get(asset)
            assert answer.status_code == 200, asset
            assert answer.headers["content-security-policy"] == policy
        assert "<script>" not in page.text  # no inline script: the policy would refuse it
        assert http.get("/dashboard/static/missing.js").status_code == 404
        assert http.get("/dashboard/static/../pages.py").status_code == 404
        assert http.post("/dashboard").status_code == 405
        documented = http.get("/openapi.json").json()["paths"]["/dashboard"]["get"]
        assert "text/html" in documented["responses"]["200"]["content"]


def test_traffic_keeps_each_tenant_to_its_own(server: RunningServer) -> None:
    first, second = make_tenant(server, "traffic-a"), make_tenant(server, "traffic-b")
    infer(server, first, 3)
    infer(server, second, 2)

    def traffic(key: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{server.url}/admin/traffic", params=params, headers=headers)

    assert traffic("").status_code == 401
    own = traffic(first.key)
    assert own.status_code == 200, own.text
    assert own.json()["tenant"] == first.id
    rows = own.json()["versions"]
    assert [(r["model"], r["requests"]) for r in rows] == [("credit-risk", 3)]
    assert rows[0]["errors"] == {} and rows[0]["latency_ms"]["p95"] > 0
    assert traffic(first.key, tenant=second.id).status_code == 404  # not another's
    other = traffic(ADMIN_KEY, tenant=second.id).json()["versions"]
    assert [(r["model"], r["requests"]) for r in other] == [("credit-risk", 2)]
    deployments = "/admin/deployments"
    refused = httpx.get(server.url + deployments, headers={"Authorization": f"Bearer {first.key}"})
    assert refused.status_code == 403  # operators only, as each model's deployment
    everyone = traffic(ADMIN_KEY).json()
    assert everyone["tenant"] is None
    assert sum(r["requests"] for r in everyone["versions"]) >= 5


# -- in a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium, installed here if missing (never Playwright's own download)."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.skip("no /usr/bin/chromium and no apt-get to install it")
        done = subprocess.run(
            ["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900, check=False
        )
        if done.returncode != 0 or not CHROMIUM.exists():
            pytest.skip(f"chromium could not be installed: {done.stderr.decode()[-400:]}")
    return CHROMIUM


@pytest.fixture
def browser_page(chromium: Path) -> Iterator[tuple[Page, list[str]]]:
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium))
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page, errors
        finally:
            browser.close()


def sign_in(page: Page, server: RunningServer, key: str) -> None:
    page.goto(f"{server.url}/dashboard")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Open dashboard").click()
    page.wait_for_selector("#board:not([hidden])")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('Updated')"
    )


def cell(page: Page, table: str, row: str, column: str) -> str:
    """The text of ``table``'s cell in the row whose first cell is ``row``."""
    text: str = page.evaluate(
        """([table, row, column]) => {
            const t = document.getElementById(table);
            const heads = [...t.tHead.rows[0].cells].map((c) => c.textContent);
            const r = [...t.tBodies[0].rows].find((x) => x.cells[0].textContent === row);
            return r ? r.cells[heads.indexOf(column)].textContent : "";
        }""",
        [table, row, column],
    )
    return text


def test_a_tenant_sees_its_own_usage_live_and_no_other_tenant(
    server: RunningServer, browser_page: tuple[Page, list[str]]
) -> None:
    page, errors = browser_page
    tenant = make_tenant(server, "dash-own", requests_per_day=10)
    other = make_tenant(server, "dash-other")
    infer(server, tenant, 8)  # 80% of the day's quota: the 80% alert
    infer(server, other, 5)
    wait_for(lambda: usage_requests(server, tenant).get("credit-risk") == 8, "usage flushed")
    wait_for(lambda: usage_requests(server, other).get("credit-risk") == 5, "usage flushed")

    sign_in(page, server, tenant.key)
    reported = usage_requests(server, tenant)
    assert cell(page, "usage-models", "credit-risk", "Requests") == str(reported["credit-risk"])
    assert cell(page, "traffic", "credit-risk", "Requests") == "8"
    gauge = page.locator('.gauge[data-quota="requests_per_day"]')
    assert gauge.get_attribute("data-state") == "warning"
    assert "80% alert" in gauge.inner_text()
    assert "8 of 10 used" in gauge.inner_text()
    assert page.locator("#tenant option").all_inner_texts() == [f"{tenant.name} ({tenant.id})"]
    html = page.content()
    assert other.id not in html and other.name not in html
    assert "Deployments are read by operators" in page.locator("#deployments").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-tenant-before.png"), full_page=True)
    chart_before = page.locator("#usage-chart").inner_html()

    page.get_by_label("Refresh").select_option("2")
    infer(server, tenant, 2)  # now 100%: the quota's own alert
    wait_for(lambda: usage_requests(server, tenant).get("credit-risk") == 10, "usage flushed")
    page.wait_for_function(
        """() => document.querySelector('.gauge[data-quota="requests_per_day"]')
                 ?.dataset.state === 'exceeded'""",
        timeout=30_000,
    )
    assert cell(page, "usage-models", "credit-risk", "Requests") == "10"
    assert cell(page, "traffic", "credit-risk", "Requests") == "10"
    assert page.locator("#usage-chart").inner_html() != chart_before
    page.wait_for_function(  # the rate of the 2 requests, as a point of the live chart
        """() => [...document.querySelectorAll('#traffic-chart circle title')]
                 .some((t) => !t.textContent.endsWith(': 0 req/s'))""",
        timeout=30_000,
    )
    assert "100% alert" in gauge.inner_text()
    html = page.content()
    assert other.id not in html and other.name not in html
    page.screenshot(path=str(ARTIFACTS / "dashboard-tenant-after.png"), full_page=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))  # the docs' one (docs/dashboard.png)

    page.get_by_role("button", name="Sign out").click()
    assert page.locator("#login").is_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert errors == []


def labelled_traffic(server: RunningServer, tenant: Tenant, per_band: dict[int, int]) -> None:
    """``tenant``'s predictions of credit-risk for rows of each age band (so many rows of
    each), with their true labels sent back as feedback."""
    data = credit_risk.generate(1500, seed=7)
    band = data.features[:, 0]
    rows = np.concatenate([np.flatnonzero(band == b)[:n] for b, n in per_band.items()])
    headers = {"Authorization": f"Bearer {tenant.key}"}
    items = []
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        for start in range(0, len(rows), 64):
            chunk = data.features[rows[start : start + 64]]
            tensor = {"name": "features", "datatype": "FP32", "shape": list(chunk.shape)}
            answer = http.post(
                "/v2/models/credit-risk/infer",
                json={"inputs": [{**tensor, "data": chunk.ravel().tolist()}]},
            )
            assert answer.status_code == 200, answer.text
            labels = data.labels[rows[start : start + 64]].tolist()
            items.append({"request_id": answer.headers["x-request-id"], "labels": labels})
        answer = http.post("/v1/feedback", json={"items": items})
        assert answer.json() == {"accepted": len(rows)}, answer.text


def test_a_tenant_sees_the_fairness_of_its_own_predictions_per_group(
    server: RunningServer, browser_page: tuple[Page, list[str]]
) -> None:
    page, errors = browser_page
    tenant, other = make_tenant(server, "dash-fair"), make_tenant(server, "dash-fair-other")
    labelled_traffic(server, tenant, {0: 40, 1: 40, 4: 5})  # band 4: too few to judge
    labelled_traffic(server, other, {2: 40})  # never in the tenant's audit
    headers = {"Authorization": f"Bearer {tenant.key}"}

    def audit() -> dict[str, object]:
        answer = httpx.get(
            f"{server.url}/admin/models/credit-risk/fairness", headers=headers, timeout=60
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, object] = answer.json()
        return found

    wait_for(lambda: sum(v["rows"] for v in audit()["versions"]) == 85, "feedback joined")
    (version,) = audit()["versions"]
    (attribute,) = version["attributes"]
    assert attribute["attribute"] == "age_band" and attribute["status"] == "ok"
    groups = {g["group"]: g for g in attribute["groups"]}
    assert sorted(groups) == ["0", "1", "4"]

    sign_in(page, server, tenant.key)
    name = f"credit-risk/{version['version']}/age_band"
    table = page.locator(f'table[data-fairness="{name}"]')
    shown = {
        r[0]: r[1:]
        for r in page.evaluate(
            "(t) => [...t.tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent))",
            table.element_handle(),
        )
    }
    assert list(shown) == ["0", "1", "4"]
    for group in ("0", "1"):
        g = groups[group]
        assert g["sufficient"] is True
        assert shown[group] == [
            str(g["count"]), f"{g['selection_rate']:.3f}".rstrip("0").rstrip("."),
            f"{g['accuracy']:.3f}".rstrip("0").rstrip("."),
        ]  # fmt: skip
    assert groups["4"]["sufficient"] is False
    assert shown["4"] == ["5", "too few to judge", "\u2013"]  # an en dash: no figure
    assert "ok; 85 labelled rows" in table.locator("caption").inner_text()
    differences = page.locator(f'p[data-fairness="{name}"]').inner_text()
    dpd = f"{attribute['demographic_parity_difference']:.3f}".rstrip("0").rstrip(".")
    assert f"Demographic parity difference {dpd}," in differences
    html = page.content()
    assert other.id not in html and other.name not in html
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-fairness.png"), full_page=True)
    assert errors == []


def test_an_operator_sees_every_tenant_and_the_keyboard_reaches_each_control(
    server: RunningServer, browser_page: tuple[Page, list[str]]
) -> None:
    page, errors = browser_page
    first, second = make_tenant(server, "op-a"), make_tenant(server, "op-b")
    infer(server, first, 1)
    infer(server, second, 1)
    canary = {"version": 1, "steps": [10, 50, 100], "step_seconds": 3600, "min_requests": 7}
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as admin:
        put = admin.put(
            "/admin/models/credit-risk/deployment", json={"default_version": 2, "canary": canary}
        )
        assert put.status_code == 200, put.text

        def gate() -> dict[str, object] | None:
            found: dict[str, object] | None = admin.get(
                "/admin/models/credit-risk/deployment"
            ).json()["gate"]
            return found

        wait_for(lambda: gate() is not None, "the canary applied on this replica")
        judged = gate()
    assert judged is not None and judged["state"] == "waiting" and judged["step_over"] is False
    assert judged["reason"] == "waiting for 7 requests on each version (candidate 0, baseline 0)"
    page.goto(f"{server.url}/dashboard")
    assert page.evaluate("document.activeElement.id") == "key"  # focus starts in the form
    page.keyboard.type(ADMIN_KEY)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('Updated')"
    )
    options = page.locator("#tenant option").all_inner_texts()
    assert options[0] == "All tenants"
    assert f"{first.name} ({first.id})" in options and f"{second.name} ({second.id})" in options
    assert page.locator("#deployments table").count() >= 1
    deployments = page.locator("#deployments").inner_text()
    assert "credit-risk" in deployments and "v2 90% baseline" in deployments
    assert "v1 10% canary" in deployments and "v1: step 1 of 3 (10/50/100%)" in deployments
    assert "gate: ≥7 req" in deployments
    assert f"Gate waiting for enough requests: {judged['reason']} (replica's window)" in deployments
    assert cell(page, "deployment-history", "set", "Model") == "credit-risk"  # newest first
    reached = []  # from <main>, where signing in put the focus: its controls, then the top
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                """() => { const e = document.activeElement;
                           return [e.id || e.tagName, getComputedStyle(e).outlineStyle]; }"""
            )
        )
    ids = [found for found, _ in reached]
    assert "skip" in ids, reached
    start = ids.index("skip")
    assert ids[start : start + 4] == ["skip", "tenant", "refresh", "logout"], reached
    assert all(outline != "none" for _, outline in reached[start : start + 4]), reached
    page.get_by_label("Tenant").select_option(first.id)
    page.wait_for_function(
        "() => document.querySelector('#quotas .gauge') !== null",  # that tenant's quotas
        timeout=30_000,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-operator.png"), full_page=True)
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models/credit-risk/deployment/rollback").status_code == 200
    assert errors == []
