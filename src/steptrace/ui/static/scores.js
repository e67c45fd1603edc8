// steptrace UI: scores. A run's scores and its spans' (on the run page: a table under
// the header, a badge on each scored span in the tree, a section in the span's detail),
// and score columns in the runs table (picked from the names in the store, filled for
// the page with one request). Uses app.js's helpers (el, link, fmt, api, go, section).
"use strict";

const SCORE_COLUMNS_MAX = 20;

// A score's value as text: its category, true/false, or the number (to 3 decimals).
function scoreText(s) {
  if (s.kind === "categorical") return String(s.label);
  if (s.kind === "boolean") return s.value ? "true" : "false";
  if (s.value === null || s.value === undefined) return "–";
  const n = String(+Number(s.value).toFixed(3));
  return s.label ? `${n} (${s.label})` : n;
}

function scoreClass(s) {
  if (s.kind === "boolean") return s.value ? "sc-pass" : "sc-fail";
  return "";
}

// --- a run's scores -------------------------------------------------------------------

// The scores of one target: the run's own (spanId null) or one span's.
function scoresOf(run, spanId) {
  return (run.scores || []).filter((s) => (s.span_id || null) === spanId);
}

function scoreTable(scores, id) {
  return el("table", { class: "grid scores", id },
    el("thead", {}, el("tr", {}, ["name", "value", "source", "rationale", "updated"].map((h) => el("th", { text: h })))),
    el("tbody", {}, scores.map((s) => el("tr", { "data-score": s.name, "data-source": s.source },
      el("td", { class: "mono", text: s.name }),
      el("td", { class: "mono val " + scoreClass(s), text: scoreText(s) }),
      el("td", {}, s.source, s.judge_run_id ? el("span", {}, " · ", link("/runs/" + s.judge_run_id, "judge run " + fmt.short(s.judge_run_id), "judge-link mono")) : null),
      el("td", { class: "wrap rationale", text: s.rationale || "" }),
      el("td", { class: "muted", title: s.updated_at, text: fmt.time(s.updated_at) })))));
}

// The run's own scores under the run page's header; null when it has none.
function runScoresView(run) {
  const own = scoresOf(run, null);
  const onSpans = (run.scores || []).length - own.length;
  if (!own.length && !onSpans) return null;
  return el("div", { class: "run-scores", id: "run-scores" },
    el("div", { class: "muted" }, `scores (${own.length} on the run` + (onSpans ? `, ${onSpans} on its spans: select a span)` : ")")),
    own.length ? scoreTable(own, "run-score-table") : null);
}

// The badge of a scored span (or of the run's row) in the tree; null when unscored.
function scoreBadge(run, spanId) {
  const scores = scoresOf(run, spanId === run.span_id ? null : spanId);
  if (!scores.length) return null;
  const text = scores.length === 1 ? `${scores[0].name} ${scoreText(scores[0])}` : `${scores.length} scores`;
  return el("span", { class: "pill scored", "data-scores": scores.length, text,
    title: scores.map((s) => `${s.name} = ${scoreText(s)} (${s.source})`).join("\n") });
}

// The "Scores" section of a span's detail (or of the run's: spanId null): its scores,
// and "Score this", the command that gives one.
function scoresSection(run, spanId) {
  const scores = scoresOf(run, spanId);
  const target = spanId === null ? run.run_id : `${run.run_id}/${spanId}`;
  const form = scoreForm(target);
  const head = el("div", { class: "sh" }, el("h2", { text: `Scores (${scores.length})` }), form.toggle);
  return el("div", { class: "section", "data-section": "Scores" }, head,
    scores.length ? scoreTable(scores, spanId === null ? "run-detail-scores" : "span-scores") : null, form.panel);
}

// --- score this -----------------------------------------------------------------------

// The command and the Python call that give `target` a human score, or why there are
// none. The value reads as the command reads it: true/false, a number, else a category.
function scoreCommands(target, name, value, rationale) {
  if (!name.trim()) return { error: "give the score a name" };
  if (!value.trim()) return { error: "give a value: true/false, a number or a category" };
  const word = value.trim().toLowerCase();
  const literal = word === "true" || word === "false" ? (word === "true" ? "True" : "False")
    : /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/.test(word) ? String(Number(word)) : JSON.stringify(value);
  let command = `steptrace score ${shellWord(target)} ${shellWord(name)} ${shellWord(value)}`; // lineage.js
  let python = `st.score(${JSON.stringify(target)}, ${JSON.stringify(name)}, ${literal}`;
  if (rationale.trim()) {
    command += ` --rationale ${shellWord(rationale, true)}`;
    python += `, rationale=${JSON.stringify(rationale)}`;
  }
  return { command, python: python + ")" };
}

