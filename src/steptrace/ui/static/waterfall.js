// steptrace UI: the run page's waterfall and tree. A run's spans become a tree (the
// retries of one step call grouped), flattened into rows; only the rows in view and a
// margin around them are in the DOM, so a run of thousands of spans draws about as
// fast as one of tens. Every row has the same height, so where a row is follows from
// its index, without measuring anything. Uses app.js's helpers (el, badge, fmt) and
// scores.js's scoreBadge.
"use strict";

const WF_ROW_PX = 24; // .wf-row's height in app.css, its border included
const WF_AXIS_PX = 18; // .axis's height: the sticky time axis above the rows
const WF_MARGIN_ROWS = 40; // drawn above and below the rows in view

function buildTree(run) {
  // Nodes by span id; retries of one step call (same step_key under the same parent)
  // are grouped under a synthetic "attempts" node so they read as one call.
  const nodes = new Map();
  const root = { id: run.span_id, kind: "run", name: run.workflow, status: run.status, start: run.started_at,
    end: run.ended_at, duration_ms: run.duration_ms, children: [], parent: null };
  nodes.set(run.span_id, root);
  for (const s of run.spans) nodes.set(s.span_id, { id: s.span_id, span: s, kind: s.kind, name: s.name, status: s.status,
    start: s.started_at, end: s.ended_at, duration_ms: s.duration_ms, children: [], parent: null });
  for (const s of run.spans) {
    const parent = nodes.get(s.parent_span_id) || root;
    parent.children.push(nodes.get(s.span_id));
  }
  for (const node of nodes.values()) {
    const byKey = new Map();
    for (const c of node.children) if (c.span && c.span.step_key) {
      if (!byKey.has(c.span.step_key)) byKey.set(c.span.step_key, []);
      byKey.get(c.span.step_key).push(c);
    }
    const grouped = [];
    const done = new Set();
    for (const c of node.children) {
      const key = c.span && c.span.step_key;
      const sibs = key ? byKey.get(key) : null;
      if (sibs && sibs.length > 1) {
        if (done.has(key)) continue;
        done.add(key);
        const last = sibs[sibs.length - 1];
        const group = { id: "group:" + key + ":" + node.id, group: true, kind: last.kind, name: last.name,
          status: last.status, attempts: sibs.length, start: sibs[0].start, end: last.end,
          duration_ms: (new Date(last.end || last.start) - new Date(sibs[0].start)), children: sibs, parent: node };
        for (const s of sibs) s.parent = group;
        grouped.push(group);
      } else { c.parent = node; grouped.push(c); }
    }
    node.children = grouped;
  }
  return { root, nodes };
}

function flatten(node, depth, out, collapsed) {
  node.depth = depth;
  out.push(node);
  if (!collapsed.has(node.id)) for (const c of node.children) flatten(c, depth + 1, out, collapsed);
  return out;
}

