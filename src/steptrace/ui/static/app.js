// steptrace UI: plain JS, no build step. Every value from the store reaches the DOM
// through textContent (el(...) below), never as markup.
"use strict";

const API = "/api/v1";
const main = () => document.getElementById("main");
let refreshTimer = null;

// --- DOM helpers ----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v; // CSSOM: allowed by the page's CSP
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

async function api(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => x !== "" && qs.append(k, x));
    else if (v !== null && v !== undefined && v !== "") qs.append(k, v);
  }
  const url = API + path + (qs.toString() ? "?" + qs : "");
  const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({}));
  // Every error is {"error": {"code": "...", "message": "..."}}.
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

function go(path) { history.pushState(null, "", path); route(); }

function link(href, text, cls) {
  return el("a", { href, class: cls, onclick: (e) => {
    e.stopPropagation(); // a link inside a clickable row navigates once
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault(); go(href);
  } }, text);
}

const fmt = {
  ms(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return (v * 1000).toFixed(0) + " µs";
    if (v < 1000) return v.toFixed(v < 10 ? 2 : 1) + " ms";
    if (v < 60000) return (v / 1000).toFixed(2) + " s";
    return (v / 60000).toFixed(1) + " min";
  },
  num(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"); },
  cost(v) {
    if (v === null || v === undefined) return "–";
    return "$" + (v < 0.01 ? v.toFixed(5) : v.toFixed(4));
  },
  pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%"; },
  time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  },
  ago(iso) {
    const s = (Date.now() - new Date(iso).getTime()) / 1000;
    if (s < 60) return Math.max(0, Math.round(s)) + "s ago";
    if (s < 3600) return Math.round(s / 60) + "m ago";
    if (s < 86400) return Math.round(s / 3600) + "h ago";
    return Math.round(s / 86400) + "d ago";
  },
  short(id) { return String(id).slice(0, 8); },
  value(v) { return typeof v === "string" ? v : JSON.stringify(v); },
};

function status(s) { return el("span", { class: "st " + s, text: s }); }
function badge(kind, cls) { return el("span", { class: "badge " + (cls || kind), text: kind }); }

async function copyText(text, button) {
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else {
      const ta = el("textarea", { style: "position:fixed;left:-9999px" });
      ta.value = text; document.body.append(ta); ta.select(); document.execCommand("copy"); ta.remove();
    }
    if (button) { const t = button.textContent; button.textContent = "copied"; setTimeout(() => (button.textContent = t), 900); }
  } catch (e) { if (button) button.textContent = "copy failed"; }
}

// --- JSON viewer ----------------------------------------------------------------------

function jsonNode(value, key, depth) {
  const label = key === undefined ? null : el("span", { class: "k", text: JSON.stringify(key) + ": " });
  if (value !== null && typeof value === "object") {
    const isArr = Array.isArray(value);
    const entries = isArr ? value.map((v, i) => [i, v]) : Object.entries(value);
    const summary = isArr ? `[${entries.length}]` : `{${entries.length}}`;
    if (entries.length === 0) return el("div", {}, label, el("span", { class: "sum", text: isArr ? "[]" : "{}" }));
    const det = el("details", { open: depth < 2 },
      el("summary", {}, label, el("span", { class: "sum", text: summary })));
    let filled = false;
    const fill = () => {
      if (filled) return; filled = true;
      const kids = el("div", { class: "kids" });
      for (const [k, v] of entries) kids.append(jsonNode(v, isArr ? undefined : k, depth + 1));
      det.append(kids);
    };
    if (depth < 2) fill(); else det.addEventListener("toggle", fill, { once: true });
    return det;
  }
  let cls = "z", text = "null";
  if (typeof value === "string") { cls = "s"; text = JSON.stringify(value).length > 200 || value.includes("\n") ? value : JSON.stringify(value); }
  else if (typeof value === "number") { cls = "n"; text = String(value); }
  else if (typeof value === "boolean") { cls = "b"; text = String(value); }
  return el("div", {}, label, el("span", { class: cls, text }));
}

function jsonView(value) { return el("div", { class: "json" }, jsonNode(value, undefined, 0)); }

function section(title, body, copyValue) {
  const head = el("div", { class: "sh" }, el("h2", { text: title }));
  if (copyValue !== undefined) {
    const b = el("button", { class: "copy", title: "copy as JSON" }, "copy");
    b.addEventListener("click", () => copyText(typeof copyValue === "string" ? copyValue : JSON.stringify(copyValue, null, 2), b));
    head.append(b);
  }
  return el("div", { class: "section", "data-section": title }, head, body);
}

// --- runs page ------------------------------------------------------------------------

const PAGE = 50;

