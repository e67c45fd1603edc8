// steptrace UI: sessions (the conversations or user journeys runs are grouped in). The
// sessions page lists the most recently active; a session's page shows its runs as a
// conversation, oldest first: each run's input, then its output or error, linking to the
// run. Uses app.js's helpers (el, api, link, go, fmt, status, jsonView, messagesView,
// clear, main); every value reaches the DOM as text.
"use strict";

const SESSION_TURNS = 20;
// The fields of an input or output whose text is the turn's words, most likely first.
const SAYS_KEYS = ["message", "text", "content", "question", "query", "prompt", "input",
  "reply", "answer", "response", "output", "result"];

function sessionHref(id) { return "/sessions/" + encodeURIComponent(id); }

// The run page's line naming the run's session; null for a run in none.
function sessionLine(run) {
  if (!run.session_id) return null;
  return el("div", { class: "lin session-line", id: "session-line" }, "session ",
    link(sessionHref(run.session_id), run.session_id, "mono session-link"));
}

// A turn's input or output, readably: text as text; an object with a message-like text
// field as that text (its other fields one click away); a chat's messages as messages;
// anything else as JSON.
function turnBody(value) {
  if (typeof value === "string") return el("div", { class: "says", text: value });
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const messages = value.messages;
    if (Array.isArray(messages) && messages.length && messages.every((m) => m && typeof m === "object" && "role" in m)) {
      return messagesView(messages); // app.js
    }
    const key = SAYS_KEYS.find((k) => typeof value[k] === "string");
    if (key) {
      const others = Object.keys(value).length - 1;
      return el("div", {}, el("div", { class: "says", "data-field": key, text: value[key] }),
        others ? el("details", { class: "fields" }, el("summary", { class: "muted", text: `all ${others + 1} fields` }), jsonView(value)) : null);
    }
  }
  return jsonView(value);
}

function turnView(run) {
  const answer = run.error
    ? el("div", { class: "bubble err", "data-side": "error" }, el("div", { class: "who", text: "error" }),
      el("div", { class: "errbox" }, el("span", { class: "et", text: run.error.type || "error" }), " ",
        String(run.error.message || "").split("\n")[0]))
    : run.status === "running" || run.status === "interrupted"
      ? el("div", { class: "bubble out pending", "data-side": "output" }, el("div", { class: "who", text: "output" }),
        el("div", { class: "muted", text: run.status === "running" ? "running…" : "interrupted: no output" }))
      : el("div", { class: "bubble out", "data-side": "output" }, el("div", { class: "who", text: "output" }), turnBody(run.output));
  return el("div", { class: "turn", "data-run": run.run_id, "data-status": run.status },
    el("div", { class: "turn-h" }, link("/runs/" + run.run_id, fmt.short(run.run_id), "mono run-link"), " ",
      el("span", { text: run.workflow }), " ", status(run.status), " ",
      el("span", { class: "muted", title: run.started_at, text: `${fmt.time(run.started_at)} · ${fmt.ms(run.duration_ms)}` })),
    el("div", { class: "bubble in", "data-side": "input" }, el("div", { class: "who", text: "input" }), turnBody(run.input)),
    answer);
}

async function sessionPage(id) {
  const root = clear(main());
  let page;
  try { page = await api("/sessions/" + encodeURIComponent(id), { limit: SESSION_TURNS }); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const count = el("b", { text: page.total });
  root.append(el("div", { class: "bar-row" },
    el("h1", {}, "Session ", el("span", { class: "mono", id: "session-id", text: page.session_id })),
    el("span", { class: "muted" }, count, " runs · ", link("/?session=" + encodeURIComponent(page.session_id), "as a list of runs"))));
  const turns = el("div", { class: "conversation", id: "conversation" }, page.runs.map(turnView));
  const earlier = el("button", { id: "earlier-turns" });
  let loaded = page.runs.length;
  const label = (total) => { earlier.textContent = `Earlier runs (${total - loaded} more)`; earlier.hidden = loaded >= total; };
  label(page.total);
  earlier.addEventListener("click", async () => {
    earlier.disabled = true;
    try {
      const more = await api("/sessions/" + encodeURIComponent(id), { limit: SESSION_TURNS, offset: loaded });
      loaded += more.runs.length;
      count.textContent = more.total;
      turns.prepend(...more.runs.map(turnView));
      label(more.total);
    } catch (e) { earlier.textContent = "error: " + e.message; }
    earlier.disabled = false;
  });
  root.append(el("div", { class: "pager" }, earlier), turns);
}

async function sessionsPage() {
  const q = new URLSearchParams(location.search);
  const root = clear(main());
  const offset = Math.max(0, parseInt(q.get("offset") || "0", 10) || 0);
  const wfList = el("datalist", { id: "workflows" });
  const wf = el("input", { name: "workflow", list: "workflows", class: "w-m", placeholder: "any", value: q.get("workflow") || "" });
  const since = el("input", { name: "since", class: "w-s", placeholder: "24h / ISO", value: q.get("since") || "" });
  const open = el("input", { name: "session", class: "w-m", placeholder: "session id" });
  root.append(el("div", { class: "bar-row" }, el("h1", { text: "Sessions" })),
    el("form", { class: "filters", onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (wf.value.trim()) p.set("workflow", wf.value.trim());
      if (since.value.trim()) p.set("since", since.value.trim());
      go("/sessions" + (p.toString() ? "?" + p : ""));
    } }, el("label", {}, "workflow", wf), el("label", {}, "since", since),
    el("button", { class: "primary", type: "submit" }, "Filter"), wfList),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); if (open.value) go(sessionHref(open.value)); } },
      el("label", {}, "open a session", open), el("button", { type: "submit" }, "Open")));
  api("/workflows").then((ws) => ws.forEach((w) => wfList.append(el("option", { value: w })))).catch(() => {});
  let data;
  try { data = await api("/sessions", { workflow: q.get("workflow"), since: q.get("since"), limit: PAGE, offset }); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const statuses = (s) => el("span", {}, Object.entries(s.statuses).flatMap(([k, n], i) => [i ? ", " : null, el("span", { class: "st " + k, text: `${n} ${k}` })]));
  const rows = data.sessions.map((s) => el("tr", { class: "link", "data-session": s.session_id, onclick: () => go(sessionHref(s.session_id)) },
    el("td", { class: "mono" }, link(sessionHref(s.session_id), s.session_id)),
    el("td", { class: "num", text: fmt.num(s.runs) }),
    el("td", { title: s.first_started_at, text: fmt.time(s.first_started_at) }),
    el("td", { title: s.last_started_at }, fmt.time(s.last_started_at), " ", el("span", { class: "muted", text: fmt.ago(s.last_started_at) })),
    el("td", {}, statuses(s)), el("td", { text: s.workflows.join(", ") })));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No sessions: runs join one with st.run(..., session_id=…) or @st.workflow(session=…)." })));
  const pageAt = (at) => { q.set("offset", String(at)); go("/sessions?" + q); };
  root.append(el("table", { class: "grid sessions", id: "sessions" },
    el("thead", {}, el("tr", {}, ["session", "runs", "first run", "last run", "statuses", "workflows"].map((h, i) => el("th", { class: i === 1 ? "num" : "", text: h })))),
    el("tbody", {}, rows)),
  el("div", { class: "pager" }, el("button", { disabled: offset === 0, onclick: () => pageAt(Math.max(0, offset - PAGE)) }, "← Newer"),
    el("button", { disabled: !data.has_more, onclick: () => pageAt(offset + PAGE) }, "Older →")));
}