function scoreForm(target) {
  const name = el("input", { id: "score-name", class: "w-m", placeholder: "name, e.g. correct" });
  const value = el("input", { id: "score-value", class: "w-s", placeholder: "true / 0.8 / label" });
  const rationale = el("input", { id: "score-rationale", class: "w-where", placeholder: "why (optional)" });
  const error = el("div", { class: "err", id: "score-error" });
  const command = el("pre", { class: "block", id: "score-command" });
  const python = el("pre", { class: "block", id: "score-python" });
  const copy = el("button", { class: "copy", id: "score-copy", title: "copy the command" }, "copy");
  copy.addEventListener("click", () => copyText(command.textContent, copy));
  const update = () => {
    const made = scoreCommands(target, name.value, value.value, rationale.value);
    error.textContent = made.error || "";
    command.textContent = made.command || "";
    python.textContent = made.python || "";
    command.hidden = python.hidden = !!made.error;
    copy.disabled = !!made.error;
  };
  for (const input of [name, value, rationale]) input.addEventListener("input", update);
  update();
  const panel = el("div", { class: "fork score-form", id: "score-panel", hidden: true },
    el("div", { class: "filters" }, el("label", {}, "name", name), el("label", {}, "value", value), el("label", {}, "rationale", rationale)),
    error, el("div", { class: "sh" }, el("h3", { text: "Command" }), copy), command, el("h3", { text: "Python" }), python,
    el("p", { class: "muted", text: "Run it with this store configured (STEPTRACE_STORE or --store); scoring again with the same name replaces the value. The UI itself writes nothing." }));
  const toggle = el("button", { id: "score-toggle", title: "the command that scores this" }, "Score this");
  toggle.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    toggle.classList.toggle("on", !panel.hidden);
    if (!panel.hidden) name.focus();
  });
  return { toggle, panel };
}

// --- score columns of the runs table --------------------------------------------------

function scoreColumnNames(q) {
  return [...new Set(q.getAll("score").filter(Boolean))].slice(0, SCORE_COLUMNS_MAX);
}

function withScoreColumns(q, names) {
  const p = new URLSearchParams(q);
  p.delete("score");
  p.delete("offset");
  names.forEach((n) => p.append("score", n));
  return "/" + (p.toString() ? "?" + p : "");
}

// The header cells of the score columns, each with a button that removes it.
function scoreColumnHeads(q) {
  const names = scoreColumnNames(q);
  return names.map((n) => el("th", { class: "num score-col", "data-score": n, title: "the run's own score, else the mean of its spans'" },
    n, " ", el("button", { class: "copy drop-col", title: `remove the ${n} column`,
      onclick: () => go(withScoreColumns(q, names.filter((x) => x !== n))) }, "×")));
}

// A select of the score names in the store that are not columns yet.
function scoreColumnPicker(q) {
  const names = scoreColumnNames(q);
  const pick = el("select", { id: "score-column", title: "add a column of a score" },
    el("option", { value: "", text: "+ score column" }));
  pick.addEventListener("change", () => {
    if (pick.value) go(withScoreColumns(q, [...names, pick.value]));
  });
  api("/scores/names").then((all) => {
    for (const n of all) if (!names.includes(n)) pick.append(el("option", { value: n, text: n }));
    pick.disabled = all.length === 0 || names.length >= SCORE_COLUMNS_MAX;
    if (!all.length) pick.options[0].textContent = "no scores yet";
  }).catch(() => { pick.disabled = true; });
  return pick;
}

function scoreColumnCells(q) {
  return scoreColumnNames(q).map((n) => el("td", { class: "num score-cell", "data-score": n, text: "…" }));
}

function scoreCellText(cell) {
  if (!cell) return "–";
  if (cell.of === "spans" && cell.kind === "boolean") return fmt.pct(cell.value) + " pass";
  return scoreText(cell);
}

// One request for the page: the figure of each shown run and score column.
async function fillScoreColumns(tbody, runIds, q) {
  const names = scoreColumnNames(q);
  if (!names.length || !runIds.length) return;
  let cells;
  try { cells = await api("/scores/columns", { run: runIds, name: names }); }
  catch (e) { tbody.querySelectorAll("td.score-cell").forEach((td) => { td.textContent = "error"; td.title = e.message; }); return; }
  for (const tr of tbody.querySelectorAll("tr[data-run]")) {
    const row = cells[tr.dataset.run] || {};
    for (const td of tr.querySelectorAll("td.score-cell")) {
      const cell = row[td.dataset.score];
      td.textContent = scoreCellText(cell);
      td.classList.toggle("from-spans", !!cell && cell.of === "spans");
      td.title = !cell ? "no score" : cell.of === "run" ? `the run's own (${cell.source})`
        : `${cell.kind === "categorical" ? "most common of" : "mean of"} ${cell.count} span score${cell.count === 1 ? "" : "s"}`;
    }
  }
}