async function runsPage() {
  const q = new URLSearchParams(location.search);
  const root = clear(main());
  const wfList = el("datalist", { id: "workflows" });
  const f = {
    workflow: el("input", { name: "workflow", list: "workflows", class: "w-m", placeholder: "any", value: q.get("workflow") || "" }),
    status: el("select", { name: "status" }, ["", "succeeded", "failed", "running", "interrupted"].map((s) =>
      el("option", { value: s, selected: (q.get("status") || "") === s }, s || "any"))),
    since: el("input", { name: "since", class: "w-s", placeholder: "24h / ISO", value: q.get("since") || "" }),
    until: el("input", { name: "until", class: "w-s", placeholder: "ISO", value: q.get("until") || "" }),
    tag: el("input", { name: "tag", class: "w-s", placeholder: "tag", value: q.getAll("tag").join(",") }),
    session: el("input", { name: "session", class: "w-m", placeholder: "session id", value: q.get("session") || "" }),
    where: el("input", { name: "where", class: "w-where", placeholder: "classify.output.category = billing; classify.attempts > 1",
      value: q.getAll("where").join("; ") }),
  };
  const offset = Math.max(0, parseInt(q.get("offset") || "0", 10) || 0);
  const form = el("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const k of ["workflow", "status", "since", "until"]) if (f[k].value.trim()) p.set(k, f[k].value.trim());
    if (f.session.value) p.set("session", f.session.value); // an id is exact: spaces kept
    f.tag.value.split(",").map((s) => s.trim()).filter(Boolean).forEach((t) => p.append("tag", t));
    f.where.value.split(";").map((s) => s.trim()).filter(Boolean).forEach((w) => p.append("where", w));
    go(withScoreColumns(p, scoreColumnNames(q))); // scores.js
  } },
  el("label", {}, "workflow", f.workflow), el("label", {}, "status", f.status),
  el("label", {}, "since", f.since), el("label", {}, "until", f.until), el("label", {}, "tag", f.tag),
  el("label", {}, "session", f.session),
  el("label", {}, "where (step predicates, ; between)", f.where),
  el("button", { class: "primary", type: "submit" }, "Filter"),
  el("button", { type: "button", onclick: () => go(withScoreColumns(new URLSearchParams(), scoreColumnNames(q))) }, "Reset"),
  scoreColumnPicker(q), wfList);
  const errBox = el("div", { class: "err", id: "runs-error" });
  const picked = [];
  const diffBtn = el("button", { disabled: true, id: "diff-picked", onclick: () => go(`/diff?a=${picked[0]}&b=${picked[1]}`) }, "Diff selected (0/2)");
  const info = el("span", { class: "muted", id: "runs-info" });
  const tbody = el("tbody");
  const table = el("table", { class: "grid", id: "runs" },
    el("thead", {}, el("tr", {}, el("th", { text: "" }), el("th", { text: "status" }), el("th", { text: "run" }),
      el("th", { text: "workflow" }), el("th", { text: "started" }), el("th", { class: "num", text: "duration" }),
      el("th", { class: "num", text: "steps" }), el("th", { class: "num", text: "attempts" }),
      el("th", { class: "num", text: "tokens" }), el("th", { class: "num", text: "cost" }), scoreColumnHeads(q), el("th", { text: "error" }))),
    tbody);
  const prev = el("button", { disabled: offset === 0, onclick: () => { q.set("offset", String(Math.max(0, offset - PAGE))); go("/?" + q); } }, "← Newer");
  const next = el("button", { disabled: true, onclick: () => { q.set("offset", String(offset + PAGE)); go("/?" + q); } }, "Older →");
  root.append(el("div", { class: "bar-row" }, el("h1", { text: "Runs" }), el("span", {}, info, " ", diffBtn)), form, errBox, table,
    el("div", { class: "pager" }, prev, next, el("span", { class: "muted", text: offset ? `from #${offset + 1}` : "" })));
  api("/workflows").then((ws) => ws.forEach((w) => wfList.append(el("option", { value: w })))).catch(() => {});

  async function load() {
    let data;
    try {
      data = await api("/runs", { workflow: q.get("workflow"), status: q.get("status"), since: q.get("since"),
        until: q.get("until"), tag: q.getAll("tag"), where: q.getAll("where"), session: q.get("session"), limit: PAGE, offset });
    } catch (e) { errBox.textContent = "error: " + e.message; return; }
    errBox.textContent = "";
    clear(tbody);
    if (!data.runs.length) tbody.append(el("tr", {}, el("td", { colspan: 11 + scoreColumnNames(q).length, class: "muted", text: "No runs match." })));
    for (const r of data.runs) {
      const t = r.totals;
      const box = el("input", { type: "checkbox", title: "pick for diff", checked: picked.includes(r.run_id) });
      box.addEventListener("click", (e) => e.stopPropagation());
      box.addEventListener("change", () => {
        const i = picked.indexOf(r.run_id);
        if (box.checked && i < 0) picked.push(r.run_id); else if (!box.checked && i >= 0) picked.splice(i, 1);
        while (picked.length > 2) picked.shift();
        tbody.querySelectorAll("input[type=checkbox]").forEach((b) => { b.checked = picked.includes(b.closest("tr").dataset.run); });
        diffBtn.disabled = picked.length !== 2; diffBtn.textContent = `Diff selected (${picked.length}/2)`;
      });
      const retries = t.attempts - t.steps;
      const err = r.error ? `${r.error.type || "error"}: ${String(r.error.message || "").split("\n")[0]}` : "";
      tbody.append(el("tr", { class: "link", "data-run": r.run_id, "data-status": r.status, onclick: () => go("/runs/" + r.run_id) },
        el("td", {}, box), el("td", {}, status(r.status)),
        el("td", { class: "mono" }, link("/runs/" + r.run_id, fmt.short(r.run_id))),
        el("td", { text: r.workflow }),
        el("td", { title: r.started_at }, fmt.time(r.started_at), " ", el("span", { class: "muted", text: fmt.ago(r.started_at) })),
        el("td", { class: "num", text: fmt.ms(r.duration_ms) }),
        el("td", { class: "num", text: t.steps }),
        el("td", { class: "num" }, el("span", { class: retries > 0 ? "retry" : "", title: retries > 0 ? `${retries} retries` : null, text: t.attempts })),
        el("td", { class: "num", text: t.input_tokens === null ? "–" : fmt.num((t.input_tokens || 0) + (t.output_tokens || 0)) }),
        el("td", { class: "num", text: fmt.cost(t.cost_usd) }), scoreColumnCells(q),
        el("td", { class: "muted clip", title: err, text: err.slice(0, 200) })));
    }
    await fillScoreColumns(tbody, data.runs.map((r) => r.run_id), q);
    next.disabled = !data.has_more;
    info.textContent = `${data.runs.length} run${data.runs.length === 1 ? "" : "s"} shown`;
    clearTimeout(refreshTimer);
    if (data.runs.some((r) => r.status === "running")) {
      info.textContent += " · refreshing while runs are running";
      refreshTimer = setTimeout(() => { if (document.body.contains(table)) load(); }, 2000);
    }
  }
  await load();
}

