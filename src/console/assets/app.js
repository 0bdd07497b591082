// apiproxy console: a small single-page app over the JSON admin API
// (/admin/...). No framework, no build step; the DOM is built with h(),
// never from HTML strings, so names a client sent cannot inject markup.
"use strict";

const KEY_STORAGE = "apiproxy.adminKey";
const REFRESH_MS = 5000;
const MAX_TAIL_ROWS = 200;

let adminKey = sessionStorage.getItem(KEY_STORAGE) || "";
let timers = [];
let aborts = [];

// ---------- DOM helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    // Through the CSSOM: the page's CSP refuses inline style attributes.
    else if (k === "style") el.style.cssText = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}
const $ = (sel) => document.querySelector(sel);
const page = () => $("#page");

function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
const fmtMs = (v) => (v === null || v === undefined ? "—" : v < 10 ? fmtNum(v, 2) + " ms" : fmtNum(v, 0) + " ms");
const fmtPct = (v) => (v === null || v === undefined ? "—" : fmtNum(v * 100, 1) + " %");
const fmtUsd = (v) => (v === null || v === undefined ? "—" : "$" + fmtNum(v, 4));
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "—");

function statusBadge(code) {
  const cls = code >= 500 ? "bad" : code >= 400 ? "warn" : "ok";
  return h("span", { class: "badge " + cls }, code);
}
function healthBadge(status) {
  const cls = status === "healthy" ? "ok" : status === "disabled" ? "" : status ? "warn" : "";
  return h("span", { class: "badge " + cls }, status || "unknown");
}

// ---------- API ----------
class AuthError extends Error {}

async function api(path, opts = {}) {
  const res = await fetch(path, {
    ...opts,
    headers: { Authorization: "Bearer " + adminKey, "Content-Type": "application/json", ...(opts.headers || {}) },
  });
  if (res.status === 401 || res.status === 403) throw new AuthError("the admin key was refused");
  if (res.status === 204) return null;
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = (body && body.error && body.error.message) || res.statusText;
    // The status and the whole answer go along: the editor shows problems by key path.
    const err = new Error(msg);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

function showError(where, err) {
  if (err instanceof AuthError) return signOut(err.message);
  if (err && err.name === "AbortError") return;
  where.replaceChildren(h("p", { class: "error", role: "alert" }, String(err && err.message ? err.message : err)));
}

// ---------- sign in / out ----------
function signOut(message) {
  adminKey = "";
  sessionStorage.removeItem(KEY_STORAGE);
  stopPage();
  $("#app-view").hidden = true;
  $("#signin-view").hidden = false;
  $("#signin-error").textContent = message || "";
  $("#admin-key").value = "";
  $("#admin-key").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const key = $("#admin-key").value.trim();
  if (!key) return;
  adminKey = key;
  try {
    await api("/admin/overview");
  } catch (e) {
    adminKey = "";
    $("#signin-error").textContent = e instanceof AuthError ? "That key is not an admin key." : String(e.message || e);
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $("#signin-view").hidden = true;
  $("#app-view").hidden = false;
  if (!location.hash) location.hash = "#/overview";
  else show();
}

// ---------- page switching ----------
function stopPage() {
  timers.forEach(clearInterval);
  timers = [];
  aborts.forEach((a) => a.abort());
  aborts = [];
}

function every(ms, fn) {
  fn();
  timers.push(setInterval(fn, ms));
}

const pages = { overview, providers, models, requests, sessions, keys, usage, config, routing, system, logs, edit };

function show() {
  if (!adminKey) return signOut();
  stopPage();
  const [, name, arg] = (location.hash || "#/overview").split("/");
  const render = pages[name] || overview;
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (pages[name] ? name : "overview")));
  const main = page();
  main.replaceChildren();
  delete main.dataset.ready;
  render(main, arg ? decodeURIComponent(arg) : undefined);
}

function ready(main, name) {
  main.dataset.ready = name;
}

// ---------- charts ----------
const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700"];

// `span` names the time the points cover (default: the overview's last minutes).
function chart(title, points, series, fmt, span) {
  const W = 360, H = 100;
  const all = series.flatMap((sr) => points.map((p) => sr.get(p) || 0));
  const top = Math.max(...all, 0);
  const max = top || 1;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
  svg.append(s("line", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: "axis" }));
  svg.append(s("line", { x1: 0, y1: 0.5, x2: W, y2: 0.5, class: "axis", "stroke-dasharray": "3 3" }));
  const n = Math.max(points.length - 1, 1);
  series.forEach((sr, i) => {
    const xy = points.map((p, j) => [(j / n) * W, H - ((sr.get(p) || 0) / max) * (H - 4) - 1]);
    const line = xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    if (i === 0) svg.append(s("polygon", { points: `0,${H} ${line} ${W},${H}`, class: "area", fill: COLORS[i] }));
    svg.append(s("polyline", { points: line, class: "line", stroke: COLORS[i] }));
  });
  // The legend shows the newest interval that had traffic.
  const busy = points.filter((p) => p.requests > 0);
  const newest = busy.length ? busy[busy.length - 1] : points[points.length - 1];
  const last = newest ? series.map((sr) => sr.get(newest)) : [];
  return h("div", { class: "card chart" },
    h("h3", {}, h("span", {}, title), h("span", { class: "muted" }, "max " + fmt(top))),
    svg,
    h("div", { class: "legend" },
      series.map((sr, i) => h("span", {}, h("span", { class: "sw", style: `background:${COLORS[i]}` }), sr.name + " ", fmt(last[i] || 0))),
      h("span", {}, span || (points.length >= 360 ? "last hour" : `last ${Math.round(points.length / 6)} min`))));
}

function stat(label, value) {
  return h("div", { class: "card stat" }, h("div", { class: "v" }, value), h("div", { class: "l" }, label));
}

