// The capserve operator dashboard: reads /dashboard/stats every REFRESH_MS and draws it.
// Plain DOM and SVG: no library, no external request. Text goes in with textContent only.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const HISTORY = 60; // points kept for the charts: two minutes at one every two seconds
  const RATE_SPAN = 5; // the throughput tile: the rate over the last five intervals
  const SVG = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched

  const samples = []; // {t: seconds, texts, requests, p50, p95}
  let refreshes = 0;

  function el(id) {
    return document.getElementById(id);
  }

  function show(id, value) {
    el(id).textContent = value === null || value === undefined ? "-" : String(value);
  }

  function num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "-";
    return Number(value).toFixed(digits === undefined ? 0 : digits);
  }

  function pct(part, whole) {
    return whole > 0 ? (100 * part / whole).toFixed(1) + " %" : "-";
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + (s % 60) + "s";
  }

  function cell(text, badge) {
    const td = document.createElement("td");
    if (badge) {
      const span = document.createElement("span");
      span.className = "badge " + badge;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text === null || text === undefined ? "-" : String(text);
    }
    return td;
  }

  function fillTable(id, rows) {
    const body = el(id);
    const fresh = document.createDocumentFragment();
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const c of cells) tr.appendChild(c);
      fresh.appendChild(tr);
    }
    body.replaceChildren(fresh);
  }

  function svgNode(name, attrs) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  // Lines over the last HISTORY points, y from 0 to the largest value shown.
  function drawLines(id, series) {
    const svg = el(id);
    const values = series.flatMap((s) => s.values).filter((v) => v !== null);
    const top = Math.max(1e-9, ...values);
    const nodes = [svgNode("line", { x1: 0, y1: 99, x2: 300, y2: 99, class: "axis" })];
    for (const s of series) {
      const step = 300 / Math.max(1, HISTORY - 1);
      const offset = HISTORY - s.values.length;
      const points = s.values
        .map((v, i) => (v === null ? null : [(offset + i) * step, 98 - 90 * v / top]))
        .filter((p) => p !== null)
        .map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1));
      if (points.length > 0) {
        nodes.push(svgNode("polyline", { points: points.join(" "), class: "line " + s.name }));
        const [x, y] = points[points.length - 1].split(",");
        nodes.push(svgNode("circle", { cx: x, cy: y, r: 2, class: "dot " + s.name }));
      }
    }
    const scale = svgNode("text", { x: 2, y: 9, class: "scale" });
    scale.textContent = values.length ? num(top, top < 10 ? 2 : 0) : "no data";
    nodes.push(scale);
    svg.replaceChildren(...nodes);
  }

  function drawBars(id, values) {
    const svg = el(id);
    const top = Math.max(1, ...values);
    const width = 300 / Math.max(HISTORY, values.length);
    const nodes = [svgNode("line", { x1: 0, y1: 99, x2: 300, y2: 99, class: "axis" })];
    values.forEach((v, i) => {
      const h = 90 * v / top;
      nodes.push(svgNode("rect", {
        x: (i * width + 0.5).toFixed(1), y: (99 - h).toFixed(1),
        width: Math.max(0.5, width - 1).toFixed(1), height: h.toFixed(1), class: "bar",
      }));
    });
    const scale = svgNode("text", { x: 2, y: 9, class: "scale" });
    scale.textContent = values.length ? String(top) : "no windows yet";
    nodes.push(scale);
    svg.replaceChildren(...nodes);
  }

  function rate(key, span) {
    if (samples.length < 2) return null;
    const last = samples[samples.length - 1];
    const first = samples[Math.max(0, samples.length - 1 - span)];
    const seconds = last.t - first.t;
    return seconds > 0 ? Math.max(0, last[key] - first[key]) / seconds : null;
  }

  function intervalRates(key) {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = samples[i].t - samples[i - 1].t;
      out.push(dt > 0 ? Math.max(0, samples[i][key] - samples[i - 1][key]) / dt : null);
    }
    return out;
  }

  function hitRate(counters) {
    if (!counters) return "-";
    return pct(counters.hits, counters.hits + counters.misses);
  }

  function render(stats) {
    const now = performance.now() / 1000;
    samples.push({
      t: now, texts: stats.texts, requests: stats.requests,
      p50: stats.latency_ms.p50, p95: stats.latency_ms.p95,
    });
    while (samples.length > HISTORY + 1) samples.shift();

    show("uptime", duration(stats.uptime_s));
    show("updated", new Date().toLocaleTimeString());
    const texts = rate("texts", RATE_SPAN);
    const requests = rate("requests", RATE_SPAN);
    show("throughput", texts === null ? "-" : num(texts, 2));
    show("request-rate", requests === null ? "-" : num(requests, 2));
    show("latency-p50", num(stats.latency_ms.p50, 1));
    show("latency-p95", num(stats.latency_ms.p95, 1));
    show("queue-wait", num(stats.queue_wait_ms.p50, 1) + " / " + num(stats.queue_wait_ms.p95, 1));
    show("requests", stats.requests + " (" + stats.failed_requests + ")");
    show("texts", stats.texts + " (" + stats.unique_texts + ")");
    show("windows", stats.windows);
    show("ratio", stats.naive_to_actual_ratio === null ? "-" : num(stats.naive_to_actual_ratio, 2));

    drawLines("chart-throughput", [{ name: "texts", values: intervalRates("texts") }]);
    drawLines("chart-latency", [
      { name: "p50", values: samples.map((s) => s.p50) },
      { name: "p95", values: samples.map((s) => s.p95) },
    ]);
    const sizes = stats.window_texts;
    drawBars("chart-windows", sizes.recent);

    show("window-last", sizes.last);
    show("window-sizes", [sizes.mean, sizes.p50, sizes.p95, sizes.max].map((v) => num(v, 1)).join(" / "));
    show("window-max-batch", stats.batching.max_texts_per_window);
    show("window-ms", stats.batching.window_ms);
    fillTable("batching-body", Object.entries(stats.batching.state).map(([mode, s]) => [
      cell(mode), cell(s.windows_running), cell(s.windows_waiting),
      cell(s.requests_gathering), cell(s.windows_dispatched),
    ]));

    const adm = stats.admission;
    show("admission-texts", adm.admitted_texts + " of " + adm.max_admitted_texts);
    show("admission-requests", adm.admitted_requests);
    show("admission-accepted", adm.accepted_total);
    show("admission-rejected", adm.rejected_total);
    show("admission-refused-share", pct(adm.rejected_total, adm.accepted_total + adm.rejected_total));
    el("admission-meter").style.width =
      Math.min(100, 100 * adm.admitted_texts / Math.max(1, adm.max_admitted_texts)) + "%";

    const cache = stats.cache;
    if (cache.enabled) {
      show("cache-state", "on, L2 " + (cache.l2.state || "-"));
      show("cache-l1", hitRate(cache.l1) + " (" + cache.l1.hits + " hits, " + cache.l1.entries + " entries)");
      show("cache-l2", hitRate(cache.l2) + " (" + cache.l2.hits + " hits)");
      show("cache-answered", cache.answered_on_arrival);
      show("cache-saved", cache.executions_saved);
      fillTable("cache-body", Object.entries(cache.capabilities || {}).map(([name, c]) => [
        cell(name), cell(c.hits), cell(c.misses), cell(hitRate(c)),
      ]));
    } else {
      show("cache-state", "off");
      fillTable("cache-body", []);
    }

    const drift = stats.drift;
    const readings = Object.entries(drift.capabilities || {});
    const alerts = readings.filter(([, r]) => r.alert).length;
    show("drift-summary", drift.enabled
      ? "metric " + drift.metric + ", alert above " + drift.alert_threshold + ": " + alerts +
        (alerts === 1 ? " alert" : " alerts")
      : "drift monitoring is off");
    fillTable("drift-body", readings.map(([name, r]) => [
      cell(name), cell(r.value === null ? "-" : num(r.value, 4)), cell(r.recent_size),
      cell(r.reference_source + (r.reference_size === null ? "" : " (" + r.reference_size + ")")),
      r.alert ? cell("alert", "alert") : cell("ok", "ok"),
    ]));

    fillTable("capabilities-body", Object.entries(stats.capabilities).map(([name, c]) => [
      cell(name), cell(c.executions), cell(c.texts), cell(c.avg_texts_per_execution),
      cell(num(c.engine_seconds, 3)), cell(c.errors), cell(c.skipped_by_condition),
    ]));

    fillTable("engines-body", Object.entries(stats.engines.status).map(([name, e]) => [
      cell(name), cell(e.state, e.up ? "up" : "down"), cell(e.replicas_up), cell(e.restarts),
      cell(e.dtype), cell(e.last_error),
      cell(e.replicas.map((r) => r.replica + ": " + r.state).join(", ") || "-"),
    ]));
  }

  function setStatus(text, kind) {
    const status = el("status");
    status.textContent = text;
    status.className = "status " + kind;
  }

  // A failed fetch shows in the status; an error while drawing is left to surface as one.
  async function refresh() {
    let stats = null;
    try {
      const response = await fetch("/dashboard/stats", { cache: "no-store", credentials: "same-origin" });
      if (response.ok) {
        stats = await response.json();
      } else {
        setStatus("HTTP " + response.status, "error");
      }
    } catch (err) {
      setStatus("unreachable", "error");
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
    if (stats !== null) {
      render(stats);
      refreshes += 1;
      show("refreshes", refreshes);
      setStatus("live", "ok");
    }
  }

  refresh();
})();