// --- run page -------------------------------------------------------------------------

async function runPage(runId) {
  const root = clear(main());
  let run;
  try { run = await api("/runs/" + encodeURIComponent(runId)); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const t = run.totals;
  const retries = t.attempts - t.steps;
  const head = el("div", { class: "runhead" },
    el("h1", {}, run.workflow, " ", el("span", { class: "mono muted", text: run.run_id })),
    status(run.status),
    el("div", { class: "facts" },
      el("span", {}, "started ", el("b", { text: fmt.time(run.started_at) })),
      el("span", {}, "duration ", el("b", { text: fmt.ms(run.duration_ms) })),
      el("span", {}, "steps ", el("b", { text: t.steps })),
      el("span", {}, "attempts ", el("b", { class: retries ? "retry" : "", text: t.attempts })),
      el("span", {}, "LLM calls ", el("b", { text: t.llm_calls })),
      el("span", {}, "tokens ", el("b", { text: t.input_tokens === null ? "–" : `${fmt.num(t.input_tokens)} in / ${fmt.num(t.output_tokens)} out` })),
      el("span", {}, "cost ", el("b", { text: fmt.cost(t.cost_usd) })),
      el("span", {}, "trace ", el("b", { class: "mono", text: run.trace_id }))),
    el("div", { class: "actions" },
      run.trace_link ? el("a", { href: run.trace_link, target: "_blank", rel: "noopener noreferrer", id: "trace-link" }, "Open trace ↗") : null,
      link("/compare/" + run.run_id, "Compare with baseline"),
      el("button", { id: "diff-previous", title: "the run of this workflow that started before this one", onclick: async (e) => {
        try {
          const prev = await api("/runs", { workflow: run.workflow, until: run.started_at, limit: 1 });
          if (prev.runs.length) go(`/diff?a=${prev.runs[0].run_id}&b=${run.run_id}`);
          else e.target.textContent = "no earlier run";
        } catch (err) { e.target.textContent = "error: " + err.message; }
      } }, "Diff with previous"),
      el("button", { onclick: () => go(`/diff?b=${run.run_id}`) }, "Diff with…")));
  if (run.error) head.append(el("div", { class: "errbox", style: "flex-basis:100%" },
    el("span", { class: "et", text: run.error.type || "error" }), " ", String(run.error.message || "").split("\n")[0]));
  const lineage = lineageView(run); // lineage.js
  if (lineage) head.append(lineage);
  const session = sessionLine(run); // sessions.js
  if (session) head.append(session);
  const scores = runScoresView(run); // scores.js
  if (scores) head.append(scores);

  let selected = null;
  const waterfall = waterfallView(run, (id) => select(id)); // waterfall.js
  const wf = waterfall.element;
  const detail = el("div", { class: "pane detail", id: "detail" },
    el("div", { class: "pane-h" }, "span"), el("div", { class: "body muted", text: "Select a span in the waterfall." }));

  async function select(id) {
    selected = id;
    waterfall.mark(id);
    waterfall.reveal(id);
    history.replaceState(null, "", location.pathname + location.search + "#span=" + id);
    const body = el("div", { class: "body muted", text: "Loading…" });
    clear(detail).append(el("div", { class: "pane-h" }, "span ", el("span", { class: "mono", text: id })), body);
    if (id === run.span_id) { clear(body).classList.remove("muted"); body.append(...runDetail(run)); return; }
    try {
      const span = await api(`/runs/${run.run_id}/spans/${id}`);
      if (selected !== id) return;
      clear(body).classList.remove("muted");
      const siblings = run.spans.filter((x) => span.step_key && x.step_key === span.step_key && x.parent_span_id === span.parent_span_id);
      body.append(...spanDetail(span, run, siblings, select));
    } catch (e) { body.textContent = "error: " + e.message; }
  }
  // Find a span by name, step key or id: Enter for the next match, Shift+Enter before.
  const found = el("span", { class: "muted", id: "wf-found" });
  const finder = el("input", { type: "search", class: "wf-find", id: "wf-find", placeholder: "find span: name, step key, id",
    onkeydown: (e) => {
      if (e.key !== "Enter") return;
      e.preventDefault();
      const hit = waterfall.find(finder.value, selected, e.shiftKey ? -1 : 1);
      found.textContent = !hit ? "" : hit.id ? `${hit.nth} of ${hit.count}` : "no match";
      if (hit && hit.id) select(hit.id);
    } });
  const legend = el("span", { class: "legend" }, ["step", "llm", "tool", "other"].map((k) =>
    el("span", { style: `--c:var(--k-${k})`, text: k })), el("span", { style: "--c:var(--fail)", text: "failed" }));
  root.append(head, el("div", { class: "split" },
    el("div", { class: "pane" }, el("div", { class: "pane-h" }, `${run.spans.length} spans · waterfall and tree`, finder, found, legend), wf),
    detail));
  // Up/down (or k/j) move the selection through the waterfall's spans.
  const onKey = (e) => {
    if (!document.body.contains(wf)) { document.removeEventListener("keydown", onKey); return; }
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement || e.ctrlKey || e.metaKey || e.altKey) return;
    const step = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1 }[e.key];
    if (!step) return;
    const next = waterfall.next(selected, step);
    if (next) { e.preventDefault(); select(next); }
  };
  document.addEventListener("keydown", onKey);
  const m = location.hash.match(/span=([0-9a-f]+)/);
  const wantKey = new URLSearchParams(location.search).get("step");
  const keyed = wantKey ? run.spans.filter((x) => x.step_key === wantKey) : [];
  if (m) select(m[1]);
  else if (keyed.length) select(keyed[keyed.length - 1].span_id); // the final attempt
  if (run.status === "running") {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => { if (document.body.contains(wf) && location.pathname === "/runs/" + runId) runPage(runId); }, 2000);
  }
}