// ---------- pages ----------
function overview(main) {
  const body = h("div");
  main.append(h("h2", {}, h("span", { class: "live" }), "Overview"), body);
  every(REFRESH_MS, async () => {
    try {
      const o = await api("/admin/overview");
      // The window starts at the first interval with traffic (at least the
      // last 5 minutes), so a fresh gateway's charts are not a sliver.
      const first = o.points.findIndex((p) => p.requests > 0);
      const pts = o.points.slice(Math.min(first < 0 ? o.points.length : first, o.points.length - 30));
      const recent = pts.slice(-6); // the last minute
      const lastMin = recent.reduce((a, p) => a + p.requests, 0);
      const hr = o.hour;
      body.replaceChildren(
        o.collecting ? "" : h("p", { class: "notice" }, "Collection is off (console.collect: false): charts stay empty."),
        h("div", { class: "stats" },
          stat("requests / s (last minute)", fmtNum(lastMin / 60, 2)),
          stat("requests (last hour)", fmtNum(hr.requests)),
          stat("error rate (5xx, hour)", fmtPct(hr.error_rate)),
          stat("latency p50 / p99", `${fmtMs(hr.p50_ms)} / ${fmtMs(hr.p99_ms)}`),
          stat("time to first token p50", fmtMs(hr.ttft_p50_ms)),
          stat("gateway overhead p50", fmtMs(hr.overhead_p50_ms)),
          stat("tokens in / out", `${fmtNum(hr.input_tokens)} / ${fmtNum(hr.output_tokens)}`),
          stat("cost (hour)", fmtUsd(hr.cost_usd)),
          stat("in flight", `${o.inflight_requests} (${o.inflight_streams} streams)`),
          stat("providers healthy", `${o.providers.healthy} / ${o.providers.total}`)),
        h("div", { class: "grid", id: "charts" },
          chart("Requests per second", pts, [{ name: "req/s", get: (p) => p.rps }], (v) => fmtNum(v, 2)),
          chart("Error rate", pts, [{ name: "5xx", get: (p) => p.error_rate }], fmtPct),
          chart("Latency", pts, [{ name: "p50", get: (p) => p.p50_ms }, { name: "p99", get: (p) => p.p99_ms }], fmtMs),
          chart("Time to first token", pts, [{ name: "p50", get: (p) => p.ttft_p50_ms }, { name: "p99", get: (p) => p.ttft_p99_ms }], fmtMs),
          chart("Gateway overhead", pts, [{ name: "p50", get: (p) => p.overhead_p50_ms }, { name: "p99", get: (p) => p.overhead_p99_ms }], fmtMs),
          chart("Tokens", pts, [{ name: "in", get: (p) => p.input_tokens }, { name: "out", get: (p) => p.output_tokens }], (v) => fmtNum(v)),
          chart("Cost", pts, [{ name: "USD", get: (p) => p.cost_usd }], fmtUsd)));
      body.dataset.requests = hr.requests;
      ready(main, "overview");
    } catch (e) {
      showError(body, e);
    }
  });
}

// Health fields routing may add (breaker, cooldowns, upstream limits) are shown as they come.
function healthDetails(hl) {
  const skip = new Set(["provider_id", "status"]);
  return h("dl", { class: "kv" }, Object.entries(hl || {}).filter(([k]) => !skip.has(k)).map(([k, v]) => [
    h("dt", {}, k.replaceAll("_", " ")),
    h("dd", { class: "mono" }, v === null ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v)),
  ]));
}

function providers(main) {
  const body = h("div");
  main.append(h("h2", {}, "Providers"), body);
  every(REFRESH_MS, async () => {
    try {
      const { providers } = await api("/admin/providers");
      body.replaceChildren(h("div", { class: "grid" }, providers.map((p) => h("div", { class: "card provider", dataset: { provider: p.id } },
        h("h2", {}, p.id, " ", healthBadge(p.status)),
        h("dl", { class: "kv" },
          h("dt", {}, "kind"), h("dd", {}, `${p.kind} (${p.wire_api})`),
          h("dt", {}, "base url"), h("dd", { class: "mono" }, p.base_url),
          h("dt", {}, "keys"), h("dd", { class: "mono keys" }, p.api_keys.length ? p.api_keys.join("  ") : "none"),
          h("dt", {}, "latency EWMA"), h("dd", {}, fmtMs(p.metrics.latency_ewma_ms)),
          h("dt", {}, "error rate"), h("dd", {}, fmtPct(p.metrics.error_rate)),
          h("dt", {}, "ok / failed"), h("dd", {}, `${fmtNum(p.metrics.successes)} / ${fmtNum(p.metrics.failures)}`),
          h("dt", {}, "models"), h("dd", {}, p.models === null ? "not listed yet" : fmtNum(p.models))),
        h("details", {}, h("summary", {}, "health"), healthDetails(p.health))))));
      ready(main, "providers");
    } catch (e) {
      showError(body, e);
    }
  });
}

function shareBar(v, cls) {
  return h("div", { class: "bar " + (cls || "") }, h("span", { style: `width:${Math.round((v || 0) * 100)}%` }));
}

function models(main) {
  const body = h("div");
  main.append(h("h2", {}, "Logical models"), body);
  every(REFRESH_MS, async () => {
    try {
      const m = await api("/admin/models");
      body.replaceChildren(
        h("p", { class: "muted" }, `Live share: requests each upstream served in the last ${m.window_seconds / 60} minutes (this replica).`),
        m.logical_models.length ? "" : h("p", {}, "No logical models are configured."),
        h("div", { class: "row" }, m.logical_models.map((lm) => h("div", { class: "card model", dataset: { model: lm.name } },
          h("h2", {}, lm.name, " ", h("span", { class: "muted" }, `${fmtNum(lm.requests)} requests`)),
          lm.description ? h("p", { class: "muted" }, lm.description) : "",
          h("div", { class: "table-wrap" }, h("table", {},
            h("thead", {}, h("tr", {}, ["upstream", "status", "weight", "configured", "live", "requests"].map((t) => h("th", {}, t)))),
            h("tbody", {}, lm.upstreams.map((u) => h("tr", {},
              h("td", { class: "mono" }, `${u.provider_id}/${u.model_id}`),
              h("td", {}, healthBadge(u.provider_status)),
              h("td", {}, fmtNum(u.weight, 2)),
              h("td", {}, shareBar(u.configured_share, "cfg"), fmtPct(u.configured_share)),
              h("td", { class: "live-share" }, shareBar(u.live_share), fmtPct(u.live_share)),
              h("td", {}, fmtNum(u.requests)))))))))));
      ready(main, "models");
    } catch (e) {
      showError(body, e);
    }
  });
}

