// The dashboard: reads modelgate's own JSON APIs with the key typed in; the server decides
// what the key may see (its scopes), never this page.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "modelgate.key";
  const DAYS = 30;
  const HISTORY = 60;
  const state = { key: null, operator: false, tenants: [], timer: null, traffic: [], busy: false,
    audits: new Map() };

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path) {
    const answer = await fetch(path, { headers: { Authorization: `Bearer ${state.key}` },
      cache: "no-store" });
    if (answer.status === 401) { signOut("The key was refused (401)."); throw new ApiError(401, "refused"); }
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new ApiError(answer.status, body.error || `HTTP ${answer.status}`);
    return body;
  }

  // Answers 403 and 404 as "not for this key" (null), anything else as the error it is.
  async function optional(path) {
    try { return await api(path); } catch (e) {
      if (e.status === 403 || e.status === 404) return null;
      throw e;
    }
  }

  function node(tag, text, cls) {
    const n = document.createElement(tag);
    if (text !== undefined && text !== null) n.textContent = String(text);
    if (cls) n.className = cls;
    return n;
  }

  function table(target, caption, head, rows) {
    const t = $(target) || target;
    t.replaceChildren();
    if (caption) t.append(node("caption", caption));
    // a column of words reads from the left, one of numbers from the right
    const words = head.map((_, i) => rows.length > 0 && !/^[-–\d.,%\s]*$/.test(
      rows[0][i] instanceof Node ? "x" : String(rows[0][i] ?? "")));
    const tr = node("tr");
    head.forEach((h, i) => { const th = node("th", h, words[i] ? "text" : ""); th.scope = "col"; tr.append(th); });
    t.append(node("thead")); t.tHead.append(tr);
    const body = node("tbody");
    for (const row of rows) {
      const r = node("tr");
      row.forEach((cell, i) => {
        const td = node("td", null, words[i] ? "text" : "");
        if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "–";
        r.append(td);
      });
      body.append(r);
    }
    if (!rows.length) {
      const r = node("tr"); const td = node("td", "No data yet."); td.colSpan = head.length;
      r.append(td); body.append(r);
    }
    t.append(body);
    return t;
  }

  const num = (n, digits) => n === null || n === undefined ? "–"
    : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0 });
  const tenantQuery = () => ($("tenant").value ? `tenant=${encodeURIComponent($("tenant").value)}` : "");

  // -- sign in and out ------------------------------------------------------------------
  async function signIn(key) {
    state.key = key;
    $("login-error").textContent = "";
    let tenants;
    try { tenants = await api("/admin/tenants"); } catch (e) {
      if (e.status !== 401) { $("login-error").textContent = `Could not sign in: ${e.message}`; state.key = null; }
      return;
    }
    sessionStorage.setItem(KEY, key);
    // whose traffic the server answers with: every tenant's for an operator, else its own
    const probe = await optional("/admin/traffic");
    state.operator = probe !== null && probe.tenant === null;
    state.tenants = tenants;
    const select = $("tenant");
    select.replaceChildren();
    if (state.operator) select.append(new Option("All tenants", ""));
    for (const t of tenants) select.append(new Option(`${t.name} (${t.id})`, t.id));
    $("who").textContent = state.operator ? "Operator: every tenant is visible."
      : `Tenant ${tenants.map((t) => t.name).join(", ")}.`;
    $("login").hidden = true; $("board").hidden = false; $("controls").hidden = false;
    state.traffic = []; state.audits.clear();
    await refresh();
    schedule();
    $("main").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    state.key = null;
    clearTimeout(state.timer);
    $("board").hidden = true; $("controls").hidden = true; $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("key").value = "";
    $("key").focus();
  }

  function schedule() {
    clearTimeout(state.timer);
    const every = Number($("refresh").value);
    if (every > 0 && state.key) state.timer = setTimeout(async () => { await refresh(); schedule(); }, every * 1000);
  }

  async function refresh() {
    if (state.busy || !state.key) return;
    state.busy = true;
    try {
      const models = await optional("/v1/models");
      const names = models ? models.data.map((m) => m.id) : [];
      await Promise.all([usage(), traffic(), deployments(names), health(names), jobs()]);
      $("status").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      if (e.status !== 401) $("status").textContent = `Could not update: ${e.message}`;
    } finally { state.busy = false; }
  }

  // -- 1. usage, cost and quotas --------------------------------------------------------
  async function usage() {
    const since = new Date(Date.now() - (DAYS - 1) * 86400000).toISOString().slice(0, 10);
    const q = [`group_by=day,model`, `since=${since}`, tenantQuery()].filter(Boolean).join("&");
    const report = await optional(`/admin/usage?${q}`);
    if (report === null) {
      $("usage-models").replaceChildren(node("caption", "This key cannot read usage (usage:read)."));
      $("quotas").replaceChildren(); $("usage-chart").replaceChildren(); return;
    }
    const cur = report.currency;
    const byModel = new Map();
    const days = [];
    for (let i = DAYS - 1; i >= 0; i--) days.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
    for (const r of report.rows) {
      const m = byModel.get(r.model) || { requests: 0, errors: 0, rows: 0, tokens: 0, compute: 0, cost: 0, perDay: {} };
      m.requests += r.requests; m.errors += r.errors; m.rows += r.rows; m.tokens += r.tokens;
      m.compute += r.compute_seconds; m.cost += r.cost;
      m.perDay[r.day] = (m.perDay[r.day] || 0) + r.requests;
      byModel.set(r.model, m);
    }
    const models = [...byModel.keys()].sort();
    table("usage-models", `Per model since ${since} (${cur})`,
      ["Model", "Requests", "Errors", "Rows", "Tokens", "Compute s", `Cost (${cur})`],
      models.map((name) => { const m = byModel.get(name);
        return [name, num(m.requests), num(m.errors), num(m.rows), num(m.tokens), num(m.compute, 3), num(m.cost, 4)]; }));
    MGCharts.bars($("usage-chart"), days,
      models.map((name) => ({ name, values: days.map((d) => byModel.get(name).perDay[d] || 0) })),
      "Requests per day and model");
    const rows = [...report.rows].sort((a, b) => (b.day || "").localeCompare(a.day || "") || a.model.localeCompare(b.model));
    table("usage-days", null, ["Day", "Model", "Requests", "Errors", "Rows", "Tokens", "Latency avg ms", `Cost (${cur})`],
      rows.map((r) => [r.day, r.model, num(r.requests), num(r.errors), num(r.rows), num(r.tokens), num(r.latency_ms_avg, 2), num(r.cost, 4)]));
    await quotas();
  }

  async function quotas() {
    const box = $("quotas");
    const tenant = $("tenant").value;
    if (!tenant) { box.replaceChildren(node("p", "Choose a tenant to see its quotas.", "muted")); return; }
    const found = await optional(`/admin/tenants/${encodeURIComponent(tenant)}/quotas`);
    if (!found || !found.length) { box.replaceChildren(node("p", "No quotas on this tenant's plan.", "muted")); return; }
    box.replaceChildren(...found.map((q) => {
      const share = q.limit > 0 ? q.used / q.limit : 0;
      const st = share >= 1 ? "exceeded" : share >= 0.8 ? "warning" : "ok";
      const card = node("div", null, "gauge");
      card.dataset.quota = q.quota; card.dataset.state = st;
      card.append(node("div", q.quota.replaceAll("_", " "), "label"));
      card.append(MGCharts.gauge(q.used, q.limit, st, `${q.quota}: ${q.used} of ${q.limit}`));
      card.append(node("div", `${num(q.used)} of ${num(q.limit)} used`));
      const alert = { ok: "below 80%", warning: "80% alert", exceeded: "100% alert: refused" }[st];
      card.append(node("span", alert, `badge state-${st}`));
      card.append(node("div", `resets ${new Date(q.resets_at).toLocaleString()}`, "muted"));
      return card;
    }));
  }

  // -- 2. live traffic ------------------------------------------------------------------
  async function traffic() {
    const q = tenantQuery();
    const found = await optional(`/admin/traffic${q ? "?" + q : ""}`);
    if (found === null) { $("traffic").replaceChildren(node("caption", "This key cannot read traffic (usage:read).")); return; }
    const now = Date.parse(found.at);
    const last = state.traffic[state.traffic.length - 1];
    const totals = {};
    for (const v of found.versions) totals[v.model] = (totals[v.model] || 0) + v.requests;
    state.traffic.push({ at: now, totals, versions: found.versions });
    if (state.traffic.length > HISTORY) state.traffic.shift();
    const rate = (v) => {
      if (!last) return null;
      const before = last.versions.find((x) => x.model === v.model && x.version === v.version);
      const dt = (now - last.at) / 1000;
      return dt > 0 ? (v.requests - (before ? before.requests : 0)) / dt : null;
    };
    table("traffic", "Cumulative since this replica started; rate over the last refresh",
      ["Model", "Version", "Requests", "Req/s", "Errors", "Error rate", "p50 ms", "p95 ms", "p99 ms"],
      found.versions.map((v) => { const errors = Object.values(v.errors).reduce((a, b) => a + b, 0);
        return [v.model, v.version, num(v.requests), num(rate(v), 2), num(errors),
          v.requests ? `${(100 * errors / v.requests).toFixed(1)}%` : "–",
          num(v.latency_ms.p50, 2), num(v.latency_ms.p95, 2), num(v.latency_ms.p99, 2)]; }));
    const models = Object.keys(totals).sort();
    const series = models.map((m) => ({ name: m, points: state.traffic.slice(1).map((p, i) => {
      const prev = state.traffic[i];
      const dt = (p.at - prev.at) / 1000;
      return [p.at, dt > 0 ? Math.max(0, ((p.totals[m] || 0) - (prev.totals[m] || 0)) / dt) : 0];
    }) }));
    MGCharts.lines($("traffic-chart"), series, "Requests per second per model", "req/s");
  }

  // -- 3. deployments -------------------------------------------------------------------
  async function deployments(names) {
    const box = $("deployments");
    if (!state.operator) { box.replaceChildren(node("p", "Deployments are read by operators (tenants:admin).", "muted")); return; }
    const parts = [];
    const rows = [];
    const found = new Map((await api("/admin/deployments")).map((d) => [d.model, d]));
    for (const name of [...new Set([...names, ...found.keys()])].sort()) {
      const d = found.get(name);
      if (!d) { rows.push([name, "manifest default", "–", "–", "–"]); continue; }
      const split = node("div", null, "split");
      split.setAttribute("role", "img");
      split.setAttribute("aria-label", d.weights.map((w) => `v${w.version} ${w.percent}%`).join(", "));
      d.weights.forEach((w, i) => {
        const s = node("span", `v${w.version} ${w.percent}% ${w.role}`);
        s.style.width = `${w.percent}%`;
        s.style.background = ["#2759c4", "#a15c00", "#1b7f3b", "#7b3fb5"][i % 4];
        split.append(s);
      });
      rows.push([name, `${d.stage} (rev ${d.revision})`, split, canaryState(d), d.shadow ? `v${d.shadow.version} ${d.shadow.percent}%` : "–"]);
    }
    const t = node("table"); parts.push(node("div", null, "scroll")); parts[0].append(t);
    table(t, "Current deployments", ["Model", "Stage", "Traffic split", "Canary", "Shadow"], rows);
    const audit = await optional("/admin/audit?limit=1000");
    if (audit !== null) {
      const history = audit.filter((a) => a.action.startsWith("deployment.")).reverse();
      const h = node("table"); h.id = "deployment-history";
      const wrap = node("div", null, "scroll"); wrap.append(h);
      table(h, "History: sets, canary steps, promotions and rollbacks (newest first)",
        ["Action", "Model", "When", "By"],
        history.map((a) => [a.action.slice(11), a.target.replace(/^deployment:/, ""), new Date(a.at).toLocaleString(), a.actor]));
      parts.push(node("h3", "History"), wrap);
    }
    box.replaceChildren(...parts);
  }

  // The canary's step, the gate's window and thresholds and its state, as the server
  // reports them (the server judges the gate; the page judges nothing).
  function canaryState(d) {
    const c = d.canary;
    if (!c) return "–";
    const g = d.gate;
    const words = { passing: "passing", failing: "failing", waiting: "waiting for enough requests" };
    const verdict = g ? `Gate ${words[g.state] || g.state}${g.state === "passing" && !g.step_over
      ? " (the step's time is not up)" : ""}: ${g.reason} (${g.window}'s window). ` : "";
    const step = `v${c.version}: step ${c.step + 1} of ${c.steps.length} (${c.steps.join("/")}%)`;
    const w = d.replica && (d.replica.cluster_window || d.replica.canary_window);
    const side = (x) => `${num(x.requests)} req, ${(100 * x.error_rate).toFixed(1)}% err, p95 ${num(x.p95_ms, 1)} ms`;
    const seen = w ? `; baseline ${side(w.baseline)}; canary ${side(w.canary)}` : "";
    return `${verdict}${step}${seen}; gate: ≥${c.min_requests} req, +${(100 * c.max_error_rate_increase).toFixed(1)}% err, p95 ≤ ${c.max_p95_ratio}× + ${c.p95_slack_ms} ms`;
  }

  // -- 4. model health ------------------------------------------------------------------
  async function health(names) {
    const rows = [];
    const audits = [];
    for (const name of names) {
      const m = await optional(`/admin/models/${encodeURIComponent(name)}/monitoring`);
      if (m === null) continue;
      // only a model naming protected attributes is audited (any other answers 400)
      if ((m.protected_attributes || []).length) audits.push(await fairness(name));
      for (const v of m.versions) {
        // a tenant's key sees the model-wide window's verdicts only: no PSI (scope "tenant")
        const worst = [...(v.features || [])].sort((a, b) => (b.psi ?? 0) - (a.psi ?? 0)).slice(0, 3)
          .map((f) => f.psi == null ? `${f.name} ${f.status}` : `${f.name} ${f.status} (PSI ${f.psi.toFixed(3)})`).join("; ");
        const conf = Object.entries(v.confidence || {}).map(([o, c]) =>
          `${o}: top ${c.mean_top_probability.toFixed(2)}, low ${(100 * c.low_confidence_share).toFixed(0)}%`).join("; ");
        const an = v.anomalies ? `${v.anomalies.flagged + v.anomalies.rejected} of ${v.anomalies.requests}` : "–";
        rows.push([name, v.version, v.status, num(v.rows), worst || "–", conf || "–", an]);
      }
    }
    const t = node("table"); const wrap = node("div", null, "scroll"); wrap.append(t);
    table(t, state.operator
      ? "Each version's recent window (every tenant's requests to the model) against its reference profile"
      : "Each version's recent window against its reference profile: the model's verdicts (the figures of a shared model's window are the operator's)",
      ["Model", "Version", "Status", "Rows", "Drift (worst features)", "Confidence", "Anomalies"], rows);
    const parts = [wrap];
    if (audits.length) parts.push(node("h3", "Fairness per group"), ...audits.flat());
    $("health").replaceChildren(...parts);
  }

  // A model's fairness audit (the key's own predictions; an operator's: the chosen tenant's
  // or everyone's), read at most every FAIRNESS_EVERY ms: an audit reads up to 50,000 rows.
  const FAIRNESS_EVERY = 30000;
  async function fairness(name) {
    const q = tenantQuery();
    const path = `/admin/models/${encodeURIComponent(name)}/fairness${q ? "?" + q : ""}`;
    const kept = state.audits.get(path);
    let report = kept && Date.now() - kept.at < FAIRNESS_EVERY ? kept.report : undefined;
    if (report === undefined) {
      report = await optional(path);
      state.audits.set(path, { at: Date.now(), report });
    }
    if (report === null) return [node("p", `${name}: this key cannot audit the model's fairness.`, "muted")];
    const found = [];
    for (const v of report.versions) {
      for (const a of v.attributes) {
        const t = node("table");
        t.dataset.fairness = `${name}/${v.version}/${a.attribute}`;
        const wrap = node("div", null, "scroll"); wrap.append(t);
        table(t, `${name} v${v.version}, ${a.attribute}: ${a.status}; ${num(a.rows)} labelled rows`
          + ` (at least ${num(report.min_group_size)} per group to judge)`,
          ["Group", "Count", "Selection rate", "Accuracy"],
          a.groups.map((g) => g.sufficient
            ? [g.group, num(g.count), num(g.selection_rate, 3), num(g.accuracy, 3)]
            : [g.group, num(g.count), "too few to judge", "–"]));
        const diff = node("p", a.status === "ok"
          ? `Demographic parity difference ${num(a.demographic_parity_difference, 3)}, `
            + `ratio ${num(a.demographic_parity_ratio, 3)}; equalized odds difference `
            + `${num(a.equalized_odds_difference, 3)}; equal opportunity difference `
            + `${num(a.equal_opportunity_difference, 3)}.`
          : `Differences: ${a.status} (fewer than two groups with enough labelled rows).`, "muted");
        diff.dataset.fairness = t.dataset.fairness;
        found.push(wrap, diff);
      }
    }
    if (!found.length) found.push(node("p", `${name}: no labelled predictions in the window yet.`, "muted"));
    return found;
  }

  // -- 5. jobs --------------------------------------------------------------------------
  async function jobs() {
    const found = await optional("/v1/jobs?limit=100");
    if (found === null) { $("jobs").replaceChildren(node("p", "Jobs are not served, or not for this key.", "muted")); return; }
    const counts = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0, dead: 0 };
    for (const j of found.data) counts[j.status] = (counts[j.status] || 0) + 1;
    const t = node("table");
    table(t, `The key's newest ${found.data.length} jobs${found.has_more ? " (more exist)" : ""}`,
      Object.keys(counts).map((k) => k[0].toUpperCase() + k.slice(1)), [Object.values(counts).map((n) => num(n))]);
    $("jobs").replaceChildren(t);
  }

  // -- wiring ---------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (e) => { e.preventDefault(); signIn($("key").value.trim()); });
    $("logout").addEventListener("click", () => signOut());
    $("refresh").addEventListener("change", schedule);
    $("tenant").addEventListener("change", () => { state.traffic = []; refresh(); });
    const kept = sessionStorage.getItem(KEY);
    if (kept) signIn(kept); else $("key").focus();
  });
})();