function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of pairs) if (v !== null && v !== undefined && v !== "") dl.append(el("dt", { text: k }), el("dd", {}, v));
  return dl;
}

function runDetail(run) {
  return [el("div", { class: "title" }, badge("run"), el("b", { text: run.workflow }), status(run.status)),
    kv([["run id", run.run_id], ["trace id", run.trace_id], ["started", run.started_at], ["ended", run.ended_at], ["duration", fmt.ms(run.duration_ms)],
      ["tags", (run.tags || []).join(", ")]]),
    scoresSection(run, null),
    section("Input", jsonView(run.input), run.input),
    section("Output", jsonView(run.output), run.output),
    run.error ? section("Error", errorView(run.error, false)) : null,
    run.logs && run.logs.length ? section("Logs", logsView(run.logs)) : null].filter(Boolean);
}

function errorView(error, validation) {
  const box = el("div", { class: "errbox" }, el("span", { class: "et", text: error.type || "error" }),
    error.module ? el("span", { class: "muted", text: ` (${error.module})` }) : null,
    el("pre", { class: "block", style: "background:transparent;border:0;padding:4px 0;margin:0", text: String(error.message || "") }));
  const parts = [box];
  if (error.errors) parts.push(el("h3", { text: "validation errors" }), jsonView(error.errors));
  if (error.traceback) {
    parts.push(el("details", {}, el("summary", { class: "muted", text: "traceback" }), el("pre", { class: "block", text: error.traceback })));
  }
  return el("div", {}, parts);
}

function logsView(logs) {
  return el("table", { class: "grid logs" }, el("tbody", {}, logs.map((l) => el("tr", {},
    el("td", { class: "mono muted", text: (l.ts || "").slice(11, 23) }),
    el("td", { class: "lv-" + l.level, text: l.level }),
    el("td", { class: "muted", text: l.logger }),
    el("td", { class: "msgc", text: l.message + (l.exception ? "\n" + l.exception : "") })))));
}