function requestRow(r, onPick) {
  return h("tr", { class: "clickable", dataset: { id: r.id }, onclick: () => onPick(r.id) },
    h("td", {}, fmtTime(r.time)),
    h("td", {}, statusBadge(r.status)),
    h("td", {}, r.key || "—"),
    h("td", { class: "mono" }, r.model || "—"),
    h("td", { class: "mono" }, r.cache === "hit" ? "cache hit" : r.provider ? `${r.provider}/${r.upstream_model}` : "—"),
    h("td", {}, r.attempts),
    h("td", {}, fmtMs(r.duration_ms)),
    h("td", {}, `${r.input_tokens}/${r.output_tokens}`),
    h("td", {}, fmtUsd(r.cost_usd)));
}

function requests(main) {
  const form = h("form", { class: "filters", id: "filters" },
    h("input", { name: "key", placeholder: "key", "aria-label": "key" }),
    h("input", { name: "model", placeholder: "model", "aria-label": "model" }),
    h("input", { name: "provider", placeholder: "provider", "aria-label": "provider" }),
    h("select", { name: "status", "aria-label": "status" },
      ["", "2xx", "4xx", "5xx", "error"].map((v) => h("option", { value: v }, v || "any status"))),
    h("button", { type: "submit" }, "Apply"));
  const state = h("span", { class: "muted" }, h("span", { class: "live off" }), "connecting…");
  const tbody = h("tbody", { id: "tail" });
  const detail = h("div", { class: "card", id: "request-detail" }, h("p", { class: "muted" }, "Click a request to see its attempts, timings, tokens and cost."));
  const table = h("div", { class: "card table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, ["time", "status", "key", "model", "upstream", "attempts", "duration", "tokens in/out", "cost"].map((t) => h("th", {}, t)))),
    tbody));
  main.append(h("h2", {}, "Requests ", state), form, h("div", { class: "row" }, table, detail));

  async function pick(id) {
    tbody.querySelectorAll("tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === String(id)));
    try {
      const r = await api(`/admin/requests/${id}`);
      const rows = [
        ["id", r.id], ["time", new Date(r.time * 1000).toISOString()], ["status", r.status], ["key", r.key || "—"],
        ["client format", r.format], ["model", r.model], ["provider", r.provider || "—"], ["upstream model", r.upstream_model || "—"],
        ["attempts", r.attempts], ["stream", r.stream], ["duration", fmtMs(r.duration_ms)], ["time to first token", fmtMs(r.ttft_ms)],
        ["waiting on upstream", fmtMs(r.upstream_ms)], ["gateway overhead", fmtMs(r.overhead_ms)],
        ["tokens in / out", `${r.input_tokens} / ${r.output_tokens}`], ["cost", fmtUsd(r.cost_usd)],
        ["session", r.session || "—"], ["client left early", r.client_gone],
        ...(r.cache ? [["response cache", r.cache]] : []),
      ];
      const tries = r.attempt_detail || [];
      // replaceChildren takes nodes, not lists: flatten the optional parts.
      detail.replaceChildren(...[h("h2", {}, `Request ${r.id}`),
        h("dl", { class: "kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
        tries.length ? [h("h2", {}, "Attempts"), h("div", { class: "table-wrap" }, h("table", { id: "attempt-detail" },
          h("thead", {}, h("tr", {}, ["#", "upstream", "outcome", "status", "time"].map((t) => h("th", {}, t)))),
          h("tbody", {}, tries.map((a, i) => h("tr", {},
            h("td", {}, i + 1), h("td", { class: "mono" }, `${a.provider}/${a.model}`),
            h("td", {}, a.sent ? a.outcome : `${a.outcome} (not sent)`),
            h("td", {}, a.status ? statusBadge(a.status) : "—"),
            h("td", {}, a.sent ? fmtMs(a.ms) : "—"))))))] : "",
        r.body ? [h("h2", {}, "Body (redacted)"), h("pre", { class: "json" }, r.body)] : ""].flat(Infinity));
      detail.dataset.id = r.id;
    } catch (e) {
      showError(detail, e);
    }
  }

  function add(r, atTop) {
    const row = requestRow(r, pick);
    if (atTop) tbody.prepend(row);
    else tbody.append(row);
    while (tbody.children.length > MAX_TAIL_ROWS) tbody.lastChild.remove();
  }

  async function start() {
    aborts.forEach((a) => a.abort());
    aborts = [];
    const q = new URLSearchParams(new FormData(form));
    for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
    tbody.replaceChildren();
    const ctl = new AbortController();
    aborts.push(ctl);
    try {
      const list = await api(`/admin/requests?limit=100&${q}`);
      list.requests.forEach((r) => add(r, false));
      ready(main, "requests");
      const res = await fetch(`/admin/requests/tail?${q}`, { headers: { Authorization: "Bearer " + adminKey }, signal: ctl.signal });
      if (!res.ok) throw new Error("the live tail was refused: " + res.status);
      state.replaceChildren(h("span", { class: "live" }), "live");
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = ev.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (ev.includes("event: request") && data) add(JSON.parse(data), true);
        }
      }
      state.replaceChildren(h("span", { class: "live off" }), "tail closed");
    } catch (e) {
      if (e.name === "AbortError") return;
      state.replaceChildren(h("span", { class: "live off" }), "tail stopped");
      showError(detail, e);
    }
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    start();
  });
  start();
}

