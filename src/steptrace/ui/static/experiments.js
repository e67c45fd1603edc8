// steptrace UI: experiments. The list (each with its items and score means; tick two to
// compare them), one experiment's items, and two experiments side by side: the
// aggregates with B's change, then each dataset item as each ran it, the changed ones
// marked and filterable. Uses app.js's helpers (el, link, fmt, api, go, status) and
// scores.js's scoreText.
"use strict";

function meanText(m) {
  if (!m || m.mean === null || m.mean === undefined) return "–";
  return String(+Number(m.mean).toFixed(3));
}

function compact(value) {
  if (value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function expLink(name, text) {
  return link("/experiments/" + encodeURIComponent(name), text === undefined ? name : text, "mono");
}

// The scores an item got, one pill each (a failed evaluation says so, its message as title).
function itemScores(scores) {
  return el("span", { class: "item-scores" }, Object.entries(scores || {}).map(([name, s]) => {
    const kind = typeof s.value === "boolean" ? "boolean" : typeof s.value === "number" ? "numeric" : "categorical";
    const text = s.error ? "error" : scoreText({ kind, value: s.value, label: s.label });
    const cls = s.error ? "sc-fail" : s.value === true ? "sc-pass" : s.value === false ? "sc-fail" : "";
    return el("span", { class: "pill " + cls, "data-score": name, title: s.rationale || `${name} (${s.source})`, text: `${name} ${text}` });
  }));
}

// --- the list -------------------------------------------------------------------------

async function experimentsPage() {
  const root = clear(main());
  let list;
  try { list = await api("/experiments"); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const picked = [];
  const compareBtn = el("button", { id: "compare-picked", disabled: true, onclick: () => {
    // The older one is A, the baseline; the newer B.
    const [a, b] = list.filter((x) => picked.includes(x.name)).reverse().map((x) => x.name);
    go(`/experiments/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  } }, "Compare selected (0/2)");
  root.append(el("div", { class: "bar-row" }, el("h1", { text: "Experiments" }), compareBtn));
  if (!list.length) {
    root.append(el("p", { class: "muted", text: "No experiments yet: steptrace experiment NAME --dataset D runs one." }));
    return;
  }
  const names = [...new Set(list.flatMap((x) => Object.keys(x.scores)))];
  const tbody = el("tbody", {}, list.map((x) => {
    const box = el("input", { type: "checkbox", title: "pick for compare" });
    box.addEventListener("change", () => {
      const i = picked.indexOf(x.name);
      if (box.checked && i < 0) picked.push(x.name); else if (!box.checked && i >= 0) picked.splice(i, 1);
      while (picked.length > 2) picked.shift();
      tbody.querySelectorAll("input[type=checkbox]").forEach((b) => { b.checked = picked.includes(b.closest("tr").dataset.experiment); });
      compareBtn.disabled = picked.length !== 2; compareBtn.textContent = `Compare selected (${picked.length}/2)`;
    });
    return el("tr", { "data-experiment": x.name, "data-status": x.status },
      el("td", {}, box), el("td", {}, expLink(x.name)), el("td", { class: "mono", text: x.dataset }),
      el("td", { class: "mono clip", title: `${x.target} (${x.mode})`, text: x.target }),
      el("td", { class: "num", text: x.items }), el("td", { class: "num", text: x.succeeded }),
      el("td", { class: "num" }, el("span", { class: x.failed ? "st failed" : "", text: x.failed })),
      el("td", {}, status(x.status)),
      names.map((n) => el("td", { class: "num exp-score", "data-score": n,
        title: x.scores[n] ? `${x.scores[n].count} scored, ${x.scores[n].errors} failed evaluations` : null, text: meanText(x.scores[n]) })),
      el("td", { title: x.started_at }, fmt.time(x.started_at), " ", el("span", { class: "muted", text: fmt.ago(x.started_at) })));
  }));
  root.append(el("table", { class: "grid", id: "experiments" },
    el("thead", {}, el("tr", {}, ["", "name", "dataset", "target", "items", "succeeded", "failed", "status"].map((h, i) =>
      el("th", { class: i >= 4 && i <= 6 ? "num" : "", text: h })),
      names.map((n) => el("th", { class: "num score-col", "data-score": n, title: "the mean over the items it scored", text: n })),
      el("th", { text: "started" }))), tbody));
}

// --- one experiment -------------------------------------------------------------------

async function experimentPage(name) {
  const root = clear(main());
  let x;
  try { x = await api("/experiments/" + encodeURIComponent(name)); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const s = x.summary;
  root.append(el("div", { class: "runhead" }, el("h1", {}, "Experiment ", el("span", { class: "mono", text: x.name })), status(x.status),
    el("div", { class: "facts" },
      el("span", {}, "dataset ", el("b", { text: x.dataset })), el("span", {}, "target ", el("b", { text: `${x.target} (${x.mode})` })),
      el("span", {}, "items ", el("b", { text: s.items })), el("span", {}, "failed ", el("b", { text: s.failed })),
      Object.entries(s.scores).map(([n, m]) => el("span", { "data-score": n }, n + " ", el("b", { text: meanText(m) }))),
      el("span", {}, "cost ", el("b", { text: fmt.cost(s.cost_usd) })), el("span", {}, "p50 ", el("b", { text: fmt.ms(s.latency_ms.p50) })),
      el("span", {}, "started ", el("b", { text: fmt.time(x.started_at) })))));
  root.append(el("table", { class: "grid", id: "experiment-items" },
    el("thead", {}, el("tr", {}, ["item", "status", "output", "scores", "duration", "run"].map((h) => el("th", { text: h })))),
    el("tbody", {}, x.items.map((i) => el("tr", { "data-item": i.item_id },
      el("td", { class: "mono", text: fmt.short(i.item_id) }), el("td", {}, status(i.status)),
      el("td", { class: "mono clip out", title: compact(i.output), text: i.error ? `${i.error.type}: ${i.error.message}` : compact(i.output) }),
      el("td", {}, itemScores(i.scores)), el("td", { class: "num", text: fmt.ms(i.duration_ms) }),
      el("td", {}, i.run_id ? link(`/runs/${i.run_id}#span=${i.span_id}`, fmt.short(i.run_id), "mono") : "–"))))));
}

// --- two side by side -----------------------------------------------------------------

// B's change from A: the sign, and whether that is better (scores up; the rest down).
function change(a, b, higherIsBetter, format) {
  if (a === null || a === undefined || b === null || b === undefined || a === b) return el("td", { class: "num muted", text: "" });
  const d = b - a;
  const better = higherIsBetter ? d > 0 : d < 0;
  return el("td", { class: "num " + (better ? "delta-down" : "delta-up"), text: (d > 0 ? "+" : "−") + format(Math.abs(d)) });
}

function aggregateRows(c) {
  const A = c.aggregate.a, B = c.aggregate.b;
  const num = (v) => String(+Number(v).toFixed(3));
  const rows = [
    ["items", A.items, B.items, fmt.num, null],
    ["succeeded", A.succeeded, B.succeeded, fmt.num, true],
    ["failed", A.failed, B.failed, fmt.num, false],
    ["cost", A.cost_usd, B.cost_usd, fmt.cost, false],
    ["input tokens", A.input_tokens, B.input_tokens, fmt.num, false],
    ["output tokens", A.output_tokens, B.output_tokens, fmt.num, false],
    ["latency p50", A.latency_ms.p50, B.latency_ms.p50, fmt.ms, false],
    ["latency mean", A.latency_ms.mean, B.latency_ms.mean, fmt.ms, false],
  ];
  const out = [];
  for (const n of c.evaluators) {
    const sa = A.scores[n], sb = B.scores[n];
    const side = (m, v) => el("td", { class: "num", "data-value": m ? m.mean : null,
      title: m ? `${m.count} scored, ${m.errors} failed evaluations` : null }, meanText(m),
      m && m.errors ? el("span", { class: "sc-fail", text: ` (${m.errors} errors)` }) : null);
    out.push(el("tr", { "data-metric": "score:" + n, class: "score-row" }, el("td", {}, el("b", { class: "mono", text: n }), el("span", { class: "muted", text: " mean" })),
      side(sa), side(sb), change(sa && sa.mean, sb && sb.mean, true, num)));
  }
  for (const [label, a, b, format, up] of rows) {
    out.push(el("tr", { "data-metric": label },
      el("td", { text: label }),
      el("td", { class: "num", "data-value": a, text: format(a) }), el("td", { class: "num", "data-value": b, text: format(b) }),
      up === null ? el("td", {}) : change(a, b, up, format)));
  }
  return out;
}

function itemSide(side, other) {
  if (!side) return [el("td", { class: "muted", colspan: 2, text: "did not run" })];
  const text = side.error ? `${side.error.type}: ${side.error.message}` : compact(side.output);
  const differs = other && compact(other.output) !== compact(side.output);
  return [el("td", { class: "mono clip out" + (differs ? " differs" : "") + (side.status === "failed" ? " failed" : ""), title: text },
      side.run_id ? link(`/runs/${side.run_id}#span=${side.span_id}`, "↗", "run-link") : null, " ", text),
    el("td", {}, itemScores(side.scores))];
}

async function compareExperimentsPage() {
  const q = new URLSearchParams(location.search);
  const root = clear(main());
  const a = q.get("a") || "", b = q.get("b") || "";
  let list = [];
  try { list = await api("/experiments"); } catch (e) { /* the form still takes names */ }
  const pick = (name, value) => el("select", { name }, el("option", { value: "", text: "pick one" }),
    list.map((x) => el("option", { value: x.name, selected: x.name === value, text: `${x.name} (${x.dataset})` })));
  const selA = pick("a", a), selB = pick("b", b);
  root.append(el("div", { class: "bar-row" }, el("h1", { text: "Compare experiments" })),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
      go(`/experiments/compare?a=${encodeURIComponent(selA.value)}&b=${encodeURIComponent(selB.value)}`); } },
      el("label", {}, "A (baseline)", selA), el("label", {}, "B", selB), el("button", { class: "primary", type: "submit" }, "Compare"),
      a && b ? el("button", { type: "button", id: "swap", onclick: () => go(`/experiments/compare?a=${encodeURIComponent(b)}&b=${encodeURIComponent(a)}`) }, "Swap") : null));
  if (!a || !b) { root.append(el("p", { class: "muted", text: "Pick two experiments, or tick two on the experiments page." })); return; }
  let c;
  try { c = await api("/experiments/compare", { a, b }); }
  catch (e) { root.append(el("div", { class: "err", text: "error: " + e.message })); return; }
  const head = (x, label) => el("th", { class: "num" }, label + " ", expLink(x.name), el("div", { class: "muted", text: `${x.target} · ${x.dataset}` }));
  root.append(el("table", { class: "grid exp-aggregate", id: "exp-aggregate" },
    el("thead", {}, el("tr", {}, el("th", { text: "" }), head(c.a, "A"), head(c.b, "B"), el("th", { class: "num", text: "B − A" }))),
    el("tbody", {}, aggregateRows(c))));
  const changed = new Set(c.changed);
  const only = el("input", { type: "checkbox", id: "only-changed", checked: q.get("changed") === "1" });
  const tbody = el("tbody");
  const draw = () => {
    clear(tbody);
    for (const i of c.items) {
      if (only.checked && !changed.has(i.item_id)) continue;
      tbody.append(el("tr", { "data-item": i.item_id, class: changed.has(i.item_id) ? "changed" : "" },
        el("td", { class: "mono", title: i.item_id, text: fmt.short(i.item_id) }),
        el("td", { class: "mono clip", title: compact(i.input), text: compact(i.input) }),
        el("td", { class: "mono clip", title: compact(i.reference), text: compact(i.reference) }),
        itemSide(i.a, i.b), itemSide(i.b, i.a)));
    }
  };
  only.addEventListener("change", () => { q.set("changed", only.checked ? "1" : "0"); history.replaceState(null, "", "/experiments/compare?" + q); draw(); });
  draw();
  root.append(el("div", { class: "bar-row items-bar" }, el("h2", { text: `Items (${c.items.length})` }),
    el("label", { id: "changed-count" }, only, ` only the changed ones (${c.changed.length} of ${c.items.length})`)),
    el("table", { class: "grid exp-items", id: "exp-items" },
      el("thead", {}, el("tr", {}, ["item", "input", "reference", "A output", "A scores", "B output", "B scores"].map((h) => el("th", { text: h })))),
      tbody));
}
