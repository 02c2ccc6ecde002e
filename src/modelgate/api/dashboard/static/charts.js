// Small SVG charts for the dashboard, written by hand: no library, nothing fetched from elsewhere.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2759c4", "#1b7f3b", "#a15c00", "#7b3fb5", "#b3261e", "#00838f", "#5d4037"];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(width, height, label) {
    return el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  }

  function fmt(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return Number.isInteger(n) ? String(n) : n.toFixed(2);
  }

  // Stacked bars: one bar per label, one colour per series ({name, values}).
  function bars(container, labels, series, label) {
    const W = 900, H = 200, L = 44, B = 22, T = 8;
    const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
    const max = Math.max(1, ...totals);
    const root = svg(W, H + 24, label);
    const step = (W - L) / Math.max(1, labels.length);
    const bw = Math.max(2, step * 0.7);
    for (const f of [0, 0.5, 1]) {
      const y = T + (H - T - B) * (1 - f);
      root.append(el("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#d8dce3" }));
      root.append(el("text", { x: L - 4, y: y + 4, "text-anchor": "end" }, fmt(max * f)));
    }
    labels.forEach((name, i) => {
      let base = H - B;
      series.forEach((s, k) => {
        const v = s.values[i] || 0;
        if (!v) return;
        const h = (H - T - B) * v / max;
        base -= h;
        const r = el("rect", { x: L + i * step + (step - bw) / 2, y: base, width: bw, height: h,
          fill: PALETTE[k % PALETTE.length] });
        r.append(el("title", {}, `${name} ${s.name}: ${fmt(v)}`));
        root.append(r);
      });
      if (labels.length <= 16 || i % Math.ceil(labels.length / 16) === 0) {
        root.append(el("text", { x: L + i * step + step / 2, y: H - 6, "text-anchor": "middle" },
          name.slice(5)));
      }
    });
    let x = L;
    series.forEach((s, k) => {
      root.append(el("rect", { x, y: H + 8, width: 10, height: 10, fill: PALETTE[k % PALETTE.length] }));
      root.append(el("text", { x: x + 14, y: H + 17 }, s.name));
      x += 24 + s.name.length * 7;
    });
    container.replaceChildren(root);
  }

  // Lines over time: series ({name, points: [[t, v]]}).
  function lines(container, series, label, unit) {
    const W = 900, H = 180, L = 44, T = 8, B = 20;
    const all = series.flatMap((s) => s.points);
    const max = Math.max(1, ...all.map((p) => p[1]));
    const t0 = Math.min(...all.map((p) => p[0]), Date.now() - 60000);
    const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
    const root = svg(W, H + 24, label);
    for (const f of [0, 0.5, 1]) {
      const y = T + (H - T - B) * (1 - f);
      root.append(el("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#d8dce3" }));
      root.append(el("text", { x: L - 4, y: y + 4, "text-anchor": "end" }, fmt(max * f)));
    }
    root.append(el("text", { x: W, y: H - 4, "text-anchor": "end" }, unit));
    let lx = L;
    series.forEach((s, k) => {
      const colour = PALETTE[k % PALETTE.length];
      const d = s.points.map((p, i) => {
        const x = L + (W - L) * (p[0] - t0) / (t1 - t0);
        const y = T + (H - T - B) * (1 - p[1] / max);
        return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      }).join("");
      if (d) root.append(el("path", { d, fill: "none", stroke: colour, "stroke-width": 2 }));
      for (const p of s.points) {  // a dot per read: one read shows too
        const dot = el("circle", { cx: (L + (W - L) * (p[0] - t0) / (t1 - t0)).toFixed(1),
          cy: (T + (H - T - B) * (1 - p[1] / max)).toFixed(1), r: 3, fill: colour });
        dot.append(el("title", {}, `${s.name}: ${fmt(p[1])} ${unit}`));
        root.append(dot);
      }
      root.append(el("rect", { x: lx, y: H + 8, width: 10, height: 10, fill: colour }));
      root.append(el("text", { x: lx + 14, y: H + 17 }, s.name));
      lx += 24 + s.name.length * 7;
    });
    container.replaceChildren(root);
  }

  // A half-circle gauge of used/limit; state colours at 80% and 100%.
  function gauge(used, limit, state, label) {
    const share = limit > 0 ? Math.min(used / limit, 1) : 0;
    const root = svg(160, 92, label);
    const arc = (f) => {
      const a = Math.PI * (1 - f);
      return `${(80 + 64 * Math.cos(a)).toFixed(1)},${(84 - 64 * Math.sin(a)).toFixed(1)}`;
    };
    root.append(el("path", { d: `M16,84 A64,64 0 0 1 144,84`, fill: "none", stroke: "#e3e6eb",
      "stroke-width": 14 }));
    if (share > 0) {
      const colour = { ok: "#1b7f3b", warning: "#a15c00", exceeded: "#b3261e" }[state];
      root.append(el("path", { d: `M16,84 A64,64 0 0 1 ${arc(share)}`, fill: "none",
        stroke: colour, "stroke-width": 14 }));
    }
    root.append(el("text", { x: 80, y: 80, "text-anchor": "middle", class: "share" },
      `${Math.floor(share * 100)}%`));
    return root;
  }

  window.MGCharts = { bars, lines, gauge, fmt };
})();