function sessions(main, arg) {
  const input = h("input", { name: "session", placeholder: "session id (X-Session-Id)", "aria-label": "session id", required: true });
  const form = h("form", { class: "filters", id: "session-form" }, input, h("button", { type: "submit" }, "Look up"));
  const body = h("div", { id: "session" });
  main.append(h("h2", {}, "Sessions"), form, body);
  async function look(id) {
    try {
      const r = await api(`/admin/sessions/${encodeURIComponent(id)}`);
      const b = r.binding;
      body.replaceChildren(h("div", { class: "row" },
        h("div", { class: "card" }, h("h2", {}, "Binding"), b ? h("dl", { class: "kv", id: "binding" },
          h("dt", {}, "session"), h("dd", {}, b.conversation_id),
          h("dt", {}, "model asked for"), h("dd", {}, b.logical_model),
          h("dt", {}, "bound to"), h("dd", { class: "mono" }, `${b.provider_id}/${b.model_id}`),
          h("dt", {}, "provider key #"), h("dd", {}, b.key_index),
          h("dt", {}, "created"), h("dd", {}, fmtTime(b.created_at)),
          h("dt", {}, "last used"), h("dd", {}, fmtTime(b.last_accessed)),
          h("dt", {}, "messages"), h("dd", {}, b.message_count),
          h("dt", {}, "owner key"), h("dd", {}, b.owner || "—")) : h("p", { class: "muted" }, "No live binding for this session.")),
        h("div", { class: "card" }, h("h2", {}, `Context (${r.context.history.length})`),
          r.context.owner ? h("p", { class: "muted" }, `owned by key ${r.context.owner}`) : "",
          h("pre", { class: "json" }, JSON.stringify(r.context.history, null, 2)))));
      ready(main, "sessions");
    } catch (e) {
      showError(body, e);
    }
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = "#/sessions/" + encodeURIComponent(input.value.trim());
  });
  if (arg) {
    input.value = arg;
    look(arg);
  } else ready(main, "sessions");
}

function numOrNull(v) {
  const t = String(v || "").trim();
  return t ? Number(t) : null;
}

function keys(main) {
  const notice = h("div", { id: "key-notice" });
  const err = h("p", { class: "error", role: "alert" });
  const create = h("form", { class: "card inline-form", id: "create-key" },
    h("div", {}, h("label", { for: "new-name" }, "Name"), h("input", { id: "new-name", name: "name", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}" })),
    h("div", {}, h("label", { for: "new-rpm" }, "rpm"), h("input", { id: "new-rpm", name: "rpm", type: "number", min: 1 })),
    h("div", {}, h("label", { for: "new-tpm" }, "tpm"), h("input", { id: "new-tpm", name: "tpm", type: "number", min: 1 })),
    h("div", {}, h("label", { for: "new-models" }, "models (comma-separated globs)"), h("input", { id: "new-models", name: "models", placeholder: "all" })),
    h("div", {}, h("label", { for: "new-budget" }, "budget USD"), h("input", { id: "new-budget", name: "budget_usd", type: "number", min: 0, step: "any", placeholder: "none" })),
    h("div", {}, h("label", { for: "new-period" }, "per"), h("select", { id: "new-period", name: "budget_period" }, h("option", { value: "day" }, "day"), h("option", { value: "month" }, "month"))),
    h("button", { type: "submit" }, "Create key"));
  const list = h("div", { class: "card table-wrap" });
  main.append(h("h2", {}, "Client keys"), notice, create, err, h("div", { style: "height:12px" }), list);

  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(create);
    const models = String(f.get("models") || "").split(",").map((x) => x.trim()).filter(Boolean);
    try {
      const k = await api("/admin/keys", {
        method: "POST",
        body: JSON.stringify({ name: f.get("name"), rpm: numOrNull(f.get("rpm")), tpm: numOrNull(f.get("tpm")), models: models.length ? models : null,
          budget_usd: numOrNull(f.get("budget_usd")), budget_period: f.get("budget_period") }),
      });
      notice.replaceChildren(h("div", { class: "notice" }, `Key “${k.name}” was created. Copy it now: it is not shown again. `,
        h("code", { id: "new-key" }, k.key)));
      create.reset();
      err.textContent = "";
      load();
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      err.textContent = e.message;
    }
  });

  async function change(name, tr) {
    const rpm = tr.querySelector("input[name=rpm]").value;
    const tpm = tr.querySelector("input[name=tpm]").value;
    const budget = tr.querySelector("input[name=budget_usd]").value;
    try {
      await api(`/admin/keys/${encodeURIComponent(name)}`, { method: "PATCH", body: JSON.stringify({ rpm: numOrNull(rpm), tpm: numOrNull(tpm), budget_usd: numOrNull(budget) }) });
      err.textContent = "";
      load();
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      err.textContent = e.message;
    }
  }

  async function revoke(name, btn) {
    if (btn.dataset.armed !== "yes") {
      btn.dataset.armed = "yes";
      btn.textContent = "Confirm revoke";
      return;
    }
    try {
      await api(`/admin/keys/${encodeURIComponent(name)}`, { method: "DELETE" });
      notice.replaceChildren(h("div", { class: "notice" }, `Key “${name}” was revoked.`));
      load();
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      err.textContent = e.message;
    }
  }

  async function load() {
    try {
      const r = await api("/admin/keys");
      list.replaceChildren(
        h("p", { class: "muted" }, `Made here: kept in the ${r.store} store; other replicas see changes within ${r.replica_refresh_seconds} s. Usage: ${r.usage_scope}.`),
        h("table", {},
          h("thead", {}, h("tr", {}, ["name", "source", "key", "rpm", "tpm", "budget USD", "models", "requests", "tokens", "cost", "rpm left", "tpm left", "budget left", ""].map((t) => h("th", {}, t)))),
          h("tbody", { id: "keys" }, r.keys.map((k) => {
            const editable = k.source === "console";
            const tr = h("tr", { dataset: { key: k.name } });
            tr.append(
              h("td", {}, k.name),
              h("td", {}, h("span", { class: "badge" }, k.source)),
              h("td", { class: "mono" }, k.last4 ? "…" + k.last4 : "—"),
              h("td", {}, editable ? h("input", { name: "rpm", type: "number", min: 1, value: k.rpm ?? "", placeholder: "∞", style: "width:80px", "aria-label": "rpm" }) : k.rpm ?? "∞"),
              h("td", {}, editable ? h("input", { name: "tpm", type: "number", min: 1, value: k.tpm ?? "", placeholder: "∞", style: "width:90px", "aria-label": "tpm" }) : k.tpm ?? "∞"),
              h("td", {}, editable ? h("input", { name: "budget_usd", type: "number", min: 0, step: "any", value: k.budget_usd ?? "", placeholder: "∞", style: "width:90px", "aria-label": "budget USD" })
                : k.budget ? `${fmtUsd(k.budget.limit_usd)}/${k.budget.period}` : "∞"),
              h("td", { class: "mono" }, k.models ? k.models.join(", ") : k.models_restricted ? "allow-list (config)" : "all"),
              h("td", {}, fmtNum(k.usage.requests)),
              h("td", {}, `${fmtNum(k.usage.input_tokens)}/${fmtNum(k.usage.output_tokens)}`),
              h("td", {}, fmtUsd(k.usage.cost_usd)),
              h("td", {}, k.remaining.rpm ?? "∞"),
              h("td", {}, k.remaining.tpm ?? "∞"),
              h("td", { class: "budget-left" }, k.budget ? `${fmtUsd(k.budget.remaining_usd)} (per ${k.budget.period})` : "∞"),
              h("td", {}, editable ? [
                h("button", { class: "secondary", type: "button", onclick: () => change(k.name, tr) }, "Save limits"), " ",
                h("button", { class: "danger revoke", type: "button", onclick: (ev) => revoke(k.name, ev.currentTarget) }, "Revoke"),
              ] : h("span", { class: "muted" }, "config file")));
            return tr;
          }))));
      ready(main, "keys");
    } catch (e) {
      showError(list, e);
    }
  }
  load();
}

