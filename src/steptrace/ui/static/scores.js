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

// The "Scores" section of a span's detail (or of the run's); null when unscored.
function scoresSection(run, spanId) {
  const scores = scoresOf(run, spanId);
  return scores.length ? section(`Scores (${scores.length})`, scoreTable(scores, "span-scores")) : null;
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