// The waterfall of `run`; a click on a span's row calls onPick(spanId). Returns its
// element and what the page needs to move the selection: mark(id) highlights a row,
// reveal(id) scrolls it into view (expanding collapsed rows above it), next(id, step)
// is the span `step` rows below (or above) it, find(text, id, step) the next match.
// The browser's own find (Ctrl+F) sees only the rows drawn: find is the way to a span
// anywhere in the run.
function waterfallView(run, onPick) {
  const { root: tree, nodes } = buildTree(run);
  const collapsed = new Set();
  const t0 = Date.parse(run.started_at);
  let lastEnd = t0;
  for (const s of run.spans) lastEnd = Math.max(lastEnd, Date.parse(s.ended_at || s.started_at));
  const total = Math.max(1, (run.ended_at ? Date.parse(run.ended_at) : lastEnd) - t0, lastEnd - t0);

  const ticks = el("div", { class: "ticks" });
  for (let i = 0; i < 4; i++) ticks.append(el("span", { class: "tick", style: `left:${i * 25}%`, text: fmt.ms(total * i / 4) }));
  const axis = el("div", { class: "axis" }, el("div", { style: "padding-left:8px", text: "span" }), ticks, el("div", { style: "text-align:right;padding-right:8px", text: "duration" }));
  const win = el("div", { class: "wf-win" });
  const body = el("div", { class: "wf-body" }, win);
  const wf = el("div", { class: "wf", id: "waterfall" }, axis, body);

  let rows = []; // the flattened tree, in the order drawn
  let index = new Map(); // node id -> its index in rows
  const drawn = new Map(); // node id -> its row element, built once and kept
  let selected = null;
  let from = 0, to = 0; // rows[from, to) are in the DOM

  function row(node) {
    const startMs = Date.parse(node.start) - t0;
    const dur = node.duration_ms === null || node.duration_ms === undefined
      ? Math.max(0, (node.end ? Date.parse(node.end) : t0 + total) - Date.parse(node.start)) : node.duration_ms;
    const left = Math.max(0, Math.min(100, (startMs / total) * 100));
    const width = Math.max(0.15, Math.min(100 - left, (dur / total) * 100));
    const hasKids = node.children.length > 0;
    const tw = el("span", { class: "tw", text: hasKids ? (collapsed.has(node.id) ? "▸" : "▾") : "" });
    if (hasKids) tw.addEventListener("click", (e) => { e.stopPropagation(); toggle(node); });
    const s = node.span;
    const nameBits = [tw, badge(node.group ? "retry" : node.kind, node.group ? "warn" : node.kind),
      el("span", { class: "nm" + (node.status === "failed" ? " failed" : ""), text: node.name })];
    if (node.group) nameBits.push(el("span", { class: "pill retry", text: `${node.attempts} attempts` }));
    if (s && s.attempt && s.step_key) nameBits.push(el("span", { class: "pill", title: "attempt", text: "#" + s.attempt }));
    if (s && s.error) nameBits.push(el("span", { class: "badge fail", title: s.error.message, text: s.error.validation ? "invalid" : s.error.type || "error" }));
    if (s && s.llm && !node.name.includes(s.llm.model)) nameBits.push(el("span", { class: "muted mono", text: s.llm.model }));
    if (!node.group) nameBits.push(scoreBadge(run, node.id)); // scores.js
    const bar = el("div", { class: `wf-bar ${node.group ? "grp" : node.kind} ${node.status === "failed" && !node.group ? "failed" : ""}`,
      style: `left:${left}%;width:${width}%`, title: `${node.name} · ${fmt.ms(dur)}` });
    const r = el("div", { class: "wf-row" + (node.group ? " group" : "") + (selected === node.id ? " sel" : ""),
      "data-span": node.group ? null : node.id, "data-kind": node.kind, "data-name": node.name, "data-status": node.status,
      "data-attempt": s && s.attempt ? s.attempt : null },
      el("div", { class: "wf-name", style: `padding-left:${4 + node.depth * 14}px` }, nameBits),
      el("div", { class: "wf-track" }, bar),
      el("div", { class: "wf-dur", text: fmt.ms(dur) }));
    if (!node.group) r.addEventListener("click", () => onPick(node.id));
    return r;
  }

  function relist() {
    rows = flatten(tree, 0, [], collapsed);
    index = new Map(rows.map((n, i) => [n.id, i]));
    body.style.height = rows.length * WF_ROW_PX + "px";
  }

  // Draws the rows in view and the margin around them, when the view has left the
  // rows drawn (or always, with force). `view` is [top, height] of the rows' area in
  // px; read from the waterfall when not given (its layout is then up to date).
  function draw(force, view) {
    const [top, height] = view || [Math.max(0, wf.scrollTop - WF_AXIS_PX), wf.clientHeight];
    const first = Math.floor(top / WF_ROW_PX);
    const last = Math.min(rows.length, Math.ceil((top + height) / WF_ROW_PX));
    if (!force && first >= from && last <= to) return;
    from = Math.max(0, first - WF_MARGIN_ROWS);
    to = Math.min(rows.length, last + WF_MARGIN_ROWS);
    const frag = document.createDocumentFragment();
    for (let i = from; i < to; i++) {
      const node = rows[i];
      let r = drawn.get(node.id);
      if (!r) { r = row(node); drawn.set(node.id, r); }
      frag.append(r);
    }
    win.style.top = from * WF_ROW_PX + "px";
    win.replaceChildren(frag);
  }

  function toggle(node) {
    if (collapsed.has(node.id)) collapsed.delete(node.id); else collapsed.add(node.id);
    drawn.delete(node.id); // its ▸/▾ changed
    relist();
    draw(true);
  }

  function mark(id) {
    const old = selected !== null && drawn.get(selected);
    if (old) old.classList.remove("sel");
    selected = id;
    const now = drawn.get(id);
    if (now) now.classList.add("sel");
  }

  function reveal(id) {
    const node = nodes.get(id);
    if (!node) return;
    let opened = false;
    for (let p = node.parent; p; p = p.parent) if (collapsed.delete(p.id)) { drawn.delete(p.id); opened = true; }
    if (opened) relist();
    const i = index.get(id);
    const height = wf.clientHeight;
    const rowTop = i * WF_ROW_PX; // in the rows' area, below the axis
    if (rowTop < wf.scrollTop || rowTop + WF_ROW_PX > wf.scrollTop + height - WF_AXIS_PX) {
      wf.scrollTop = Math.max(0, rowTop - Math.floor((height - WF_AXIS_PX) / 2));
    }
    draw(opened);
    const r = drawn.get(id);
    if (r) r.scrollIntoView({ block: "nearest" }); // the page too, when the pane is partly out of view
  }

  function next(id, step) {
    const spans = rows.filter((n) => !n.group);
    const at = spans.findIndex((n) => n.id === id);
    const target = spans[Math.max(0, Math.min(spans.length - 1, at + step))];
    return target ? target.id : null;
  }

  // The span after `id` (before it, with step -1) in tree order, rows collapsed away
  // included, whose name or step key holds `text` (any case) or whose id starts with
  // it; the search wraps around. Null, or { id, nth, count } among the matches.
  function find(text, id, step) {
    const needle = text.trim().toLowerCase();
    if (!needle) return null;
    const order = flatten(tree, 0, [], new Set()).filter((n) => !n.group);
    const hits = [];
    for (let i = 0; i < order.length; i++) {
      const n = order[i];
      const key = n.span && n.span.step_key ? n.span.step_key.toLowerCase() : "";
      if (n.name.toLowerCase().includes(needle) || key.includes(needle) || n.id.startsWith(needle)) hits.push(i);
    }
    if (!hits.length) return { id: null, nth: 0, count: 0 };
    const at = order.findIndex((n) => n.id === id);
    let k = step > 0 ? hits.findIndex((i) => i > at) : hits.findLastIndex((i) => i < (at < 0 ? order.length : at));
    if (k < 0) k = step > 0 ? 0 : hits.length - 1;
    return { id: order[hits[k]].id, nth: k + 1, count: hits.length };
  }

  relist();
  // The first rows are drawn before the waterfall is laid out: it starts at the top,
  // and its max-height (app.css) is below the window's height.
  draw(true, [0, window.innerHeight]);
  wf.addEventListener("scroll", () => draw(false), { passive: true });
  const resized = new ResizeObserver(() => { // a taller window shows more rows
    if (wf.isConnected) draw(false); else resized.disconnect(); // the page was left
  });
  resized.observe(wf);
  return { element: wf, mark, reveal, next, find };
}