// Usage: the store's daily counters (/admin/usage), shared by every replica on one Redis.
const USAGE_GROUPS = ["key", "model", "provider", "day"];
function usageDate(daysAgo) {
  return new Date(Date.now() - daysAgo * 86400000).toISOString().slice(0, 10);
}

function usage(main) {
  const from = h("input", { id: "usage-from", type: "date", "aria-label": "from", value: usageDate(29) });
  const to = h("input", { id: "usage-to", type: "date", "aria-label": "to", value: usageDate(0) });
  const group = h("select", { id: "usage-group", "aria-label": "group by" }, USAGE_GROUPS.map((g) => h("option", { value: g }, "by " + g)));
  const csv = h("button", { id: "usage-csv", type: "button" }, "Download CSV");
  const body = h("div");
  main.append(h("h2", {}, "Usage ", h("span", { class: "muted" }, "(per UTC day, every replica on the store)")),
    h("div", { class: "filters" }, from, to, group, csv), body);
  const query = (g) => `from=${encodeURIComponent(from.value)}&to=${encodeURIComponent(to.value)}&group_by=${g}`;
  async function load() {
    try {
      // The chart is always per day; the table is grouped as picked.
      const [days, table] = await Promise.all([
        api(`/admin/usage?${query("day")}`),
        group.value === "day" ? null : api(`/admin/usage?${query(group.value)}`),
      ]);
      const t = days.totals;
      const rows = (table || days).rows;
      const g = group.value;
      const pts = days.rows;
      const span = `${days.from} – ${days.to}`;
      body.replaceChildren(
        h("div", { class: "stats" },
          stat("requests", fmtNum(t.requests)),
          stat("tokens in / out", `${fmtNum(t.input_tokens)} / ${fmtNum(t.output_tokens)}`),
          stat("cached input tokens", fmtNum(t.cached_input_tokens)),
          stat("cost", fmtUsd(t.cost_usd))),
        h("div", { class: "grid", id: "usage-charts" },
          chart("Requests per day", pts, [{ name: "requests", get: (p) => p.requests }], (v) => fmtNum(v), span),
          chart("Tokens per day", pts, [{ name: "in", get: (p) => p.input_tokens }, { name: "out", get: (p) => p.output_tokens }], (v) => fmtNum(v), span),
          chart("Cost per day", pts, [{ name: "USD", get: (p) => p.cost_usd }], fmtUsd, span)),
        h("div", { class: "card table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, [g, "requests", "input tokens", "output tokens", "cached input", "cost"].map((c) => h("th", {}, c)))),
          h("tbody", { id: "usage-rows" }, rows.map((r) => h("tr", { dataset: { group: r[g] } },
            h("td", { class: "mono", title: r.key_id || null }, r[g]),
            h("td", {}, fmtNum(r.requests)),
            h("td", {}, fmtNum(r.input_tokens)),
            h("td", {}, fmtNum(r.output_tokens)),
            h("td", {}, fmtNum(r.cached_input_tokens)),
            h("td", {}, fmtUsd(r.cost_usd))))))));
      body.dataset.requests = t.requests;
      ready(main, "usage");
    } catch (e) {
      showError(body, e);
    }
  }
  // A plain link cannot carry the admin key: fetched with it, then saved from memory.
  csv.addEventListener("click", async () => {
    try {
      const res = await fetch(`/admin/usage?${query(group.value)}&format=csv`, { headers: { Authorization: "Bearer " + adminKey } });
      if (res.status === 401 || res.status === 403) throw new AuthError("the admin key was refused");
      if (!res.ok) {
        const b = await res.json().catch(() => null);
        throw new Error((b && b.error && b.error.message) || res.statusText);
      }
      const name = (/filename="([^"]+)"/.exec(res.headers.get("content-disposition") || "") || [])[1] || "usage.csv";
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: name, id: "usage-csv-link" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      csv.dataset.downloaded = name;
    } catch (e) {
      showError(body, e);
    }
  });
  [from, to, group].forEach((el) => el.addEventListener("change", load));
  load();
  timers.push(setInterval(load, REFRESH_MS * 6));
}