function messagesView(messages) {
  return el("div", { class: "msgs" }, (messages || []).map((m) => {
    const content = typeof m.content === "string" ? m.content
      : Array.isArray(m.content) ? m.content.map((p) => (p && typeof p.text === "string" ? p.text : JSON.stringify(p))).join("\n")
      : m.content === null || m.content === undefined ? "" : JSON.stringify(m.content, null, 2);
    const extra = [];
    for (const c of m.tool_calls || []) {
      const fn = c.function || c;
      extra.push(el("div", { class: "content" }, el("span", { class: "badge tool", text: "tool call" }), " ",
        el("b", { text: fn.name || c.name || "" }), " ", el("span", { class: "muted", text: c.id || "" }), "\n",
        typeof fn.arguments === "string" ? fn.arguments : JSON.stringify(fn.arguments || c.arguments || {}, null, 2)));
    }
    const role = String(m.role || "message");
    return el("div", { class: "msg " + role.replace(/[^a-z]/g, ""), "data-role": role },
      el("div", { class: "role", text: role + (m.name ? " · " + m.name : "") + (m.tool_call_id ? " · " + m.tool_call_id : "") }),
      content ? el("div", { class: "content", text: content }) : null, extra);
  }));
}

function spanDetail(span, run, siblings, select) {
  const out = [];
  const title = el("div", { class: "title" }, badge(span.kind), el("b", { text: span.name }), status(span.status));
  if (span.step_key && siblings.length > 1) {
    title.append(el("span", { class: "pill retry", text: `attempt ${span.attempt} of ${siblings.length}` }));
    const nav = el("span", { class: "attempts" }, siblings.map((s) => el("button", {
      class: "copy", style: "margin-left:4px", disabled: s.span_id === span.span_id, "data-attempt": s.attempt,
      onclick: () => select(s.span_id), text: `#${s.attempt} ${s.status}` })));
    title.append(nav);
  }
  out.push(title);
  const startOffset = new Date(span.started_at).getTime() - new Date(run.started_at).getTime();
  const facts = [["span id", span.span_id], ["step key", span.step_key], ["started", `+${fmt.ms(startOffset)}  (${span.started_at})`],
    ["duration", fmt.ms(span.duration_ms)]];
  if (span.llm) {
    const l = span.llm;
    facts.push(["model", `${l.provider}:${l.model}` + (l.response_model && l.response_model !== l.model ? ` → ${l.response_model}` : "")],
      ["tokens", `${fmt.num(l.input_tokens)} in / ${fmt.num(l.output_tokens)} out` + (l.cached_input_tokens ? ` (${fmt.num(l.cached_input_tokens)} cached)` : "") + (l.reasoning_tokens ? ` (${fmt.num(l.reasoning_tokens)} reasoning)` : "")],
      ["cost", fmt.cost(l.cost_usd)], ["latency", fmt.ms(span.duration_ms)],
      ["first chunk", l.time_to_first_chunk_ms === null || l.time_to_first_chunk_ms === undefined ? null : fmt.ms(l.time_to_first_chunk_ms)],
      ["finish", l.finish_reason], ["incomplete", l.incomplete ? "yes (stream closed early)" : null]);
  }
  out.push(kv(facts));
  out.push(scoresSection(run, span.span_id)); // scores.js
  if (span.step_key) out.push(forkSection(run.run_id, span.step_key, span.input)); // lineage.js
  if (span.error) {
    const validation = !!span.error.validation;
    out.push(section(validation ? "Validation error" : "Error", errorView(span.error, validation)));
    if (validation) {
      const raw = typeof span.output === "string" ? span.output : JSON.stringify(span.output, null, 2);
      out.push(section("Raw output that failed validation", el("pre", { class: "block bad", id: "raw-output", text: raw }), raw));
    }
  }
  if (span.llm) {
    const l = span.llm;
    out.push(section("Prompt", messagesView(l.messages), l.messages));
    const resp = typeof l.response === "string" ? el("pre", { class: "block", id: "llm-response", text: l.response }) : jsonView(l.response);
    out.push(section("Response", resp, l.response));
    if (l.tool_calls && l.tool_calls.length) out.push(section("Tool calls", jsonView(l.tool_calls), l.tool_calls));
    out.push(section("Parameters", jsonView(l.params || {}), l.params));
  } else if (span.kind === "tool") {
    out.push(section("Request", jsonView(span.input), span.input));
    if (!span.error) out.push(section("Response", jsonView(span.output), span.output));
  } else {
    out.push(section("Input", jsonView(span.input), span.input));
    if (!(span.error && span.error.validation)) out.push(section("Output", jsonView(span.output), span.output));
  }
  if (span.logs && span.logs.length) out.push(section(`Logs (${span.logs.length})`, logsView(span.logs)));
  if (span.attributes && Object.keys(span.attributes).length) {
    const d = el("details", {}, el("summary", { class: "muted", text: "attributes" }), jsonView(span.attributes));
    out.push(el("div", { class: "section" }, d));
  }
  return out;
}

// --- diff page ------------------------------------------------------------------------