function config(main) {
  const body = h("div");
  main.append(h("h2", {}, "Effective configuration ", h("span", { class: "muted" }, "(secrets left out or masked)")), body);
  (async () => {
    try {
      const c = await api("/admin/config");
      body.replaceChildren(h("pre", { class: "json", id: "config-json" }, JSON.stringify(c, null, 2)));
      ready(main, "config");
    } catch (e) {
      showError(body, e);
    }
  })();
}

const fmtClock = (ms) => (ms ? new Date(ms).toLocaleString("en-GB") : "—");
function fmtUptime(secs) {
  const d = Math.floor(secs / 86400), hr = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
  return (d ? d + "d " : "") + (d || hr ? hr + "h " : "") + m + "m " + (secs % 60) + "s";
}
// Time left until `untilMs`, against the server's clock (`nowMs`).
const fmtLeft = (untilMs, nowMs) => (untilMs ? fmtNum(Math.max(0, (untilMs - nowMs) / 1000), 1) + " s left" : "—");

function reloadSummary(r) {
  if (!r) return h("span", { class: "muted" }, "none since start");
  return h("span", { id: "last-reload", dataset: { result: r.result, number: r.number } },
    h("span", { class: "badge " + (r.result === "ok" ? "ok" : "bad") }, r.result), " ",
    fmtClock(r.at_ms), ` (#${r.number}, ${r.trigger})`,
    r.problems.length ? h("ul", { class: "problems" }, r.problems.map((p) => h("li", { class: "mono" }, p))) : "");
}

function system(main) {
  const info = h("div");
  const result = h("div", { id: "reload-result", role: "status" });
  const button = h("button", { id: "reload-button", type: "button" }, "Reload config");
  main.append(h("h2", {}, "System"), info,
    h("div", { class: "card reload" },
      h("h2", {}, "Reload"),
      h("p", { class: "muted" }, "Re-reads the config file (and the TLS certificates) as ", h("code", {}, "apiproxy reload"),
        " does; a file that fails the check is refused and the running config stays."),
      button, result));
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.replaceChildren(h("p", { class: "muted" }, "Reloading…"));
    try {
      const r = await api("/admin/reload", { method: "POST" });
      result.replaceChildren(h("p", { class: "notice", dataset: { result: "ok" } }, `Reloaded (#${r.reload.number}): the new config is in force.`));
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      result.replaceChildren(h("p", { class: "error", role: "alert", dataset: { result: "refused" } }, e.message));
    } finally {
      button.disabled = false;
      load();
    }
  });
  async function load() {
    try {
      const s = await api("/admin/system");
      info.replaceChildren(h("div", { class: "card" }, h("dl", { class: "kv", id: "system-info" },
        h("dt", {}, "version"), h("dd", { id: "sys-version" }, s.version),
        h("dt", {}, "pid"), h("dd", {}, s.pid),
        h("dt", {}, "uptime"), h("dd", { id: "sys-uptime" }, fmtUptime(s.uptime_seconds), h("span", { class: "muted" }, " since " + fmtClock(s.started_at_ms))),
        h("dt", {}, "config"), h("dd", { class: "mono", id: "sys-config" }, s.config_file || s.config_source),
        h("dt", {}, "watch config"), h("dd", {}, s.watch_config ? "yes" : "no"),
        h("dt", {}, "listening"), h("dd", {}, h("ul", { class: "plain", id: "sys-listen" }, s.listening.map((l) => h("li", {}, h("code", {}, l.address), " ", h("span", { class: "muted" }, l.serves))))),
        h("dt", {}, "last reload"), h("dd", {}, reloadSummary(s.last_reload)),
        h("dt", {}, "log level"), h("dd", { class: "mono" }, s.log.level))));
      ready(main, "system");
    } catch (e) {
      showError(info, e);
    }
  }
  load();
  timers.push(setInterval(load, REFRESH_MS));
}

function logs(main) {
  const level = h("select", { id: "log-level", "aria-label": "level" }, h("option", { value: "warn" }, "warn and error"), h("option", { value: "error" }, "error only"));
  const limit = h("select", { id: "log-limit", "aria-label": "lines" }, [100, 200, 500].map((n) => h("option", { value: n }, n + " lines")));
  const body = h("div", { class: "card table-wrap" });
  main.append(h("h2", {}, "App log ", h("span", { class: "muted" }, "(this process's warn and error lines, newest first)")),
    h("div", { class: "filters" }, level, limit), body);
  async function load() {
    try {
      const r = await api(`/admin/logs?level=${level.value}&limit=${limit.value}`);
      body.replaceChildren(
        h("p", { class: "muted" }, `Kept in memory: ${r.kept.lines} lines, ${fmtNum(r.kept.bytes / 1024, 1)} KiB (at most ${r.bounds.lines} lines, ${r.bounds.bytes / 1024} KiB).`),
        r.lines.length ? h("table", {},
          h("thead", {}, h("tr", {}, ["time", "level", "target", "message"].map((t) => h("th", {}, t)))),
          h("tbody", { id: "app-log" }, r.lines.map((l) => h("tr", { dataset: { seq: l.seq, level: l.level } },
            h("td", {}, fmtClock(l.time_ms)),
            h("td", {}, h("span", { class: "badge " + (l.level === "ERROR" ? "bad" : "warn") }, l.level)),
            h("td", { class: "mono" }, l.target),
            h("td", { class: "mono log-msg" }, l.message)))))
          : h("p", { id: "app-log-empty" }, "No warn or error lines since start."));
      ready(main, "logs");
    } catch (e) {
      showError(body, e);
    }
  }
  level.addEventListener("change", load);
  limit.addEventListener("change", load);
  load();
  timers.push(setInterval(load, REFRESH_MS));
}

function routing(main) {
  const body = h("div");
  main.append(h("h2", {}, "Routing"), body);
  every(REFRESH_MS, async () => {
    try {
      const r = await api("/admin/routing");
      const now = r.now_ms;
      body.replaceChildren(
        h("div", { class: "row" },
          h("div", { class: "card" }, h("h2", {}, "Scoring"), h("dl", { class: "kv" },
            h("dt", {}, "mode"), h("dd", { id: "scoring-mode" }, r.scoring.mode),
            h("dt", {}, "window"), h("dd", {}, r.scoring.window_seconds + " s"),
            h("dt", {}, "max attempts"), h("dd", {}, r.max_attempts),
            h("dt", {}, "retry rounds"), h("dd", {}, r.retry_rounds),
            h("dt", {}, "hedge budget"), h("dd", {}, r.hedge_budget_percent + " %"))),
          h("div", { class: "card" }, h("h2", {}, "Breaker"), h("dl", { class: "kv" },
            h("dt", {}, "opens after"), h("dd", {}, `${r.breaker.consecutive_failures} failures in a row, or error rate ${fmtPct(r.breaker.error_rate)} over ${r.breaker.min_requests}+ requests`),
            h("dt", {}, "open for"), h("dd", {}, `${r.breaker.open_seconds} s (up to ${r.breaker.max_open_seconds} s)`))),
          h("div", { class: "card" }, h("h2", {}, "Key cooldowns"), h("dl", { class: "kv" },
            h("dt", {}, "rate limited"), h("dd", {}, r.cooldowns.rate_limited_seconds + " s"),
            h("dt", {}, "server error"), h("dd", {}, r.cooldowns.server_error_seconds + " s"),
            h("dt", {}, "network"), h("dd", {}, r.cooldowns.network_seconds + " s"),
            h("dt", {}, "refused key"), h("dd", {}, r.cooldowns.refused_seconds + " s"),
            h("dt", {}, "at most"), h("dd", {}, r.cooldowns.max_seconds + " s")))),
        h("div", { class: "grid routing-providers" }, r.providers.map((p) => h("div", { class: "card", dataset: { provider: p.provider_id } },
          h("h2", {}, p.provider_id, " ", healthBadge(p.status)),
          h("p", { class: "muted" }, `key strategy ${p.key_strategy} · weight ${p.weight} · `,
            h("span", { class: "open-count" }, `${p.breakers_not_closed} breaker(s) not closed`), ` · ${p.keys_cooling_down} key(s) cooling down`),
          p.models.length ? h("div", { class: "table-wrap" }, h("table", {},
            h("thead", {}, h("tr", {}, ["model", "breaker", "open until", "failures in a row", "error rate"].map((t) => h("th", {}, t)))),
            h("tbody", {}, p.models.map((m) => h("tr", { dataset: { model: m.model, breaker: m.breaker } },
              h("td", { class: "mono" }, m.model),
              h("td", {}, h("span", { class: "badge " + (m.breaker === "closed" ? "ok" : m.breaker === "open" ? "bad" : "warn") }, m.breaker)),
              h("td", {}, fmtLeft(m.open_until_ms, now)),
              h("td", {}, m.consecutive_failures),
              h("td", {}, fmtPct(m.error_rate)))))))
            : h("p", { class: "muted" }, "No model has been tried yet."),
          h("div", { class: "table-wrap" }, h("table", {},
            h("thead", {}, h("tr", {}, ["key", "available", "cooldown", "cause", "strikes"].map((t) => h("th", {}, t)))),
            h("tbody", {}, p.keys.map((k) => h("tr", { dataset: { key: k.index } },
              h("td", {}, "#" + k.index),
              h("td", {}, k.available ? "yes" : "no"),
              h("td", {}, fmtLeft(k.cooldown_until_ms, now)),
              h("td", {}, k.cause || "—"),
              h("td", {}, k.strikes))))))))));
      ready(main, "routing");
    } catch (e) {
      showError(body, e);
    }
  });
}