function changeRows(changes) {
  const frag = [];
  for (const c of changes) {
    const row = el("div", { class: "chg", "data-path": c.path },
      el("div", { class: "path", text: c.path }),
      el("div", { class: "a" + ("a" in c ? "" : " none"), text: "a" in c ? fmt.value(c.a) : "(absent)" }),
      el("div", { class: "b" + ("b" in c ? "" : " none"), text: "b" in c ? fmt.value(c.b) : "(absent)" }));
    frag.push(row);
    if (c.lines && c.lines.length) {
      const u = el("div", { class: "udiff" }, c.lines.map((line) => el("span", {
        class: line.startsWith("+") ? "l-add" : line.startsWith("-") ? "l-del" : "l-ctx", text: line })));
      frag.push(el("div", { class: "chg" }, el("div", { class: "path", text: "lines" }), u));
    }
  }
  return frag;
}

function delta(d) {
  if (!d || d.delta === null || d.delta === undefined) return "";
  const sign = d.delta > 0 ? "+" : "−";
  return el("span", { class: d.delta > 0 ? "delta-up" : "delta-down", text: ` ${sign}${fmt.ms(Math.abs(d.delta))}` });
}

async function diffPage() {
  const q = new URLSearchParams(location.search);
  const root = clear(main());
  const a = el("input", { name: "a", class: "w-m", placeholder: "run A id or prefix", value: q.get("a") || "" });
  const b = el("input", { name: "b", class: "w-m", placeholder: "run B id or prefix", value: q.get("b") || "" });
  const showSame = el("input", { type: "checkbox", checked: q.get("same") === "1" });
  root.append(el("div", { class: "bar-row" }, el("h1", { text: "Diff" })),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); go(`/diff?a=${encodeURIComponent(a.value.trim())}&b=${encodeURIComponent(b.value.trim())}`); } },
      el("label", {}, "run A", a), el("label", {}, "run B", b), el("button", { class: "primary", type: "submit" }, "Diff"),
      el("label", { style: "flex-direction:row;align-items:center;gap:4px" }, showSame, "show unchanged steps")));
  if (!q.get("a") || !q.get("b")) { root.append(el("p", { class: "muted", text: "Pick two runs (ids or unique prefixes), or tick two runs on the runs page." })); return; }
  let d;
  try { d = await api("/diff", { a: q.get("a"), b: q.get("b") }); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const s = d.summary;
  root.append(el("div", { class: "sumline", id: "diff-summary" },
    el("span", {}, "steps ", el("b", { text: s.steps })), el("span", {}, "changed ", el("b", { text: s.changed })),
    el("span", {}, "same ", el("b", { text: s.same })), el("span", {}, "only in A ", el("b", { text: s.only_in_a })),
    el("span", {}, "only in B ", el("b", { text: s.only_in_b }))));
  const grid = el("div", { class: "dgrid", id: "diff" });
  const sideHead = (side, label) => el("div", { class: "hd" }, label, " ", link("/runs/" + side.run_id, fmt.short(side.run_id), "mono"), " ",
    status(side.status), " ", el("span", { class: "muted", text: `${fmt.time(side.started_at)} · ${fmt.ms(side.duration_ms)}` }));
  grid.append(el("div", { class: "hd", text: "step" }), sideHead(d.a, "A"), sideHead(d.b, "B"));
  const runChanged = d.run.changes && d.run.changes.length;
  grid.append(el("div", { class: "key" + (runChanged ? " changed" : ""), text: "run" }),
    el("div", { class: runChanged ? "changed" : "" }, status(d.run.status.a), " ", fmt.ms(d.run.duration_ms.a)),
    el("div", { class: runChanged ? "changed" : "" }, status(d.run.status.b), " ", fmt.ms(d.run.duration_ms.b), delta(d.run.duration_ms)));
  if (runChanged) grid.append(el("div", { class: "span3" }, changeRows(d.run.changes)));
  for (const st of d.steps) {
    if (!st.changed && !st.only_in && !showSame.checked) continue;
    const cls = st.only_in ? " only" : st.changed ? " changed" : "";
    const side = (x) => st.only_in && st.only_in !== x ? el("span", { class: "muted", text: "did not run" })
      : el("span", {}, status(st.status[x]), " ", el("span", { class: st.attempts[x] > 1 ? "retry" : "muted", text: `${st.attempts[x]} attempt${st.attempts[x] === 1 ? "" : "s"}` }),
        " · ", fmt.ms(st.duration_ms[x]), x === "b" ? delta(st.duration_ms) : "");
    grid.append(el("div", { class: "key" + cls, "data-step": st.key }, badge(st.kind), " ", st.key),
      el("div", { class: cls.trim() }, side("a")), el("div", { class: cls.trim() }, side("b")));
    if (st.changes.length) grid.append(el("div", { class: "span3" }, changeRows(st.changes)));
  }
  showSame.addEventListener("change", () => { q.set("same", showSame.checked ? "1" : "0"); go("/diff?" + q); });
  root.append(grid);
}

// --- compare page ---------------------------------------------------------------------