// The providers and logical models of a config file's text, each as its
// lines [start, end) in the file: the items of the top-level block lists
// `providers:` and `models:` (a flow list `[...]` has none: edit the file).
// Found in the text, not a parsed tree, so comments and layout stay as written.
function configItems(text) {
  const lines = text.split("\n");
  const items = [];
  for (const [key, kind, field] of [["providers", "provider", "id"], ["models", "logical model", "name"]]) {
    const start = lines.findIndex((l) => new RegExp(`^${key}:\\s*(#.*)?$`).test(l));
    if (start < 0) continue;
    let end = start + 1;
    while (end < lines.length && !/^[^\s#-]/.test(lines[end])) end++;
    let indent = null;
    const starts = [];
    for (let i = start + 1; i < end; i++) {
      const m = /^(\s*)-(\s|$)/.exec(lines[i]);
      if (!m) continue;
      if (indent === null) indent = m[1].length;
      if (m[1].length === indent) starts.push(i);
    }
    starts.forEach((from, j) => {
      let to = j + 1 < starts.length ? starts[j + 1] : end;
      while (to > from + 1 && /^\s*(#.*)?$/.test(lines[to - 1])) to--;
      const block = lines.slice(from, to).join("\n");
      const m = new RegExp(`\\b${field}:\\s*["']?([^"',}\\s#]+)`).exec(block);
      items.push({ kind, name: m ? m[1] : `#${j}`, from, to, block });
    });
  }
  return items;
}

// `text` with the lines of `item` replaced by `block`.
function spliceItem(text, item, block) {
  const lines = text.split("\n");
  lines.splice(item.from, item.to - item.from, ...block.split("\n"));
  return lines.join("\n");
}

function edit(main) {
  const body = h("div");
  main.append(h("h2", {}, "Edit the config file"), body);
  let version = null;
  const text = h("textarea", { id: "config-text", spellcheck: "false", rows: 28, "aria-describedby": "config-help config-problems" });
  const status = h("div", { id: "config-status", role: "status" });
  const problems = h("div", { id: "config-problems", role: "alert" });
  const save = h("button", { id: "save-config", type: "button" }, "Check, save and reload");
  const reread = h("button", { id: "load-config", type: "button", class: "secondary" }, "Load from disk");
  // One provider or logical model at a time: its lines spliced into the
  // file's text, which is then saved (and checked) as a whole.
  const itemPick = h("select", { id: "item-pick" });
  const itemText = h("textarea", { id: "item-text", spellcheck: "false", rows: 10, "aria-describedby": "item-help config-problems" });
  const itemSave = h("button", { id: "save-item", type: "button" }, "Save this item");
  const itemCard = h("div", { class: "card item-editor" },
    h("h2", {}, "One provider or logical model"),
    h("p", { class: "muted", id: "item-help" }, "Its lines of the file, as written. Saving puts them back in the file above and saves the file (checked the same way)."),
    h("label", { for: "item-pick" }, "Item"), itemPick,
    h("label", { for: "item-text" }, "YAML"), itemText,
    h("div", { class: "actions" }, itemSave));
  let picked = null;
  function listItems() {
    const items = configItems(text.value);
    const keep = picked && items.find((i) => i.kind === picked.kind && i.name === picked.name);
    itemPick.replaceChildren(h("option", { value: "" }, items.length ? "choose…" : "none found (edit the file above)"),
      ...items.map((i, n) => h("option", { value: n, selected: keep && i.kind === keep.kind && i.name === keep.name }, `${i.kind} ${i.name}`)));
    picked = keep || null;
    itemText.value = picked ? picked.block : "";
    itemSave.disabled = !picked;
  }
  itemPick.addEventListener("change", () => {
    const items = configItems(text.value);
    picked = itemPick.value === "" ? null : items[Number(itemPick.value)];
    itemText.value = picked ? picked.block : "";
    itemSave.disabled = !picked;
  });
  itemSave.addEventListener("click", () => {
    // Found again in the text as it is now (it may have been edited above).
    const now = picked && configItems(text.value).find((i) => i.kind === picked.kind && i.name === picked.name);
    if (!now) {
      problems.replaceChildren(h("p", { class: "error" }, "That item is no longer in the text above: choose it again."));
      return listItems();
    }
    text.value = spliceItem(text.value, now, itemText.value.replace(/\n+$/, ""));
    // Followed by its place: a renamed item stays picked.
    picked = configItems(text.value).find((i) => i.kind === now.kind && i.from === now.from) || null;
    save.click();
  });
  async function load() {
    try {
      const f = await api("/admin/config/file");
      if (!f.editable) {
        body.replaceChildren(h("p", { class: "notice", id: "config-file-none" }, f.reason));
        ready(main, "edit");
        return;
      }
      version = f.version;
      text.value = f.text;
      problems.replaceChildren();
      if (!text.isConnected) {
        body.replaceChildren(
          h("p", { class: "muted", id: "config-help" }, "The file ", h("code", { id: "config-path" }, f.file),
            " as written (", h("code", {}, "${VAR}"), " references are not expanded). Saving checks it as ", h("code", {}, "apiproxy -t"),
            " does, writes it in one step (the previous file kept as ", h("code", {}, f.backup), ") and reloads it."),
          h("label", { for: "config-text" }, "YAML"), text, problems,
          h("div", { class: "actions" }, save, " ", reread), status, itemCard);
      }
      listItems();
      ready(main, "edit");
    } catch (e) {
      showError(body, e);
    }
  }
  save.addEventListener("click", async () => {
    save.disabled = true;
    status.replaceChildren(h("p", { class: "muted" }, "Checking…"));
    problems.replaceChildren();
    try {
      const r = await api("/admin/config/file", { method: "PUT", body: JSON.stringify({ text: text.value, version }) });
      version = r.version;
      // The saved item stays picked.
      if (picked) picked = configItems(text.value).find((i) => i.kind === picked.kind && i.name === picked.name) || null;
      listItems();
      status.replaceChildren(h("p", { class: "notice", dataset: { result: "saved" } }, `Saved and reloaded (#${r.reload.number}); the previous file is ${r.backup}.`),
        r.warnings.length ? h("ul", { class: "warnings", id: "config-warnings" }, r.warnings.map((w) => h("li", {}, "warning: " + w))) : "");
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      status.replaceChildren();
      const list = e.body && e.body.problems;
      if (list && list.length) {
        problems.replaceChildren(h("p", { class: "error" }, "Not saved: the file has problems (nothing was written)."),
          h("ul", { class: "problems" }, list.map((p) => h("li", { dataset: { path: p.path || "" } },
            p.path ? [h("code", {}, p.path), ": "] : "", p.message))));
      } else if (e.status === 409) {
        problems.replaceChildren(h("p", { class: "error", dataset: { result: "stale" } }, e.message, " ",
          h("button", { type: "button", class: "secondary", onclick: load }, "Load the current file")));
      } else {
        problems.replaceChildren(h("p", { class: "error" }, e.message));
      }
    } finally {
      save.disabled = false;
    }
  });
  reread.addEventListener("click", load);
  load();
}

// ---------- start ----------
document.addEventListener("DOMContentLoaded", () => {
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", show);
  if (adminKey) {
    $("#app-view").hidden = false;
    show();
  } else {
    signOut();
  }
});