async function comparePage(runId) {
  const q = new URLSearchParams(location.search);
  const root = clear(main());
  const n = el("input", { name: "baseline", class: "w-s", value: q.get("baseline") || "100" });
  root.append(el("div", { class: "bar-row" }, el("h1", {}, "Compare ", link("/runs/" + runId, fmt.short(runId), "mono"), " with its baseline")),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); go(`/compare/${runId}?baseline=${encodeURIComponent(n.value)}`); } },
      el("label", {}, "last N successful runs", n), el("button", { class: "primary", type: "submit" }, "Compare")));
  let c;
  try { c = await api(`/runs/${encodeURIComponent(runId)}/compare`, { baseline: q.get("baseline") || 100 }); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  root.append(el("div", { class: "sumline" }, el("span", {}, "workflow ", el("b", { text: c.workflow })), status(c.status),
    el("span", {}, "baseline runs ", el("b", { text: `${c.baseline_runs} of ${c.baseline}` })),
    el("span", {}, "findings ", el("b", { text: c.findings.length }))));
  if (!c.findings.length) { root.append(el("p", { class: "muted", text: "Nothing unusual against the baseline." })); return; }
  root.append(el("table", { class: "grid", id: "findings" }, el("thead", {}, el("tr", {}, ["score", "kind", "step", "detail", "figures"].map((h) => el("th", { text: h })))),
    el("tbody", {}, c.findings.map((f) => {
      const figures = Object.entries(f).filter(([k]) => !["step", "key", "kind", "detail", "score", "error", "path", "value"].includes(k))
        .map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(4) : fmt.value(v)}`).join("  ");
      return el("tr", {}, el("td", { class: "num" }, el("span", { class: "score" }, el("i", { class: f.score >= 0.75 ? "" : f.score >= 0.5 ? "mid" : "low", style: `width:${Math.round(f.score * 100)}%` })), " ", f.score.toFixed(2)),
        el("td", {}, el("span", { class: "pill", text: f.kind })), el("td", { class: "mono" }, f.key ? link(`/runs/${c.run_id}?step=${encodeURIComponent(f.key)}`, f.key) : f.step || "run"),
        el("td", { class: "wrap", text: f.detail }), el("td", { class: "wrap mono muted", text: figures }));
    }))));
}

// --- stats page -----------------------------------------------------------------------

async function statsPage() {
  const q = new URLSearchParams(location.search);
  const root = clear(main());
  const wfList = el("datalist", { id: "workflows" });
  const wf = el("input", { name: "workflow", list: "workflows", class: "w-m", placeholder: "all workflows", value: q.get("workflow") || "" });
  const last = el("input", { name: "last", class: "w-s", value: q.get("last") || "1000" });
  root.append(el("div", { class: "bar-row" }, el("h1", { text: "Step statistics" })),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
      const p = new URLSearchParams(); if (wf.value.trim()) p.set("workflow", wf.value.trim()); p.set("last", last.value); go("/stats?" + p); } },
      el("label", {}, "workflow", wf), el("label", {}, "last N runs", last), el("button", { class: "primary", type: "submit" }, "Show"), wfList));
  api("/workflows").then((ws) => ws.forEach((w) => wfList.append(el("option", { value: w })))).catch(() => {});
  let rows;
  const params = { workflow: q.get("workflow"), last: q.get("last") || 1000 };
  try { rows = await api("/stats", params); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const cols = [["step", (r) => el("span", {}, badge(r.kind), " ", r.step)], ["count", (r) => fmt.num(r.count)], ["attempts", (r) => fmt.num(r.attempts)],
    ["failure", (r) => el("span", { class: r.failure_rate > 0 ? "st failed" : "", text: fmt.pct(r.failure_rate) })],
    ["retry", (r) => el("span", { class: r.retry_rate > 0 ? "retry" : "", text: fmt.pct(r.retry_rate) })],
    ["p50", (r) => fmt.ms(r.p50_ms)], ["p95", (r) => fmt.ms(r.p95_ms)], ["p99", (r) => fmt.ms(r.p99_ms)], ["max", (r) => fmt.ms(r.max_ms)],
    ["total", (r) => fmt.ms(r.total_ms)], ["tokens", (r) => r.input_tokens === null ? "–" : fmt.num(r.input_tokens + (r.output_tokens || 0))],
    ["cost", (r) => fmt.cost(r.cost_usd)]];
  const stepSel = el("select", { name: "step" }, rows.map((r) => el("option", { value: r.step, text: r.step })));
  const field = el("input", { name: "field", class: "w-m", placeholder: "output field, e.g. category", value: q.get("field") || "" });
  const histCard = el("div", { class: "card", id: "histogram" });
  const distCard = el("div", { class: "card", id: "distribution" });
  const table = el("table", { class: "grid", id: "stats" }, el("thead", {}, el("tr", {}, cols.map(([h], i) => el("th", { class: i ? "num" : "", text: h })))),
    el("tbody", {}, rows.map((r) => el("tr", { class: "link", "data-step": r.step, onclick: () => { stepSel.value = r.step; showStep(); } },
      cols.map(([, f], i) => el("td", { class: i ? "num" : "" }, f(r)))))));
  if (!rows.length) { root.append(el("p", { class: "muted", text: "No steps recorded yet." })); return; }
  root.append(table, el("div", { class: "cards" }, histCard, distCard));

  async function showStep() {
    if (q.get("step") !== stepSel.value) { q.set("step", stepSel.value); history.replaceState(null, "", "/stats?" + q); }
    clear(histCard).append(el("h2", { text: `Duration of ${stepSel.value} (last ${params.last} attempts)` }));
    try {
      const h = await api("/histogram", { step: stepSel.value, workflow: params.workflow, last: params.last });
      const max = Math.max(1, ...h.bins.map((b) => b.count));
      histCard.append(el("div", { class: "hist" }, h.bins.map((b) => el("div", { class: "col", style: `height:${(b.count / max) * 100}%`,
        title: `${fmt.ms(b.from)} – ${fmt.ms(b.to)}: ${b.count}` }))),
        el("div", { class: "hist-axis" }, el("span", { text: h.bins.length ? fmt.ms(h.bins[0].from) : "" }), el("span", { class: "muted", text: `${h.count} attempts, log scale` }),
          el("span", { text: h.bins.length ? fmt.ms(h.bins[h.bins.length - 1].to) : "" })));
    } catch (e) { histCard.append(el("div", { class: "err", text: "error: " + e.message })); }
    showDist();
  }
  async function showDist() {
    clear(distCard).append(el("h2", { text: "Distribution of an output field" }),
      el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); q.set("field", field.value.trim()); history.replaceState(null, "", "/stats?" + q); showDist(); } },
        el("label", {}, "step", stepSel), el("label", {}, "field", field), el("button", { type: "submit" }, "Show")));
    if (!field.value.trim()) { distCard.append(el("p", { class: "muted", text: "Name a field of the step's output (input.x for its input)." })); return; }
    try {
      const d = await api("/distribution", { step: stepSel.value, field: field.value.trim(), workflow: params.workflow, last: params.last });
      const max = Math.max(1, ...d.values.map((v) => v.count));
      distCard.append(el("div", { class: "muted", style: "margin-bottom:6px",
        text: `${d.occurrences} occurrences in ${d.runs} runs; missing ${d.missing}` + (d.numeric ? ` · p50 ${d.numeric.p50} · p95 ${d.numeric.p95}` : "") }));
      for (const v of d.values.slice(0, 30)) distCard.append(el("div", { class: "hbar" },
        el("span", { class: "lbl", title: fmt.value(v.value), text: fmt.value(v.value) }),
        el("span", { class: "trk" }, el("span", { class: "fill", style: `width:${(v.count / max) * 100}%` })),
        el("span", { class: "cnt", text: `${v.count} · ${fmt.pct(v.share)}` })));
      if (d.values.length > 30) distCard.append(el("p", { class: "muted", text: `… ${d.values.length - 30} more values` }));
    } catch (e) { distCard.append(el("div", { class: "err", text: "error: " + e.message })); }
  }
  stepSel.addEventListener("change", showStep);
  if (q.get("step") && rows.some((r) => r.step === q.get("step"))) stepSel.value = q.get("step");
  await showStep();
}

// --- router ---------------------------------------------------------------------------

async function route() {
  clearTimeout(refreshTimer);
  const p = location.pathname;
  let m, nav = "runs";
  document.body.dataset.ready = "";
  try {
    if ((m = p.match(/^\/runs\/([^/]+)$/))) await runPage(decodeURIComponent(m[1]));
    else if ((m = p.match(/^\/compare\/([^/]+)$/))) await comparePage(decodeURIComponent(m[1]));
    else if (p === "/diff") { nav = "diff"; await diffPage(); }
    else if (p === "/stats") { nav = "stats"; await statsPage(); }
    else if ((m = p.match(/^\/sessions\/(.+)$/))) { nav = "sessions"; await sessionPage(decodeURIComponent(m[1])); }
    else if (p === "/sessions") { nav = "sessions"; await sessionsPage(); }
    else if (p === "/experiments") { nav = "experiments"; await experimentsPage(); } // experiments.js
    else if (p === "/experiments/compare") { nav = "experiments"; await compareExperimentsPage(); }
    else if ((m = p.match(/^\/experiments\/(.+)$/))) { nav = "experiments"; await experimentPage(decodeURIComponent(m[1])); }
    else await runsPage();
  } catch (e) { clear(main()).append(el("div", { class: "err", text: "error: " + e.message })); }
  document.querySelectorAll(".top nav a").forEach((a) => a.classList.toggle("on", a.dataset.nav === nav));
  document.body.dataset.ready = "1";
}

window.addEventListener("popstate", route);
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".top nav a, .brand").forEach((a) => a.addEventListener("click", (e) => {
    if (e.ctrlKey || e.metaKey) return; e.preventDefault(); go(a.getAttribute("href"));
  }));
  api("/config").then((c) => { document.getElementById("store").textContent = c.store; }).catch(() => {});
  route();
});
